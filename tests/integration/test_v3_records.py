"""CEP 48 `v3` records go through the filters like any other, and keys holding records we cannot read are
left out: against real indexes served over file:// and HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import rattler
from rattler import Gateway, SourceConfig, Subdir

from mirror_engine.demo import DemoPackage, build_channel
from mirror_engine.report import report_json
from tests.channel_server import ChannelServer
from tests.helpers import assert_all_sections_sound, make_config, mirror

PACKAGES = (
    DemoPackage("zlib", "1.3.1", "h5eee18b_0", license="Zlib"),
    DemoPackage("ncurses", "6.4", "h6a678d5_0", license="MIT"),
    DemoPackage("libffi", "3.4.4", "h6a678d5_1", license="MIT", formats=(".tar.bz2",)),
    DemoPackage("gdbm", "1.18", "hd4cb3f1_4", license="GPL-3.0-or-later"),
    DemoPackage("readline", "8.2", "h5eee18b_0", license="GPL-3.0-only"),
    DemoPackage("tzdata", "2024a", "h0c530f3_0", subdir="noarch", noarch="generic"),
)
WHEEL, V3_WHEEL = "wheelie-1.0-py3-none-any.whl", "spinner-2.0-py3-none-any.whl"


def wheel_record(folder: Path, filename: str, **fields: Any) -> dict[str, Any]:
    """A pure-Python wheel written into `folder`, and its record as the wheels draft has it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(f"{filename.split('-')[0]}/__init__.py", (2024, 1, 1, 0, 0, 0)), filename)
    data = buffer.getvalue()
    (folder / filename).write_bytes(data)
    name, version = filename.split("-")[:2]
    record = {"name": name, "version": version, "build": "py3_0", "build_number": 0, "depends": ["python >=3.8"]}
    return record | {"fn": filename, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} | fields


def v3_channel(root: Path) -> dict[str, Any]:
    """linux-64 with zlib in packages.conda and v3.conda, ncurses and libffi only in v3 (libffi naming its
    file by `fn` too), gdbm (blacklisted) only in v3, a wheel in packages.whl and v3.whl and one only in v3.whl,
    and two keys of records in a shape not known (`v4`, `v3.future`)."""
    doc = build_channel(root, PACKAGES, zst=False)["linux-64"]
    wheel = wheel_record(root / "linux-64", WHEEL, timestamp=1_700_000_000_000)
    v3_wheel = wheel_record(root / "linux-64", V3_WHEEL, indexed_timestamp=1_760_000_000_000)
    conda, bz2 = doc["packages.conda"], doc.pop("packages")
    doc["v3"] = {
        "conda": {
            "zlib-1.3.1-h5eee18b_0": conda["zlib-1.3.1-h5eee18b_0.conda"],
            "ncurses-6.4-h6a678d5_0": conda.pop("ncurses-6.4-h6a678d5_0.conda"),
            "gdbm-1.18-hd4cb3f1_4": conda.pop("gdbm-1.18-hd4cb3f1_4.conda"),
        },
        "tar.bz2": {
            "libffi-3.4.4-h6a678d5_1": bz2["libffi-3.4.4-h6a678d5_1.tar.bz2"]
            | {"fn": "libffi-3.4.4-h6a678d5_1.tar.bz2"},
        },
        "whl": {"wheelie-1.0-py3-none-any": wheel, "spinner-2.0-py3-none-any": v3_wheel},
        "future": {"numpy-2.0-h0_0": conda["zlib-1.3.1-h5eee18b_0.conda"] | {"name": "numpy"}},
    }
    doc["packages.whl"] = {WHEEL: wheel}
    doc["v4"] = {"conda": {"tzdata-2099a-h0_0": conda["zlib-1.3.1-h5eee18b_0.conda"] | {"name": "tzdata"}}}
    doc["signatures"] = {"zlib-1.3.1-h5eee18b_0.conda": {"key": {"signature": "00"}}}
    doc["info"]["repodata_revisions"] = {"v3": {"count": 4}}
    (root / "linux-64" / "repodata.json").write_text(json.dumps(doc, indent=1))
    return doc


@asynccontextmanager
async def channel_url(root: Path, how: str) -> AsyncIterator[str]:
    if how == "file":
        yield root.as_uri()
        return
    async with ChannelServer(root) as server:
        yield server.url


