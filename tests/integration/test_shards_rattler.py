"""py-rattler reads our CEP-16 shards over HTTP: it solves and installs without fetching repodata.json."""

from __future__ import annotations

from pathlib import Path

import rattler
from rattler import Gateway, SourceConfig, Subdir

from mirror_engine.demo import build_channel
from mirror_engine.repodata import parse_repodata
from mirror_engine.shards import SHARD_INDEX_FILENAME, SHARDS_DIR, build_shard_index, build_shards
from tests.channel_server import ChannelServer

PLATFORMS = [Subdir("linux-64"), Subdir("noarch")]
REMOVED = {"linux-64": ["numpy-1.25.0-py311h64a7726_0.conda"], "noarch": []}


def write_sharded(root: Path) -> None:
    """Next to each subdir's repodata.json, the shard index and its shards, as the mirror will publish them."""
    for subdir in ("linux-64", "noarch"):
        folder = root / subdir
        repodata = parse_repodata((folder / "repodata.json").read_bytes(), f"{subdir}/repodata.json")
        shards = build_shards(repodata.records, repodata.removed)
        (folder / SHARDS_DIR).mkdir()
        for shard in shards:
            (folder / SHARDS_DIR / shard.filename).write_bytes(shard.data)
        index = build_shard_index(subdir, shards, created_at="2024-07-22T10:00:00Z")
        (folder / SHARD_INDEX_FILENAME).write_bytes(index)


async def test_rattler_solves_and_installs_from_shards_alone(tmp_path: Path) -> None:
    root = tmp_path / "up"
    docs = build_channel(root, removed=REMOVED)
    write_sharded(root)
    async with ChannelServer(root) as served:
        gateway = Gateway(cache_dir=tmp_path / "cache", default_config=SourceConfig(sharded_enabled=True))
        records = await rattler.solve(
            sources=[served.url], specs=["numpy", "requests"], platforms=PLATFORMS, gateway=gateway
        )
        solved = {record.name.normalized: (str(record.version), str(record.build)) for record in records}
        assert solved["python"] == ("3.11.9", "h955ad1f_0")
        assert solved["numpy"] == ("1.26.4", "py311h64a7726_0")
        assert solved["urllib3"] == ("2.2.2", "pyhd8ed1ab_1")
        numpy = next(record for record in records if record.name.normalized == "numpy")
        assert numpy.url == f"{served.url}linux-64/numpy-1.26.4-py311h64a7726_0.conda"
        assert numpy.constrains == ["numpy-base <0a0"]  # the served (patched) record, not the archive's
        for record in records:  # raw digest bytes in the shards read back as upstream's hex
            upstream = docs[record.subdir]["packages.conda"][record.file_name]
            assert (record.sha256 or b"").hex() == upstream["sha256"]
            assert (record.md5 or b"").hex() == upstream["md5"]
        result = await gateway.query([served.url], PLATFORMS, ["numpy"], recursive=False)
        removed = [package.file_name for per_source in result.removed for package in per_source]
        assert removed == ["numpy-1.25.0-py311h64a7726_0.conda"]
        await rattler.install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "pkgs", show_progress=False)
    assert (tmp_path / "env" / "share" / "numpy" / "data.bin").stat().st_size == 400_000
    fetched = [path for method, path in served.requests if method == "GET"]
    assert served.fetched(f"/linux-64/{SHARD_INDEX_FILENAME}") and served.fetched(f"/noarch/{SHARD_INDEX_FILENAME}")
    assert any(path.startswith("/linux-64/shards/") for path in fetched)
    assert any(path.startswith("/noarch/shards/") for path in fetched)
    assert not [path for path in fetched if "repodata.json" in path], fetched
    assert served.fetched("/linux-64/numpy-1.26.4-py311h64a7726_0.conda")
