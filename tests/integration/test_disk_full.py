"""A destination that runs out of space, for real: a size-limited tmpfs the test mounts (root only).

What must hold: the run stops with a one-line DiskFull, no temporary file is left, the index published
before stays as it was, and once there is space again the next run finishes what is left.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import random
import re
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror_engine.config import MirrorConfig
from mirror_engine.demo import DEMO_PACKAGES, DemoPackage, build_channel
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.errors import DestinationError, DiskFull, MirrorError
from mirror_engine.journal import SCHEMA, SCHEMA_VERSION, Journal
from mirror_engine.lock import RunLock
from mirror_engine.progress import NullReporter
from mirror_engine.summary import RunSummary
from tests.channel_server import ChannelServer
from tests.helpers import assert_index_sound, leftovers, make_config, mirror, names

HUGE = DemoPackage("huge", "1", "0", payload_size=4_000_000)  # random bytes: 4 MB compressed too
INDEX_FILES = ("repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst")
HANG_GUARD = 30  # seconds


class SmallDisk:
    """A tmpfs of a given size at `path`; `fill()` takes every free byte, `unfill()` gives them back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    def mount(self, size: str) -> None:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        self.path.mkdir(exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or f'mount exited {done.returncode}'}")
        self.mounted = True

    def remount(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True)

    def fill(self) -> None:
        """Write zeros until the file system refuses even one more byte."""
        with (self.path / "filler").open("ab", buffering=0) as filler:
            for chunk in (bytes(1 << 16), b"\0"):  # big writes first, then the last page byte by byte
                try:
                    while True:
                        filler.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc

    def unfill(self) -> None:
        (self.path / "filler").unlink()

    def unmount(self) -> None:
        if self.mounted and subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], check=True)  # still open somewhere: detach it
        self.mounted = False


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "disk")
    try:
        yield small
    finally:
        small.unmount()


class FillsUp(LocalDestination):
    """A local destination whose disk another process fills right after the `after`-th package lands."""

    def __init__(self, channel_dir: Path, disk: SmallDisk, after: int) -> None:
        super().__init__(channel_dir)
        self.disk = disk
        self.after = after
        self.committed = 0

    async def commit(self, temp: Path, subdir: str, filename: str) -> None:
        await super().commit(temp, subdir, filename)
        self.committed += 1
        if self.committed == self.after:
            self.disk.fill()

    def commit_path(self, subdir: str, filename: str) -> Path | None:
        return None  # `commit` above does more than a rename: a worker must not do it instead


def index_files(config: MirrorConfig) -> dict[str, bytes]:
    return {
        f"{subdir}/{name}": (config.channel_dir / subdir / name).read_bytes()
        for subdir in ("noarch", "linux-64")
        for name in INDEX_FILES
        if (config.channel_dir / subdir / name).exists()
    }


def set_aside_journals(config: MirrorConfig) -> list[str]:
    return sorted(path.name for path in config.state_dir.glob("*.bad"))


def leaks() -> list[str]:
    """What a finished run left behind: a RunLock still held, a Journal still open (its connection or its
    thread), a task done with an exception nobody took (its __del__ would log it later, in another test)."""
    found: list[str] = []
    for leaked in gc.get_objects():  # before collecting: garbage not yet collected is listed too
        kind = type(leaked)  # not isinstance: on a dead weakref.proxy among the garbage it raises ReferenceError
        if issubclass(kind, RunLock) and leaked._file is not None:
            found.append(f"RunLock {leaked.path} still held")
        elif issubclass(kind, Journal) and (leaked._db is not None or not leaked._executor._shutdown):
            found.append(f"Journal {leaked.path} still open")
        elif issubclass(kind, asyncio.Task) and leaked.done() and leaked._log_traceback:
            found.append(
                f"{leaked.get_name()} ({leaked.get_coro()}): exception never retrieved: {leaked.exception()!r}"
            )
    return found


