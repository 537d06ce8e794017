"""The whole pipeline against a real HTTP server on 127.0.0.1 serving a generated channel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mirror_engine.demo import DemoPackage, build_channel
from tests.channel_server import ChannelServer
from tests.helpers import assert_index_sound, leftovers, make_config, mirror, names, published


@pytest.fixture
def channel(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = tmp_path / "upstream"
    return root, build_channel(root)


async def test_filtered_mirror_publishes_exactly_verified_upstream_records(tmp_path: Path, channel: Any) -> None:
    root, docs = channel
    async with ChannelServer(root) as server:
        config = make_config(
            tmp_path,
            channels=[server.url],
            platforms=["linux-64"],
            python_versions=["3.11"],
            license_blacklist="GPL",
            whitelist=["readline"],
        )
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    linux = assert_index_sound(config, "linux-64", docs["linux-64"])
    assert_index_sound(config, "noarch", docs["noarch"])
    kept = names(linux)
    assert "readline-8.2-h5eee18b_0.conda" in kept  # license_blacklist dropped it, whitelist put it back
    assert "gdbm-1.18-hd4cb3f1_4.conda" not in kept  # GPL guessed from its license text
    assert "numpy-1.26.4-py310hb13e2d6_0.conda" not in kept
    assert "python-3.10.14-h955ad1f_1.conda" not in kept
    assert "futures-3.3.0-py27_0.conda" not in kept
    assert "python-3.11.9-h955ad1f_0.tar.bz2" in kept  # both sections are mirrored
    # the hot-fixed record is published as served, not as the archive's index.json says
    assert linux["packages.conda"]["numpy-1.26.4-py311h64a7726_0.conda"]["constrains"] == ["numpy-base <0a0"]
    on_disk = {p.name for p in (config.channel_dir / "linux-64").iterdir() if p.name.endswith((".conda", ".tar.bz2"))}
    assert on_disk == kept
    assert not server.fetched("gdbm-1.18-hd4cb3f1_4.conda")


async def test_second_run_downloads_nothing(tmp_path: Path, channel: Any) -> None:
    root, _ = channel
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["linux-64"])
        first = await mirror(config)
        server.requests.clear()
        second = await mirror(config)
    assert sum(row.downloaded for row in first.rows.values()) == 16
    assert sum(row.downloaded for row in second.rows.values()) == 0
    assert sum(row.present for row in second.rows.values()) == 16
    assert not server.fetched(".conda") and not server.fetched(".tar.bz2")


async def test_transient_faults_are_retried(tmp_path: Path, channel: Any) -> None:
    root, docs = channel
    async with ChannelServer(root) as server:
        server.faults["/noarch/repodata.json.zst"] = ["503"]
        server.faults["/noarch/requests-2.32.3-pyhd8ed1ab_0.conda"] = ["500", "429"]
        server.faults["/noarch/tzdata-2024a-h0c530f3_0.conda"] = ["short", "corrupt"]
        server.faults["/noarch/urllib3-2.2.2-pyhd8ed1ab_1.conda"] = ["stall"]
        server.stall_seconds = 3
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"], read_timeout=0.5)
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    assert names(assert_index_sound(config, "noarch", docs["noarch"])) == names(docs["noarch"])
    assert len(server.fetched("tzdata-2024a-h0c530f3_0.conda")) == 3
    assert not leftovers(tmp_path / "mirror")


async def test_a_file_that_keeps_lying_is_left_out_and_reported(tmp_path: Path, channel: Any) -> None:
    root, docs = channel
    async with ChannelServer(root) as server:
        server.faults["/noarch/tzdata-2024a-h0c530f3_0.conda"] = ["corrupt"] * 10
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"], retries=2)
        summary = await mirror(config)
    assert summary.exit_code == 1
    (what, why), *_ = summary.failures
    assert what == "noarch/tzdata-2024a-h0c530f3_0.conda" and "sha256" in why
    doc = assert_index_sound(config, "noarch", docs["noarch"])
    assert names(doc) == names(docs["noarch"]) - {"tzdata-2024a-h0c530f3_0.conda"}
    assert not (config.channel_dir / "noarch" / "tzdata-2024a-h0c530f3_0.conda").exists()
    assert not leftovers(tmp_path / "mirror")


async def test_failed_repodata_keeps_the_previous_index(tmp_path: Path, channel: Any) -> None:
    root, _ = channel
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["linux-64"], retries=1)
        await mirror(config)
        before = published(config, "linux-64")
        server.faults["/linux-64/repodata.json.zst"] = ["500"] * 5
        summary = await mirror(config.model_copy(update={"blacklist": ("numpy",)}))
    assert summary.exit_code == 1
    assert summary.failures[0][0] == "linux-64 (not published)" and "HTTP 500" in summary.failures[0][1]
    assert published(config, "linux-64") == before
    assert (config.channel_dir / "linux-64" / "numpy-1.26.4-py311h64a7726_0.conda").exists()


async def test_deselected_files_are_deleted_after_publishing(tmp_path: Path, channel: Any) -> None:
    root, docs = channel
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["linux-64"])
        await mirror(config)
        summary = await mirror(make_config(tmp_path, channels=[server.url], platforms=["linux-64"], blacklist=["zlib"]))
    assert summary.deleted == {"noarch": 0, "linux-64": 2}
    doc = assert_index_sound(config, "linux-64", docs["linux-64"])
    assert not any(name.startswith("zlib") for name in names(doc))
    assert not list((config.channel_dir / "linux-64").glob("zlib*"))


async def test_base_url_is_followed_and_not_published(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root / "index", [DemoPackage("tiny", "1.0", "0", subdir="noarch")], zst=False)
    store = root / "store" / "noarch"
    store.mkdir(parents=True)
    (root / "index" / "noarch" / "tiny-1.0-0.conda").rename(store / "tiny-1.0-0.conda")
    doc = docs["noarch"] | {"repodata_version": 2, "info": {"subdir": "noarch", "base_url": "../../store/noarch/"}}
    (root / "index" / "noarch" / "repodata.json").write_text(json.dumps(doc))
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url + "index/"], platforms=["noarch"])
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    assert server.fetched("/store/noarch/tiny-1.0-0.conda")
    assert names(assert_index_sound(config, "noarch", doc)) == {"tiny-1.0-0.conda"}


async def test_two_channels_merge_and_conflicts_keep_the_first(tmp_path: Path) -> None:
    first = build_channel(tmp_path / "a", [DemoPackage("x", "1", "0", subdir="noarch", payload_size=10)])
    second = build_channel(
        tmp_path / "b",
        [
            DemoPackage("x", "1", "0", subdir="noarch", payload_size=20),  # same name, other bytes
            DemoPackage("y", "1", "0", subdir="noarch"),
        ],
    )
    async with ChannelServer(tmp_path / "a") as a, ChannelServer(tmp_path / "b") as b:
        config = make_config(tmp_path, channels=[a.url, b.url])
        summary = await mirror(config)
        assert not b.fetched("x-1-0.conda")
    doc = published(config, "noarch")
    assert doc["packages.conda"]["x-1-0.conda"] == first["noarch"]["packages.conda"]["x-1-0.conda"]
    assert doc["packages.conda"]["y-1-0.conda"] == second["noarch"]["packages.conda"]["y-1-0.conda"]
    assert len(summary.conflicts) == 1 and "x-1-0.conda" in summary.conflicts[0]
    assert summary.exit_code == 0


async def test_subdirs_are_probed_without_channeldata(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    build_channel(root, channeldata=False, zst=False)
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], pkg_list=["zlib", "tz*"])
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    assert names(published(config, "linux-64")) == {"zlib-1.3.1-h5eee18b_0.conda", "zlib-1.3.1-h5eee18b_0.tar.bz2"}
    assert names(published(config, "noarch")) == {"tzdata-2024a-h0c530f3_0.conda"}
    assert server.fetched("/linux-64/repodata.json") and not server.fetched("/win-64/repodata.json")


async def test_hostile_file_names_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root, [DemoPackage("ok", "1", "0", subdir="noarch")], zst=False)
    doc = docs["noarch"]
    record = doc["packages.conda"]["ok-1-0.conda"]
    doc["packages.conda"]["../../../evil-1-0.conda"] = record
    doc["packages.conda"]["sub/dir-1-0.conda"] = record
    (root / "noarch" / "repodata.json").write_text(json.dumps(doc))
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"])
        summary = await mirror(config)
    assert summary.exit_code == 1
    assert sorted(why for _, why in summary.failures) == [
        "unsafe file name '../../../evil-1-0.conda'",
        "unsafe file name 'sub/dir-1-0.conda'",
    ]
    assert names(published(config, "noarch")) == {"ok-1-0.conda"}
    assert not list(tmp_path.rglob("evil*"))


async def test_md5_only_records_are_verified_by_md5(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root, [DemoPackage("old", "1", "0", subdir="noarch")], zst=False)
    doc = docs["noarch"]
    del doc["packages.conda"]["old-1-0.conda"]["sha256"]
    (root / "noarch" / "repodata.json").write_text(json.dumps(doc))
    async with ChannelServer(root) as server:
        server.faults["/noarch/old-1-0.conda"] = ["corrupt"]
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"])
        summary = await mirror(config)
    assert summary.exit_code == 0
    assert len(server.fetched("old-1-0.conda")) == 2
    assert published(config, "noarch")["packages.conda"] == doc["packages.conda"]


async def test_invalid_zstd_repodata_fails_the_subdir_only(tmp_path: Path, channel: Any) -> None:
    root, docs = channel
    (root / "linux-64" / "repodata.json.zst").write_bytes(b"this is not zstd")
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["linux-64"])
        summary = await mirror(config)
    assert summary.exit_code == 1
    assert "not valid zstd" in summary.failures[0][1]
    assert not (config.channel_dir / "linux-64" / "repodata.json").exists()
    assert_index_sound(config, "noarch", docs["noarch"])


async def test_dry_run_writes_nothing(tmp_path: Path, channel: Any) -> None:
    root, _ = channel
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["linux-64"])
        summary = await mirror(config, dry_run=True)
        assert not server.fetched(".conda")
    assert sum(row.to_fetch for row in summary.rows.values()) == 16
    assert not (tmp_path / "mirror").exists()
