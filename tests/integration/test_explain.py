"""`explain`: for each upstream record of a package, whether it is mirrored and which filter step decided."""

from __future__ import annotations

from pathlib import Path

from mirror_engine.demo import build_channel
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.explain import Query
from mirror_engine.progress import NullReporter
from tests.helpers import make_config, mirror


async def test_explain_names_the_deciding_filter_step(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    config = make_config(
        tmp_path, channels=["pkgs"], platforms=["linux-64"], python_versions=["3.11"], license_blacklist="GPL",
        whitelist=["readline"], blacklist=["zlib"],
    )  # fmt: skip
    await mirror(config)
    run = MirrorRun(config, LocalDestination(config.channel_dir), NullReporter())

    async def why(package: str) -> list[str]:
        return [line.split(": ", 1)[1] for line in await run.explain(Query.parse(package))]

    assert await why("readline=8.2=h5eee18b_0") == [
        "mirrored; rescued by whitelist from license_blacklist (family GPL3)",
        "mirrored; rescued by whitelist from license_blacklist (family GPL3)",
    ]
    assert await why("gdbm") == [
        "not mirrored; dropped by license_blacklist: family GPL3 (from license 'GPL-3.0-or-later')"
    ]
    assert await why("numpy=1.26.4=py310hb13e2d6_0") == [
        "not mirrored; dropped by python_versions: built for Python 3.10"
    ]
    assert await why("ZLIB") == ["not mirrored; dropped by blacklist"] * 2
    assert await why("numpy=1.26.4=py311h64a7726_0") == ["mirrored; selected (built for Python 3.11)"]
    assert await run.explain(Query.parse("nothing")) == ["no upstream record matches nothing"]


async def test_explain_pkg_list_and_platforms(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    config = make_config(tmp_path, channels=["pkgs"], pkg_list=["requests"], platforms=["noarch"])
    run = MirrorRun(config, LocalDestination(config.channel_dir), NullReporter())
    lines = await run.explain(Query.parse("urllib3"))
    assert lines == [
        f"{tmp_path / 'pkgs'}/noarch/urllib3-2.2.2-pyhd8ed1ab_1.conda: not mirrored; dropped: not in pkg_list"
    ]
