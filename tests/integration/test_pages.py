"""Pages are written with every publish, from the same records, and can be turned off."""

from __future__ import annotations

from pathlib import Path

from mirror_engine.demo import build_channel
from tests.helpers import make_config, mirror, names, published


async def test_a_run_writes_channel_and_subdir_pages(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    config = make_config(tmp_path, channels=["pkgs"], platforms=["linux-64"], blacklist=["zlib"])
    await mirror(config)
    channel = (config.channel_dir / "index.html").read_text()
    assert "packages excluded: zlib" in channel and "data-name='numpy'" in channel and "data-name='zlib'" not in channel
    linux = (config.channel_dir / "linux-64" / "index.html").read_text()
    for filename in names(published(config, "linux-64")):
        assert f"<a href='{filename}'>" in linux


async def test_html_pages_false_writes_none(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    config = make_config(tmp_path, channels=["pkgs"], platforms=["noarch"], html_pages=False)
    await mirror(config)
    assert not list(config.mirror_dir.rglob("*.html"))