@pytest.fixture(autouse=True)
def nothing_leaks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every run here fails on a full disk: it must still release its lock, close its journal and take
    the exceptions of its tasks."""
    yield
    left = leaks()
    gc.collect()  # what the run dropped unretrieved logs now, while this test still captures the log
    unretrieved = [record.getMessage() for record in caplog.records if "never retrieved" in record.getMessage()]
    assert not left and not unretrieved, [*left, *unretrieved]


async def test_a_package_that_does_not_fit_stops_the_run_and_the_next_run_resumes(
    tmp_path: Path, disk: SmallDisk
) -> None:
    root = tmp_path / "upstream"
    build_channel(root)
    disk.mount("6m")  # the demo channel (3.9 MB) fits with its indexes and journal; 4 MB more does not
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], mirror_dir=str(disk.path / "mirror"))
        assert (await mirror(config)).exit_code == 0
        before = index_files(config)
        docs = build_channel(root, [*DEMO_PACKAGES, HUGE])
        with pytest.raises(DiskFull) as caught:
            await mirror(config)
        message = str(caught.value)
        assert message.startswith(f"{config.channel_dir / 'linux-64'}: no space left on the destination"), message
        assert "more is needed" in message and "\n" not in message
        assert not leftovers(disk.path)
        assert not (config.channel_dir / "linux-64" / HUGE.filename(".conda")).exists()
        assert index_files(config) == before
        assert not set_aside_journals(config)

        disk.remount("64m")
        server.requests.clear()
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    for subdir, doc in docs.items():
        assert names(assert_index_sound(config, subdir, doc)) == names(doc)
    assert server.fetched(".conda") + server.fetched(".tar.bz2") == [
        f"/linux-64/{HUGE.filename('.conda')}"
    ]  # the journal vouched for the rest: resumed, not restarted
    assert not leftovers(disk.path)


async def test_disk_full_says_a_nonzero_amount_is_needed(tmp_path: Path, disk: SmallDisk) -> None:
    root = tmp_path / "upstream"
    build_channel(root, [HUGE])
    disk.mount("2m")
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], mirror_dir=str(disk.path / "mirror"))
        with pytest.raises(DiskFull) as caught:
            await mirror(config)
    amount = re.search(r"about ([0-9.]+) ([kMG]B) more is needed", str(caught.value))
    assert amount is not None and float(amount[1]) > 0, str(caught.value)


async def test_min_free_space_stops_the_run_before_it_downloads(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    build_channel(root, [DemoPackage("tiny", "1", "0", subdir="noarch")])
    free_gb = shutil.disk_usage(tmp_path).free // 10**9
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"], min_free_space=f"{free_gb + 100}GB")
        with pytest.raises(DiskFull) as caught:
            await mirror(config)
        assert not server.fetched(".conda")
    message = str(caught.value)
    assert message.startswith(f"{config.channel_dir}: ") and "\n" not in message
    assert "min_free_space" in message and "tiny-1-0.conda" in message, message
    assert not list(config.channel_dir.rglob("*.conda")) and not leftovers(tmp_path)
    assert not (config.channel_dir / "noarch" / "repodata.json").exists()


async def test_a_disk_full_before_the_run_keeps_the_journal(tmp_path: Path, disk: SmallDisk) -> None:
    root = tmp_path / "upstream"
    build_channel(root)
    disk.mount("6m")
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], mirror_dir=str(disk.path / "mirror"))
        assert (await mirror(config)).exit_code == 0
        before = index_files(config)
        build_channel(root, [*DEMO_PACKAGES, DemoPackage("more", "1", "0")])
        disk.fill()
        try:
            with pytest.raises(DiskFull):
                await mirror(config)
            assert not set_aside_journals(config), "a full disk is not a corrupt journal"
            assert index_files(config) == before
        finally:
            disk.unfill()


async def bounded(run: MirrorRun) -> RunSummary:
    """A guard, not a timing check: a run that hangs (see the stranded-flush test below) fails instead."""
    async with asyncio.timeout(HANG_GUARD):
        return await run.run()


def journal_fills_up(tmp_path: Path, disk: SmallDisk, server: ChannelServer) -> tuple[MirrorConfig, MirrorRun]:
    """A run whose disk fills up right after its first package lands, so that its journal meets a full disk."""
    config = make_config(tmp_path, channels=[server.url], mirror_dir=str(disk.path / "mirror"), concurrency=1)
    run = MirrorRun(config, FillsUp(config.channel_dir, disk, after=1), NullReporter(), rng=random.Random(1))
    return config, run


async def test_the_journal_running_out_of_space_is_disk_full(tmp_path: Path, disk: SmallDisk) -> None:
    root = tmp_path / "upstream"
    build_channel(root, [DemoPackage(name, "1", "0", subdir="noarch") for name in "abc"])
    disk.mount("6m")
    async with ChannelServer(root) as server:
        _, run = journal_fills_up(tmp_path, disk, server)
        try:
            with pytest.raises(DiskFull) as caught:
                await bounded(run)
            assert "no space left" in str(caught.value) and "\n" not in str(caught.value)
            assert not leftovers(disk.path)
        finally:
            disk.unfill()


async def test_a_failed_journal_write_still_releases_the_lock(tmp_path: Path, disk: SmallDisk) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root, [DemoPackage(name, "1", "0", subdir="noarch") for name in "abc"])
    disk.mount("6m")
    async with ChannelServer(root) as server:
        config, run = journal_fills_up(tmp_path, disk, server)
        try:
            with pytest.raises(MirrorError):
                await bounded(run)
        finally:
            disk.unfill()
        summary = await mirror(config)  # the lock was released: this run is not DestinationBusy
        assert summary.exit_code == 0, summary.failures
        assert names(assert_index_sound(config, "noarch", docs["noarch"])) == names(docs["noarch"])


async def test_a_failed_journal_write_leaves_nothing_behind(tmp_path: Path, disk: SmallDisk) -> None:
    root = tmp_path / "upstream"
    build_channel(root, [DemoPackage(name, "1", "0", subdir="noarch") for name in "abc"])
    disk.mount("6m")
    async with ChannelServer(root) as server:
        _, run = journal_fills_up(tmp_path, disk, server)
        try:
            with pytest.raises(MirrorError):
                await bounded(run)
        finally:
            disk.unfill()
        del run
        assert not leaks()  # checked here too, with the run dropped, not only by the fixture


async def test_a_flush_waiting_on_a_failing_commit_is_not_stranded(tmp_path: Path, disk: SmallDisk) -> None:
    disk.mount("6m")
    journal = await Journal.open(disk.path / "journal.sqlite", "anaconda")
    gate = threading.Event()
    try:
        await journal.begin_run()
        journal._executor.submit(gate.wait)  # hold the journal's thread: its next commit starts when we say
        journal.planned("noarch", [("a-1-0.conda", 1)])
        for _ in range(100):  # until the flusher has taken that batch and queued its commit
            if not journal._pending:
                break
            await asyncio.sleep(0)
        assert not journal._pending
        disk.fill()
        waiting = asyncio.ensure_future(journal.flush())  # joins the flusher that is about to fail
        await asyncio.sleep(0)
        gate.set()
        with pytest.raises(DestinationError):
            async with asyncio.timeout(2):  # a guard: without it the bug hangs the test
                await waiting
    finally:
        gate.set()
        disk.unfill()
    with pytest.raises(DestinationError):  # the failed commit again, and yet its connection and thread go
        await journal.close()


async def test_a_disk_full_while_publishing_leaves_no_temp_files(tmp_path: Path, disk: SmallDisk) -> None:
    root = tmp_path / "upstream"
    build_channel(root, [DemoPackage(name, "1", "0", subdir="noarch") for name in "ab"])
    disk.mount("6m")
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], mirror_dir=str(disk.path / "mirror"), concurrency=1)
        # no journal, so that publishing is the first write to meet the full disk
        destination = FillsUp(config.channel_dir, disk, after=2)
        run = MirrorRun(config, destination, NullReporter(), rng=random.Random(1), use_journal=False)
        with pytest.raises(DiskFull):
            await run.run()
    assert not (config.channel_dir / "noarch" / "repodata.json").exists()
    assert not leftovers(disk.path)


async def test_a_lock_that_cannot_be_written_is_not_held(disk: SmallDisk) -> None:
    disk.mount("1m")
    disk.fill()
    try:
        with pytest.raises(DiskFull):  # not a bare OSError: the holder's pid could not be written
            RunLock(disk.path / "anaconda.lock").acquire("the mirror")
    finally:
        disk.unfill()
    again = RunLock(disk.path / "anaconda.lock")
    again.acquire("the mirror")  # DestinationBusy if the failed one still held its flock
    again.release()


async def test_a_journal_that_cannot_open_leaves_no_thread(disk: SmallDisk) -> None:
    disk.mount("1m")
    disk.fill()
    try:
        with pytest.raises(DiskFull) as caught:
            await Journal.open(disk.path / "journal.sqlite", "anaconda")
        assert not leaks(), caught.value  # checked while the traceback still holds the journal
    finally:
        disk.unfill()


async def test_a_journal_whose_run_cannot_begin_is_closed(tmp_path: Path) -> None:
    build_channel(tmp_path / "upstream", [DemoPackage("tiny", "1", "0", subdir="noarch")])
    async with ChannelServer(tmp_path / "upstream") as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"])
        config.state_dir.mkdir(parents=True)
        with sqlite3.connect(config.state_dir / "journal.sqlite") as db:  # our schema, but a runs table of another
            db.executescript(
                "CREATE TABLE runs (id INTEGER PRIMARY KEY);" + SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};"
            )
        run = MirrorRun(config, LocalDestination(config.channel_dir), NullReporter(), rng=random.Random(1))
        with pytest.raises(DestinationError, match="cannot use the journal") as caught:
            await run.run()
        assert not leaks(), caught.value  # checked while the traceback still holds the run and its journal
        db.close()


async def test_a_failing_sync_fails_the_flush_and_leaves_no_task(tmp_path: Path) -> None:
    def sync_fails() -> None:
        raise OSError(errno.EIO, "Input/output error")

    journal = await Journal.open(tmp_path / "journal.sqlite", "anaconda", durable=sync_fails)
    await journal.begin_run()
    with pytest.raises(OSError, match="Input/output error"):
        async with asyncio.timeout(HANG_GUARD):  # a guard: the bug left this waiter waiting for ever
            await journal.verified("noarch", "a-1-0.conda", sha256=None, md5=None, size=1, mtime_ns=1)
    with pytest.raises(OSError, match="Input/output error"):  # raised again, and the journal closed all the same
        await journal.close()
