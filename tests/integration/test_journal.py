"""The journal: files it vouches for are not read again; --verify reads them all; a bad journal is replaced."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
from pathlib import Path

import pytest

from mirror_engine.config import MirrorConfig
from mirror_engine.demo import build_channel
from mirror_engine.destinations.base import FileStat
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.journal import Journal
from mirror_engine.progress import NullReporter
from mirror_engine.status import status_report
from mirror_engine.summary import RunSummary
from tests.helpers import assert_index_sound, make_config, mirror

TARGET = "tzdata-2024a-h0c530f3_0.conda"


async def run(config: MirrorConfig, *, verify: bool = False) -> RunSummary:
    engine = MirrorRun(
        config, LocalDestination(config.channel_dir), NullReporter(), rng=random.Random(1), verify=verify
    )
    return await engine.run()


def tamper_keeping_stat(path: Path) -> None:
    """Bit rot: same size, same mtime, other bytes; only reading the file can tell."""
    stat = path.stat()
    path.write_bytes(bytes(stat.st_size))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture
def config(tmp_path: Path) -> MirrorConfig:
    build_channel(tmp_path / "pkgs")
    return make_config(tmp_path, channels=["pkgs"], platforms=["noarch"])


async def test_trusted_files_are_not_read_and_verify_repairs_them(config: MirrorConfig, tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    await mirror(config)
    target = config.channel_dir / "noarch" / TARGET
    tamper_keeping_stat(target)

    trusting = await run(config)
    assert trusting.rows[(0, "noarch")].present == 3 and not trusting.repaired  # not read: not noticed

    verifying = await run(config, verify=True)
    assert verifying.repaired == [f"noarch/{TARGET}"]
    assert verifying.exit_code == 0
    assert_index_sound(config, "noarch", docs["noarch"])


async def test_a_changed_mtime_makes_a_file_be_hashed_again(config: MirrorConfig) -> None:
    await mirror(config)
    target = config.channel_dir / "noarch" / TARGET
    target.write_bytes(bytes(target.stat().st_size))  # new mtime
    summary = await run(config)
    assert summary.repaired == [f"noarch/{TARGET}"]


@pytest.mark.parametrize("damage", ["garbage", "old-schema", "deleted"])
async def test_a_bad_or_missing_journal_is_rebuilt_from_disk(
    config: MirrorConfig, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    docs = build_channel(tmp_path / "pkgs")
    await mirror(config)
    journal = config.state_dir / "journal.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        journal.write_bytes(b"this is not a database" * 100)
    elif damage == "old-schema":
        with sqlite3.connect(journal) as db:
            db.execute("PRAGMA user_version=0")
    else:
        journal.unlink()
    summary = await run(config)
    assert summary.exit_code == 0
    row = summary.rows[(0, "noarch")]
    assert (row.present, row.downloaded) == (3, 0)  # hashed again, not fetched again
    assert_index_sound(config, "noarch", docs["noarch"])
    if damage != "deleted":
        assert "set aside" in caplog.text
        assert list(config.state_dir.glob("journal.sqlite.*.bad"))
    again = await run(config)
    assert again.rows[(0, "noarch")].present == 3


async def test_status_reports_from_the_journal(config: MirrorConfig, tmp_path: Path) -> None:
    (tmp_path / "pkgs" / "noarch" / TARGET).write_bytes(b"broken")
    await run(config.model_copy(update={"retries": 0}))
    report = await status_report(config)
    assert "last run #1" in report and ": failed," in report
    assert "published            2 files" in report
    assert "failed               1 files" in report
    assert f"noarch/{TARGET}:" in report
    assert "index noarch: 2 files" in report


async def test_status_without_a_journal(tmp_path: Path) -> None:
    config = make_config(tmp_path, channels=["https://example.invalid/c/"])
    assert "nothing has been mirrored here yet" in await status_report(config)


async def test_an_unchanged_subdir_is_skipped_and_its_index_kept(config: MirrorConfig) -> None:
    await mirror(config)
    index = config.channel_dir / "noarch" / "repodata.json"
    before = index.stat().st_mtime_ns
    summary = await run(config)
    assert summary.unchanged == ["noarch"] and summary.published == []
    assert summary.rows[(0, "noarch")].present == 3
    assert index.stat().st_mtime_ns == before  # clients' ETags stay valid


@pytest.mark.parametrize("change", ["upstream", "filters", "file-deleted", "file-added"])
async def test_any_change_brings_the_subdir_back(config: MirrorConfig, tmp_path: Path, change: str) -> None:
    await mirror(config)
    folder = config.channel_dir / "noarch"
    if change == "upstream":
        build_channel(tmp_path / "pkgs", patches={"tzdata-2024a-h0c530f3_0.conda": {"depends": ["hotfix"]}})
    elif change == "filters":
        config = config.model_copy(update={"blacklist": ("urllib3",)})
    elif change == "file-deleted":
        (folder / TARGET).unlink()
    else:
        (folder / "stray-1-0.conda").write_bytes(b"x")
    summary = await run(config)
    assert summary.unchanged == [] and summary.published == ["noarch"]
    assert summary.exit_code == 0
    assert not (folder / "stray-1-0.conda").exists()
    assert (folder / TARGET).exists()


async def test_a_subdir_with_a_failed_file_is_not_skipped_next_time(config: MirrorConfig, tmp_path: Path) -> None:
    good = (tmp_path / "pkgs" / "noarch" / TARGET).read_bytes()
    (tmp_path / "pkgs" / "noarch" / TARGET).write_bytes(b"broken")
    assert (await run(config.model_copy(update={"retries": 0}))).exit_code == 1
    (tmp_path / "pkgs" / "noarch" / TARGET).write_bytes(good)  # upstream heals; its index did not change
    summary = await run(config)
    assert summary.unchanged == [] and summary.rows[(0, "noarch")].downloaded == 1


async def test_files_are_made_durable_before_the_journal_records_them_verified(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    seen_at_sync: list[list[tuple[str, str]]] = []

    def committed_states() -> list[tuple[str, str]]:
        """What another process would read now: only committed rows (WAL: readers never see a write early)."""
        with contextlib.closing(sqlite3.connect(path)) as reader:
            return reader.execute("SELECT filename, state FROM files ORDER BY filename").fetchall()

    journal = await Journal.open(path, "anaconda", durable=lambda: seen_at_sync.append(committed_states()))
    try:
        await journal.begin_run()
        journal.planned("noarch", [("a-1-0.conda", 10)])
        await journal.flush()
        assert seen_at_sync == [], "planning rows need no sync"
        await journal.verified("noarch", "a-1-0.conda", sha256="0" * 64, md5=None, size=10, mtime_ns=1)
        # The sync ran once, while the committed row still said planned; the commit came after it.
        assert seen_at_sync == [[("a-1-0.conda", "planned")]]
        assert committed_states() == [("a-1-0.conda", "verified")]
        vouched = await journal.vouched("noarch", {"a-1-0.conda": FileStat(10, 1)})
        assert vouched.digests == {"a-1-0.conda": "0" * 64}
    finally:
        await journal.close()
