"""A real conda client (py-rattler) solves and installs from what the mirror published, served over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
import rattler
from rattler import Gateway, Subdir
from rattler.exceptions import SolverError

from mirror_engine.demo import build_channel
from tests.channel_server import ChannelServer
from tests.helpers import make_config, mirror

PLATFORMS = [Subdir("linux-64"), Subdir("noarch")]


async def test_rattler_installs_from_the_filtered_mirror(tmp_path: Path) -> None:
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
    async with ChannelServer(config.mirror_dir) as served:
        source = f"{served.url}{config.dest_channel}"
        gateway = Gateway(cache_dir=tmp_path / "cache")
        records = await rattler.solve(
            sources=[source], specs=["numpy", "requests", "readline"], platforms=PLATFORMS, gateway=gateway
        )
        solved = {record.name.normalized: (str(record.version), str(record.build)) for record in records}
        assert solved["python"] == ("3.11.9", "h955ad1f_0")
        assert solved["numpy"] == ("1.26.4", "py311h64a7726_0")
        await rattler.install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "pkgs")
        with pytest.raises(SolverError):  # filtered out by license_blacklist
            await rattler.solve(sources=[source], specs=["gdbm"], platforms=PLATFORMS, gateway=gateway)
    assert (tmp_path / "env" / "share" / "numpy" / "data.bin").stat().st_size == 400_000
    assert (tmp_path / "env" / "share" / "readline" / "data.bin").exists()
    assert served.fetched("/linux-64/numpy-1.26.4-py311h64a7726_0.conda")
