"""Air-gap bundles: export, verify, import; full and delta; every corruption refused before publishing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mirror_engine.bundle import BundleError, Snapshot, export_bundle, unpack_bundle
from mirror_engine.config import MirrorConfig
from mirror_engine.demo import DEMO_PACKAGES, DemoPackage, build_channel
from mirror_engine.engine import import_bundle
from mirror_engine.progress import NullReporter
from tests.helpers import make_config, mirror, published

SPLIT = 256 * 1024  # small volumes: the 600 kB python package spans three of them


def package_files(config: MirrorConfig) -> dict[str, bytes]:
    root = config.channel_dir
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.name.endswith(".conda")}


def assert_same_channel(low: MirrorConfig, high: MirrorConfig) -> None:
    for subdir in ("linux-64", "noarch"):
        assert published(high, subdir) == published(low, subdir)
    assert package_files(high) == package_files(low)


@pytest.fixture
def sides(tmp_path: Path) -> tuple[MirrorConfig, MirrorConfig]:
    build_channel(tmp_path / "upstream")
    low = make_config(tmp_path / "low", channels=[str(tmp_path / "upstream")])
    high = make_config(tmp_path / "high", channels=["https://example.invalid/unused/"])
    return low, high


async def test_full_then_delta_round_trip(tmp_path: Path, sides: tuple[MirrorConfig, MirrorConfig]) -> None:
    low, high = sides
    await mirror(low)
    manifest = export_bundle(low.channel_dir, "anaconda", tmp_path / "usb1", SPLIT, None)
    assert len(manifest["volumes"]) > 5 and manifest["base"] is None
    assert (await import_bundle(high, tmp_path / "usb1", NullReporter())).exit_code == 0
    assert_same_channel(low, high)

    # upstream moves on: a new package, one gone, a hot-fixed record
    kept = [p for p in DEMO_PACKAGES if p.name != "zlib"]
    build_channel(
        tmp_path / "upstream",
        [*kept, DemoPackage("newpkg", "1", "0", subdir="noarch")],
        patches={"tzdata-2024a-h0c530f3_0.conda": {"depends": ["hotfix"]}},
    )
    shutil.rmtree(tmp_path / "upstream" / "linux-64")
    build_channel(
        tmp_path / "upstream",
        [*kept, DemoPackage("newpkg", "1", "0", subdir="noarch")],
        patches={"tzdata-2024a-h0c530f3_0.conda": {"depends": ["hotfix"]}},
    )
    await mirror(low)
    since = Snapshot.load(next((tmp_path / "usb1").glob("snapshot-*.json")))
    delta = export_bundle(low.channel_dir, "anaconda", tmp_path / "usb2", SPLIT, since)
    carried = set(delta["files"])
    assert "noarch/newpkg-1-0.conda" in carried and "noarch/repodata.json" in carried
    assert "linux-64/python-3.11.9-h955ad1f_0.conda" not in carried  # unchanged packages stay home
    assert "linux-64/zlib-1.3.1-h5eee18b_0.conda" in delta["removed"]
    assert (await import_bundle(high, tmp_path / "usb2", NullReporter())).exit_code == 0
    assert_same_channel(low, high)
    assert published(high, "noarch")["packages.conda"]["tzdata-2024a-h0c530f3_0.conda"]["depends"] == ["hotfix"]
    assert not list(high.channel_dir.glob("linux-64/zlib*"))

    with pytest.raises(BundleError, match="a delta from snapshot"):  # the same delta again: base moved on
        await import_bundle(high, tmp_path / "usb2", NullReporter())


def break_bundle(bundle: Path, how: str) -> None:
    volume = bundle / "bundle.tar.002"
    if how == "missing-volume":
        volume.unlink()
    elif how == "truncated-volume":
        volume.write_bytes(volume.read_bytes()[:-100])
    elif how == "flipped-byte":
        data = bytearray(volume.read_bytes())
        data[len(data) // 2] ^= 1
        volume.write_bytes(bytes(data))
    else:  # a file the manifest does not list
        manifest = json.loads((bundle / "manifest.json").read_text())
        del manifest["files"]["noarch/repodata.json"]
        (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("how", ["missing-volume", "truncated-volume", "flipped-byte", "file-not-in-manifest"])
async def test_a_damaged_bundle_is_refused_before_anything_is_published(
    tmp_path: Path, sides: tuple[MirrorConfig, MirrorConfig], how: str
) -> None:
    low, high = sides
    await mirror(low)
    export_bundle(low.channel_dir, "anaconda", tmp_path / "usb", SPLIT, None)
    break_bundle(tmp_path / "usb", how)
    with pytest.raises(BundleError) as refused:
        unpack_bundle(tmp_path / "usb", None)
    assert str(tmp_path / "usb") in str(refused.value)
    with pytest.raises(BundleError):
        await import_bundle(high, tmp_path / "usb", NullReporter())
    assert not high.channel_dir.exists()
    assert not (high.state_dir / "bundle-staging").exists()
