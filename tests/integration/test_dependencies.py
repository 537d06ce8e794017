"""include_dependencies: a filtered selection is closed over its dependencies, so it installs alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror_engine.demo import build_channel
from mirror_engine.filters import Verdict
from mirror_engine.summary import format_summary
from tests.helpers import make_config, mirror, names, published


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    build_channel(tmp_path / "pkgs")
    return tmp_path / "pkgs"


async def test_pkg_list_with_dependencies_pulls_in_what_numpy_needs(tmp_path: Path, channel: Path) -> None:
    config = make_config(
        tmp_path, channels=[str(channel)], pkg_list=["numpy", "requests"], python_versions=["3.11"],
        include_dependencies=True,
    )  # fmt: skip
    summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    linux = names(published(config, "linux-64"))
    noarch = names(published(config, "noarch"))
    # numpy py311 needs python >=3.11,<3.12 and python_abi 3.11.*; requests needs urllib3 and python
    assert linux == {
        "numpy-1.26.4-py311h64a7726_0.conda",
        "python-3.11.9-h955ad1f_0.conda",
        "python-3.11.9-h955ad1f_0.tar.bz2",
        "python_abi-3.11-2_cp311.conda",
    }
    assert noarch == {"requests-2.32.3-pyhd8ed1ab_0.conda", "urllib3-2.2.2-pyhd8ed1ab_1.conda"}
    assert summary.verdicts[Verdict.DEPENDENCY] == 4  # python x2, python_abi, urllib3
    assert summary.unsatisfied == {}


async def test_filters_still_apply_to_what_the_closure_adds(tmp_path: Path, channel: Path) -> None:
    config = make_config(
        tmp_path, channels=[str(channel)], platforms=["linux-64"], license_blacklist="GPL", blacklist=["ncurses"],
        include_dependencies=True,
    )  # fmt: skip
    summary = await mirror(config)
    linux = names(published(config, "linux-64"))
    assert not any(name.startswith(("readline", "gdbm", "ncurses")) for name in linux)
    assert summary.unsatisfied == {"linux-64: python 2.7*": {"futures"}}  # the demo channel has no python 2.7
    rescued = make_config(
        tmp_path, channels=[str(channel)], platforms=["linux-64"], license_blacklist="GPL", whitelist=["readline"],
        blacklist=["ncurses"], include_dependencies=True,
    )  # fmt: skip
    summary = await mirror(rescued)
    assert summary.unsatisfied == {"linux-64: ncurses >=6.4": {"readline"}, "linux-64: python 2.7*": {"futures"}}
    assert "  linux-64: ncurses >=6.4 (needed by readline)" in format_summary(summary).splitlines()


async def test_without_the_key_nothing_is_added(tmp_path: Path, channel: Path) -> None:
    config = make_config(tmp_path, channels=[str(channel)], pkg_list=["numpy"])
    await mirror(config)
    assert names(published(config, "linux-64")) == {
        "numpy-1.26.4-py311h64a7726_0.conda",
        "numpy-1.26.4-py310hb13e2d6_0.conda",
    }


async def test_a_subdir_whose_index_is_broken_is_reported_once(tmp_path: Path, channel: Path) -> None:
    (channel / "linux-64" / "repodata.json.zst").unlink(missing_ok=True)
    (channel / "linux-64" / "repodata.json").write_text('{"packages": [1, 2]}')
    config = make_config(tmp_path, channels=[str(channel)], pkg_list=["requests"], include_dependencies=True)
    summary = await mirror(config)
    assert [what for what, _ in summary.failures] == ["linux-64 (not published)"]
    assert "packages: not an object" in summary.failures[0][1]
    assert names(published(config, "noarch")) == {
        "requests-2.32.3-pyhd8ed1ab_0.conda",
        "urllib3-2.2.2-pyhd8ed1ab_1.conda",
    }
