"""What a subdir publishes beside the packages: removed files, shards and their garbage collection."""

from __future__ import annotations

import bz2
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mirror_engine.demo import DemoPackage, build_channel
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.publish import SHARD_GRACE_SECONDS, collect_old_shards
from mirror_engine.repodata import Record
from mirror_engine.shards import build_shard_index, build_shards, read_shard_index
from tests.channel_server import ChannelServer
from tests.helpers import make_config, mirror, names, published

OLD = DemoPackage("tool", "1.0", "0", subdir="noarch")
NEW = DemoPackage("tool", "2.0", "0", subdir="noarch")


def retire_old(root: Path) -> None:
    """Upstream moves tool 1.0 from packages into removed, as conda-forge does with broken builds."""
    index = root / "noarch" / "repodata.json"
    doc = json.loads(index.read_text())
    del doc["packages.conda"]["tool-1.0-0.conda"]
    doc["removed"] = ["tool-1.0-0.conda", "never-mirrored-1-0.conda"]
    index.write_text(json.dumps(doc))
    (root / "noarch" / "repodata.json.zst").unlink()


@pytest.mark.parametrize("prune", [False, True])
async def test_files_upstream_retires_stay_unless_pruned(tmp_path: Path, prune: bool) -> None:
    root = tmp_path / "pkgs"
    build_channel(root, [OLD, NEW])
    config = make_config(tmp_path, channels=[str(root)], platforms=["noarch"], prune_removed=prune)
    await mirror(config)
    retire_old(root)
    summary = await mirror(config)
    assert summary.exit_code == 0
    doc = published(config, "noarch")
    assert names(doc) == {"tool-2.0-0.conda"}
    kept = (config.channel_dir / "noarch" / "tool-1.0-0.conda").exists()
    assert kept is not prune
    assert doc["removed"] == ([] if prune else ["tool-1.0-0.conda"])  # never a file the mirror lacks


