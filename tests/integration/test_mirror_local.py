"""Local channels: a file:// URL and a plain path, as for an extracted air-gap tarball."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror_engine.demo import build_channel
from tests.helpers import assert_index_sound, leftovers, make_config, mirror, names


@pytest.mark.parametrize("spelling", ["file_url", "absolute_path", "relative_path"])
async def test_local_channel(tmp_path: Path, spelling: str) -> None:
    root = tmp_path / "tarball" / "pkgs"
    docs = build_channel(root, channeldata=False)
    channel = {"file_url": root.as_uri(), "absolute_path": str(root), "relative_path": "tarball/pkgs"}[spelling]
    config = make_config(tmp_path, channels=[channel], blacklist=["python"])
    summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    for subdir in ("linux-64", "noarch"):
        doc = assert_index_sound(config, subdir, docs[subdir])
        assert not any(name.startswith("python-") for name in names(doc))
    assert not leftovers(tmp_path)


async def test_local_file_that_does_not_match_its_record_fails(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    docs = build_channel(root)
    (root / "noarch" / "tzdata-2024a-h0c530f3_0.conda").write_bytes(b"truncated")
    config = make_config(tmp_path, channels=[str(root)], platforms=["noarch"], retries=0)
    summary = await mirror(config)
    assert summary.exit_code == 1
    assert "tzdata-2024a-h0c530f3_0.conda" in summary.failures[0][0]
    assert "tzdata-2024a-h0c530f3_0.conda" not in names(assert_index_sound(config, "noarch", docs["noarch"]))


async def test_noarch_index_exists_even_when_no_channel_has_noarch(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    build_channel(root)
    import shutil

    shutil.rmtree(root / "noarch")
    config = make_config(tmp_path, channels=[str(root)], platforms=["linux-64"], pkg_list=["zlib"])
    summary = await mirror(config)
    assert summary.exit_code == 0
    assert (config.channel_dir / "noarch" / "repodata.json").exists()
    assert (config.channel_dir / "noarch" / "repodata.json.zst").exists()


async def test_existing_corrupt_copy_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "pkgs"
    docs = build_channel(root)
    config = make_config(tmp_path, channels=[str(root)], platforms=["noarch"])
    await mirror(config)
    target = config.channel_dir / "noarch" / "tzdata-2024a-h0c530f3_0.conda"
    target.write_bytes(bytes(target.stat().st_size))  # same size, wrong bytes: bit rot
    summary = await mirror(config)
    assert summary.exit_code == 0
    row = summary.rows[(0, "noarch")]
    assert (row.present, row.downloaded) == (2, 1)
    assert_index_sound(config, "noarch", docs["noarch"])
