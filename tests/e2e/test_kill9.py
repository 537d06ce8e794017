"""kill -9 at random points of real runs, then resume: the index is always sound and little is fetched twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from mirror_engine.demo import build_channel
from tests.channel_server import ChannelServer
from tests.e2e.conftest import start_cli, wait_for
from tests.helpers import assert_index_sound, make_config, names

COMMIT_SLACK = 0.5  # a body received just before the kill may not have been renamed and journaled yet


def _package_bytes(docs: dict[str, dict[str, Any]]) -> int:
    return sum(
        r["size"] for doc in docs.values() for section in ("packages", "packages.conda") for r in doc[section].values()
    )


def _check_published(tmp_path: Path, docs: dict[str, dict[str, Any]]) -> None:
    config = make_config(tmp_path, channels=[str(tmp_path / "upstream")])
    for subdir in docs:
        if (config.channel_dir / subdir / "repodata.json").exists():
            assert_index_sound(config, subdir, docs[subdir])


def _children(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _downloading_from(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP connection to 127.0.0.1:`port` (from /proc)."""
    try:
        sockets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:
        return False
    inodes = {link[8:-1] for link in sockets if link.startswith("socket:[")}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
            return True
    return False


async def _killed_run(tmp_path: Path, server: ChannelServer, rng: random.Random, docs: Any) -> int:
    """Start a run, SIGKILL it at a random moment after its first package request; return the bytes in flight."""
    already = len(server.served)
    process = await start_cli("run", "c.yaml", "-q", cwd=tmp_path)
    await wait_for(lambda: len(server.served) > already or process.returncode is not None)
    await asyncio.sleep(rng.uniform(0.1, 1.0))
    workers = _children(process.pid)
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    killed_at = asyncio.get_running_loop().time()
    await process.wait()
    # The transfer workers see their pipe close and leave: no orphan keeps downloading into the mirror.
    await wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), limit=10)
    open_at_kill = {s.path for s in server.served[already:] if s.ended is None or s.ended >= killed_at - COMMIT_SLACK}
    return sum(_size_of(docs, path) for path in open_at_kill)


async def _kill_and_resume(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    docs = build_channel(tmp_path / "upstream")
    async with ChannelServer(tmp_path / "upstream", drip=(16 * 1024, 0.05)) as server:
        (tmp_path / "c.yaml").write_text(f"channels: [{server.url}]\nconcurrency: 4\nretry_backoff: 0.05\n")
        in_flight_at_kills = 0
        for _ in range(kills):
            in_flight_at_kills += await _killed_run(tmp_path, server, rng, docs)
            _check_published(tmp_path, docs)
        final = await start_cli("run", "c.yaml", "-q", cwd=tmp_path)
        stdout, stderr = await asyncio.wait_for(final.communicate(), 60)
        assert final.returncode == 0, (stdout, stderr)
        await asyncio.sleep(0.1)  # let the server close its records of the last bodies
    config = make_config(tmp_path, channels=[str(tmp_path / "upstream")])
    for subdir, doc in docs.items():
        assert names(assert_index_sound(config, subdir, doc)) == names(doc)
    fetched = sum(s.sent for s in server.served)
    assert fetched - _package_bytes(docs) <= in_flight_at_kills


def _size_of(docs: dict[str, dict[str, Any]], path: str) -> int:
    subdir, filename = path.strip("/").split("/")
    doc = docs[subdir]
    return int((doc["packages"].get(filename) or doc["packages.conda"][filename])["size"])


async def test_kill_9_ten_times_then_resume(tmp_path: Path) -> None:
    await _kill_and_resume(tmp_path, kills=10, seed=20261124)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
async def test_kill_9_many_times_then_resume(tmp_path: Path, seed: int) -> None:
    await _kill_and_resume(tmp_path, kills=40, seed=seed)


async def test_a_killed_transfer_worker_stops_the_run_in_one_line_and_the_next_run_finishes(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "upstream")
    async with ChannelServer(tmp_path / "upstream", drip=(16 * 1024, 0.05)) as server:
        (tmp_path / "c.yaml").write_text(f"channels: [{server.url}]\nprocesses: 2\nconcurrency: 2\n")
        process = await start_cli("run", "c.yaml", "-q", cwd=tmp_path)
        port = int(server.url.rstrip("/").rsplit(":", 1)[1])
        # Until the workers are ready, files are fetched by the main process: wait for a worker's download.
        # The victim is the worker seen downloading, in the same look: a second look may come after its last file.
        seen: list[int] = []

        def worker_downloading() -> bool:
            seen[:] = [pid for pid in _children(process.pid) if _downloading_from(pid, port)]
            return bool(seen)

        await wait_for(worker_downloading)
        os.kill(seen[0], signal.SIGKILL)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1, stderr
        lines = [line for line in stderr.decode().splitlines() if line.strip()]
        assert lines[-1].startswith("mirror-engine: error: transfer worker ") and "exited" in lines[-1], lines
        assert "Traceback" not in stderr.decode()
        _check_published(tmp_path, docs)
        server.drip = None
        again = await start_cli("run", "c.yaml", "-q", cwd=tmp_path)
        _, stderr = await asyncio.wait_for(again.communicate(), 60)
        assert again.returncode == 0, stderr
    config = make_config(tmp_path, channels=[str(tmp_path / "upstream")])
    for subdir, doc in docs.items():
        assert names(assert_index_sound(config, subdir, doc)) == names(doc)
