"""A real conda client (py-rattler) solves and installs from what the mirror published."""

from __future__ import annotations

from pathlib import Path

import pytest
import rattler
from rattler import Gateway, Subdir
from rattler.exceptions import SolverError

from mirror_engine.config import MirrorConfig
from mirror_engine.demo import build_channel
from tests.channel_server import ChannelServer
from tests.helpers import make_config, mirror

PLATFORMS = [Subdir("linux-64"), Subdir("noarch")]
SPECS = ["numpy", "requests", "readline"]


@pytest.fixture
async def mirrored(tmp_path: Path) -> MirrorConfig:
    build_channel(tmp_path / "upstream")
    config = make_config(
        tmp_path,
        channels=["upstream"],
        platforms=["linux-64"],
        python_versions=["3.11"],
        license_blacklist="GPL",
        whitelist=["readline"],
    )
    assert (await mirror(config)).exit_code == 0
    return config


async def _solve(source: str, specs: list[str], cache: Path) -> list[rattler.RepoDataRecord]:
    return await rattler.solve(sources=[source], specs=specs, platforms=PLATFORMS, gateway=Gateway(cache_dir=cache))


async def test_rattler_installs_over_http_from_the_shards(mirrored: MirrorConfig, tmp_path: Path) -> None:
    async with ChannelServer(mirrored.mirror_dir) as served:
        source = f"{served.url}{mirrored.dest_channel}"
        records = await _solve(source, SPECS, tmp_path / "cache")
        solved = {record.name.normalized: (str(record.version), str(record.build)) for record in records}
        assert solved["python"] == ("3.11.9", "h955ad1f_0")
        assert solved["numpy"] == ("1.26.4", "py311h64a7726_0")
        await rattler.install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "pkgs")
        with pytest.raises(SolverError):  # filtered out by license_blacklist
            await _solve(source, ["gdbm"], tmp_path / "cache2")
    assert (tmp_path / "env" / "share" / "numpy" / "data.bin").stat().st_size == 400_000
    assert (tmp_path / "env" / "share" / "readline" / "data.bin").exists()
    assert served.fetched("/linux-64/repodata_shards.msgpack.zst")
    assert any("/linux-64/shards/" in path for path in served.fetched(".msgpack.zst"))
    assert not served.fetched("repodata.json") and not served.fetched("repodata.json.zst")
    assert served.fetched("/linux-64/numpy-1.26.4-py311h64a7726_0.conda")


async def test_rattler_installs_from_a_file_url(mirrored: MirrorConfig, tmp_path: Path) -> None:
    records = await _solve(mirrored.channel_dir.as_uri(), SPECS, tmp_path / "cache")
    await rattler.install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "pkgs")
    assert (tmp_path / "env" / "share" / "requests" / "data.bin").exists()


async def test_a_corrupted_mirror_file_fails_the_clients_hash_check(mirrored: MirrorConfig, tmp_path: Path) -> None:
    target = mirrored.channel_dir / "noarch" / "urllib3-2.2.2-pyhd8ed1ab_1.conda"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the payload; the zip around it stays valid
    target.write_bytes(bytes(data))
    async with ChannelServer(mirrored.mirror_dir) as served:
        records = await _solve(f"{served.url}{mirrored.dest_channel}", ["requests"], tmp_path / "cache")
        with pytest.raises(Exception, match=r"(?i)hash|sha256|checksum|mismatch"):
            await rattler.install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "pkgs")