@pytest.mark.parametrize("how", ["file", "http"])
async def test_v3_records_are_filtered_fetched_and_published(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "upstream"
    upstream = v3_channel(root)
    caplog.set_level(logging.WARNING)
    async with channel_url(root, how) as url:
        config = make_config(tmp_path, channels=[url], platforms=["linux-64"], blacklist=["gdbm"])
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    doc = assert_all_sections_sound(config, "linux-64", upstream, filtered={"gdbm"})
    assert set(doc["v3"]) == {"conda", "tar.bz2", "whl"}
    assert set(doc["v3"]["conda"]) == {"zlib-1.3.1-h5eee18b_0", "ncurses-6.4-h6a678d5_0"}
    assert set(doc["v3"]["tar.bz2"]) == {"libffi-3.4.4-h6a678d5_1"}
    assert set(doc["packages.conda"]) == {"zlib-1.3.1-h5eee18b_0.conda", "readline-8.2-h5eee18b_0.conda"}
    assert doc["signatures"] == upstream["signatures"]  # holds no records: carried
    assert set(doc["packages.whl"]) == {WHEEL}
    assert set(doc["v3"]["whl"]) == {"wheelie-1.0-py3-none-any", "spinner-2.0-py3-none-any"}
    assert "v4" not in doc
    suffixes = (".conda", ".tar.bz2", ".whl")
    held = {p.name for p in (config.channel_dir / "linux-64").iterdir() if p.name.endswith(suffixes)}
    assert held == {
        "zlib-1.3.1-h5eee18b_0.conda",
        "ncurses-6.4-h6a678d5_0.conda",
        "libffi-3.4.4-h6a678d5_1.tar.bz2",
        "readline-8.2-h5eee18b_0.conda",
        WHEEL,
        V3_WHEEL,
    }
    # one file named by two sections is one file: six files, not eight
    assert sum(row.selected for (_, subdir), row in summary.rows.items() if subdir == "linux-64") == 6
    assert [what.rsplit("/", 1)[1] for what in summary.left_out] == ["linux-64: v3.future", "linux-64: v4"]
    assert report_json(summary, mirror="m", started_at=0)["left_out"] == summary.left_out
    warnings = [r.getMessage() for r in caplog.records if "shape the mirror does not know" in r.getMessage()]
    assert len(warnings) == 2
    assert all("linux-64" in message for message in warnings)
    assert any("'v4'" in message for message in warnings)


async def test_v3_record_bytes_are_upstreams_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    v3_channel(root)
    config = make_config(tmp_path, channels=[root.as_uri()], platforms=["linux-64"], blacklist=["gdbm"])
    assert (await mirror(config)).exit_code == 0
    served = (root / "linux-64" / "repodata.json").read_bytes()
    raw = msgspec.json.decode(served, type=dict[str, msgspec.Raw])
    v3 = msgspec.json.decode(raw["v3"], type=dict[str, dict[str, msgspec.Raw]])
    mirrored = (config.channel_dir / "linux-64" / "repodata.json").read_bytes()
    for key in ("zlib-1.3.1-h5eee18b_0", "ncurses-6.4-h6a678d5_0"):
        assert b"\n" in bytes(v3["conda"][key])  # upstream's indented form, not a re-encoding of it
        assert b'"%s":%s' % (key.encode(), bytes(v3["conda"][key])) in mirrored


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata.json"])
async def test_rattler_solves_and_installs_v3_records_from_the_mirror(tmp_path: Path, sharded: bool) -> None:
    """zlib is listed in packages.conda and v3.conda, ncurses and libffi only in v3: rattler finds each
    once and installs them from the mirror, from its shards or from its repodata.json."""
    root = tmp_path / "upstream"
    v3_channel(root)
    async with ChannelServer(root) as upstream:
        config = make_config(tmp_path, channels=[upstream.url], platforms=["linux-64"], blacklist=["gdbm"])
        assert (await mirror(config)).exit_code == 0
    async with ChannelServer(config.channel_dir) as served:
        gateway = Gateway(cache_dir=tmp_path / "cache", default_config=SourceConfig(sharded_enabled=sharded))
        records = await rattler.solve(
            sources=[served.url],
            specs=["zlib", "ncurses", "libffi"],
            platforms=[Subdir("linux-64"), Subdir("noarch")],
            gateway=gateway,
        )
        assert sorted(str(record.file_name) for record in records) == [
            "libffi-3.4.4-h6a678d5_1.tar.bz2",
            "ncurses-6.4-h6a678d5_0.conda",
            "zlib-1.3.1-h5eee18b_0.conda",
        ]
        await rattler.install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "pkgs", show_progress=False)
        fetched = [path for method, path in served.requests if method == "GET"]
    for name in ("zlib", "ncurses", "libffi"):
        assert (tmp_path / "env" / "share" / name).is_dir(), name
    assert any("/shards/" in path for path in fetched) == sharded
