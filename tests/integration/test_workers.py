"""Transfer worker processes: downloads leave the main process, and what they publish is what one process would."""

from __future__ import annotations

from pathlib import Path

import pytest

import mirror_engine.engine
from mirror_engine.demo import build_channel
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.errors import WorkerCrashed
from mirror_engine.progress import NullReporter
from mirror_engine.workers import WorkerPool
from tests.channel_server import ChannelServer
from tests.helpers import assert_index_sound, make_config, mirror, names


async def test_with_two_processes_no_package_is_downloaded_by_the_main_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = build_channel(tmp_path / "upstream")

    async def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("a package was downloaded in the main process")

    async with ChannelServer(tmp_path / "upstream") as server:
        one = make_config(tmp_path / "one", channels=[server.url], processes=1)
        assert (await mirror(one)).exit_code == 0
        monkeypatch.setattr(mirror_engine.engine, "download", not_here)
        two = make_config(tmp_path / "two", channels=[server.url], processes=2)
        summary = await mirror(two)
    assert summary.exit_code == 0, summary.failures
    for subdir, doc in docs.items():
        assert names(assert_index_sound(two, subdir, doc)) == names(doc)
        published_one = (one.channel_dir / subdir / "repodata.json").read_bytes()
        assert (two.channel_dir / subdir / "repodata.json").read_bytes() == published_one
        for filename in names(doc):
            assert (two.channel_dir / subdir / filename).read_bytes() == (
                one.channel_dir / subdir / filename
            ).read_bytes()


async def test_workers_that_cannot_start_leave_the_downloads_to_the_main_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    docs = build_channel(tmp_path / "upstream")

    async def cannot_start(config: object, count: int) -> object:
        raise WorkerCrashed("cannot start transfer worker 0 (Resource temporarily unavailable)")

    monkeypatch.setattr(WorkerPool, "start", cannot_start)
    config = make_config(tmp_path, channels=[str(tmp_path / "upstream")], processes=2)
    summary = await MirrorRun(config, LocalDestination(config.channel_dir), NullReporter()).run()
    assert summary.exit_code == 0, summary.failures
    for subdir, doc in docs.items():
        assert names(assert_index_sound(config, subdir, doc)) == names(doc)
    assert (
        "cannot start transfer worker 0 (Resource temporarily unavailable); files were downloaded in the main "
        "process instead" in caplog.text
    )