async def test_old_shards_are_collected_after_the_grace_period(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    build_channel(root, [OLD])
    config = make_config(tmp_path, channels=[str(root)], platforms=["noarch"])
    await mirror(config)
    shards = config.channel_dir / "noarch" / "shards"
    (first,) = list(shards.iterdir())
    build_channel(root, [OLD], patches={"tool-1.0-0.conda": {"depends": ["hotfix"]}})  # a new shard
    await mirror(config)
    assert first.exists(), "a superseded shard stays for the grace period"
    destination = LocalDestination(config.channel_dir)
    now = time.time()
    index = read_shard_index((config.channel_dir / "noarch" / "repodata_shards.msgpack.zst").read_bytes())
    named = {f"{bytes(digest).hex()}.msgpack.zst" for digest in index["shards"].values()}
    assert first.name not in named
    assert await collect_old_shards(destination, "noarch", named, now=now) == []
    os.utime(first, (now - SHARD_GRACE_SECONDS - 60,) * 2)
    assert await collect_old_shards(destination, "noarch", named, now=now) == [first.name]
    (current,) = list(shards.iterdir())
    os.utime(current, (now - 10 * SHARD_GRACE_SECONDS,) * 2)  # old, but named: published long ago, still used
    assert await collect_old_shards(destination, "noarch", named, now=now) == []
    assert current.exists()
    assert len(list(shards.iterdir())) == 1
    assert published(config, "noarch")["packages.conda"]["tool-1.0-0.conda"]["depends"] == ["hotfix"]


async def test_a_base_url_on_another_host_needs_allow_other_hosts(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    docs = build_channel(root, [OLD], zst=False)
    doc = docs["noarch"] | {"repodata_version": 2, "info": {"subdir": "noarch", "base_url": "http://127.0.0.2:1/x/"}}
    (root / "noarch" / "repodata.json").write_text(json.dumps(doc))
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"])
        summary = await mirror(config)
    assert summary.exit_code == 1
    assert "set allow_other_hosts: true" in summary.failures[0][1]
    assert names(published(config, "noarch")) == set()  # only the empty index every client asks for


async def test_channel_files_are_filtered_to_what_the_mirror_holds(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    docs = build_channel(root)
    for subdir, doc in docs.items():
        run_exports: dict[str, object] = {"info": {"subdir": subdir}}
        for section in ("packages", "packages.conda"):
            run_exports[section] = {f: {"run_exports": {"weak": [f"{r['name']} >=1"]}} for f, r in doc[section].items()}
        (root / subdir / "run_exports.json").write_text(json.dumps(run_exports))
        (root / subdir / "repodata_from_packages.json").write_text(json.dumps(doc))
    channeldata = json.loads((root / "channeldata.json").read_text())
    channeldata["packages"] = {"zlib": {"description": "compression", "subdirs": ["linux-64"]}, "gone": {}}
    (root / "channeldata.json").write_text(json.dumps(channeldata))
    (root / "notices.json").write_text('{"notices": []}')
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["linux-64"], blacklist=["python", "tzdata"])
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    for subdir in ("linux-64", "noarch"):
        held = names(published(config, subdir))
        for sidecar in ("run_exports.json", "repodata_from_packages.json"):
            doc = json.loads((config.channel_dir / subdir / sidecar).read_text())
            assert {*doc["packages"], *doc["packages.conda"]} == held
        assert not any(name.startswith(("python-", "tzdata")) for name in held)
    channel_doc = json.loads((config.channel_dir / "channeldata.json").read_text())
    assert channel_doc["subdirs"] == ["linux-64", "noarch"]
    assert channel_doc["packages"]["zlib"] == {"description": "compression", "subdirs": ["linux-64"]}
    assert channel_doc["packages"]["requests"] == {"subdirs": ["noarch"]}
    assert "python" not in channel_doc["packages"] and "gone" not in channel_doc["packages"]
    assert (config.channel_dir / "notices.json").read_text() == '{"notices": []}'


def serve_shards(root: Path, docs: dict[str, dict[str, Any]]) -> None:
    """Give the upstream channel CEP-16 shards beside its repodata.json, as conda-forge serves them."""
    for subdir, doc in docs.items():
        records = [
            Record.of(filename, section, raw)
            for section in ("packages", "packages.conda")
            for filename, raw in doc[section].items()
        ]
        shards = build_shards(records)
        (root / subdir / "shards").mkdir(exist_ok=True)
        for shard in shards:
            (root / subdir / "shards" / shard.filename).write_bytes(shard.data)
        (root / subdir / "repodata_shards.msgpack.zst").write_bytes(build_shard_index(subdir, shards))


async def test_pkg_list_reads_only_the_shards_it_needs(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    docs = build_channel(root)
    serve_shards(root, docs)
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], pkg_list=["numpy", "tz*"])
        summary = await mirror(config)
        assert summary.exit_code == 0, summary.failures
        assert not server.fetched("repodata.json") and not server.fetched("repodata.json.zst")
        fetched_shards = [path for path in server.fetched(".msgpack.zst") if "/shards/" in path]
        assert len(fetched_shards) == 2  # numpy in linux-64, tzdata in noarch; nothing else
    linux = published(config, "linux-64")
    assert names(linux) == {"numpy-1.26.4-py311h64a7726_0.conda", "numpy-1.26.4-py310hb13e2d6_0.conda"}
    for filename, record in linux["packages.conda"].items():
        assert record == docs["linux-64"]["packages.conda"][filename]
    assert names(published(config, "noarch")) == {"tzdata-2024a-h0c530f3_0.conda"}


async def test_a_shard_that_does_not_match_its_digest_fails_the_subdir(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    docs = build_channel(root)
    serve_shards(root, {"noarch": docs["noarch"]})
    for shard in (root / "noarch" / "shards").iterdir():
        shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], pkg_list=["tzdata"], platforms=["noarch"])
        summary = await mirror(config)
    assert summary.exit_code == 1
    assert "does not match its sha256 in the index" in summary.failures[0][1]


async def test_write_bz2_adds_the_deprecated_index(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    build_channel(root, [OLD])
    config = make_config(tmp_path, channels=[str(root)], platforms=["noarch"], write_bz2=True)
    await mirror(config)
    folder = config.channel_dir / "noarch"
    assert bz2.decompress((folder / "repodata.json.bz2").read_bytes()) == (folder / "repodata.json").read_bytes()


async def test_the_zst_index_is_the_json_one_and_states_its_size(tmp_path: Path) -> None:
    """Both are streamed through files; a client that decompresses in one call needs the size in the frame."""
    root = tmp_path / "pkgs"
    build_channel(root, [OLD, NEW])
    config = make_config(tmp_path, channels=[str(root)], platforms=["noarch"])
    await mirror(config)
    folder = config.channel_dir / "noarch"
    data, packed = (folder / "repodata.json").read_bytes(), (folder / "repodata.json.zst").read_bytes()
    assert zstandard.frame_content_size(packed) == len(data)
    assert zstandard.ZstdDecompressor().decompress(packed) == data
    assert set(json.loads(data)["packages.conda"]) == {"tool-1.0-0.conda", "tool-2.0-0.conda"}
    assert not [entry.name for entry in folder.iterdir() if entry.name.startswith(".")]  # no temporary left
