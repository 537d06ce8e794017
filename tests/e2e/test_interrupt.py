"""Stopping a run: SIGINT/SIGTERM stop cleanly with a summary; a second Ctrl-C exits at once; the lock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from mirror_engine.demo import DEMO_PACKAGES, DemoPackage, build_channel
from mirror_engine.lock import RunLock
from tests.channel_server import ChannelServer
from tests.e2e.conftest import start_cli, wait_for


async def _stalled_run(tmp_path: Path, server: ChannelServer) -> asyncio.subprocess.Process:
    """A run whose one big package stalls after 1.5 MB, so that its temporary file exists."""
    big = DemoPackage("big", "1.0", "0", subdir="noarch", payload_size=3_000_000)
    build_channel(tmp_path / "upstream", [*DEMO_PACKAGES, big])
    server.faults["/noarch/big-1.0-0.conda"] = ["stall"]
    (tmp_path / "c.yaml").write_text(f"channels: [{server.url}]\nplatforms: noarch\nprocesses: 2\n")
    process = await start_cli("run", "c.yaml", cwd=tmp_path)
    await wait_for(lambda: len(list((tmp_path / "mirror").rglob("*.part"))) == 1)
    return process


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_stops_cleanly_with_a_summary(tmp_path: Path, signum: signal.Signals, code: int) -> None:
    async with ChannelServer(tmp_path / "upstream", stall_seconds=60) as server:
        process = await _stalled_run(tmp_path, server)
        process.send_signal(signum)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == code, stderr
    assert f"interrupted by {signum.name}: run the same command again to resume" in stdout.decode()
    assert "Traceback" not in stderr.decode()
    mirror = tmp_path / "mirror"
    assert not list(mirror.rglob("*.part")), stderr.decode()
    assert not (mirror / "anaconda" / "noarch" / "repodata.json").exists()
    with sqlite3.connect(mirror / ".mirror_engine" / "journal.sqlite") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_a_second_ctrl_c_exits_at_once_where_the_first_waits_for_its_workers(tmp_path: Path) -> None:
    async with ChannelServer(tmp_path / "upstream", stall_seconds=60) as server:
        process = await _stalled_run(tmp_path, server)
        await wait_for(lambda: len(children(process.pid)) == 2)  # the two transfer workers (processes: 2)
        workers = children(process.pid)
        for worker in workers:
            os.kill(worker, signal.SIGSTOP)  # a worker that does not answer: the clean stop waits for it
        try:
            process.send_signal(signal.SIGINT)
            await asyncio.sleep(1.0)
            assert process.returncode is None, "the first SIGINT's clean stop gives its workers seconds to leave"
            process.send_signal(signal.SIGINT)
            await wait_for(lambda: process.returncode is not None)  # while its workers are still frozen
        finally:
            for worker in workers:
                with contextlib.suppress(ProcessLookupError):  # killed by the clean stop, if it got that far
                    os.kill(worker, signal.SIGCONT)  # their pipe is closed: they leave on their own
        stdout, stderr = await asyncio.wait_for(process.communicate(), 15)  # the workers held its pipes too
    assert process.returncode == 130
    lines = stderr.decode().splitlines()
    assert "Traceback" not in stderr.decode()
    assert lines[-1] == "mirror-engine: interrupted; run the same command again to resume", lines
    assert "interrupted by SIGINT" not in stdout.decode()  # the clean stop's summary never came
    with sqlite3.connect(tmp_path / "mirror" / ".mirror_engine" / "journal.sqlite") as db:
        assert db.execute("SELECT status FROM runs").fetchall() != [("interrupted",)]


async def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\n")
    lock = RunLock(tmp_path / "mirror" / ".mirror_engine" / "anaconda.lock")
    lock.acquire("test")
    try:
        process = await start_cli("run", "c.yaml", cwd=tmp_path)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        lock.release()
    assert process.returncode == 2
    line = stderr.decode().strip().splitlines()[-1]
    assert line.startswith(f"mirror-engine: error: {tmp_path / 'mirror' / 'anaconda'}: another mirror_engine run")
    assert "pid " in line and "started 20" in line


async def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\n")
    stale = tmp_path / "mirror" / ".mirror_engine" / "anaconda.lock"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"pid": 999999, "started": 0}')  # no process holds its flock
    process = await start_cli("run", "c.yaml", cwd=tmp_path)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr
