"""Every record section (legacy, CEP 48 `v3`, wheels) goes through the filters and the plan; keys of an
unknown shape are left out: a published index names only files the destination holds, verified."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rattler
from rattler import Gateway, SourceConfig, Subdir

from mirror_engine.destinations.s3 import S3Destination
from mirror_engine.engine import MirrorRun
from mirror_engine.explain import Query
from mirror_engine.filters import Verdict
from mirror_engine.progress import NullReporter
from mirror_engine.report import report_json
from tests.channel_server import ChannelServer
from tests.formats import BOTH, UNKNOWN, V3_BZ2, V3_GPL, V3_ONLY, V3_WHEEL, WHEEL, build_formats_channel
from tests.helpers import assert_index_sound, file_of, make_config, mirror, sections
from tests.s3_server import S3Server, seaweedfs, unique_prefix

SUBDIRS = ("linux-64", "noarch")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def published_files(doc: dict[str, Any]) -> set[str]:
    return {
        file_of(section, key, record) for section, entries in sections(doc).items() for key, record in entries.items()
    }


async def test_every_section_is_mirrored_and_unknown_keys_are_left_out(tmp_path: Path) -> None:
    docs = build_formats_channel(tmp_path / "up")
    config = make_config(tmp_path, channels=[(tmp_path / "up").as_uri()], platforms=["linux-64"])
    summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    linux = assert_index_sound(config, "linux-64", docs["linux-64"])
    noarch = assert_index_sound(config, "noarch", docs["noarch"])
    assert set(linux["v3"]["conda"]) == {"numpy-1.26.4-py311h64a7726_0", "gdbm-1.18-hd4cb3f1_4"}
    assert V3_ONLY not in linux["packages.conda"] and (config.channel_dir / "linux-64" / V3_ONLY).is_file()
    # Listed in packages.conda and v3.conda upstream: published in the first only (rattler refuses a file twice).
    assert BOTH in linux["packages.conda"] and "python-3.11.9-h955ad1f_0" not in linux["v3"]["conda"]
    assert {f"{key}.tar.bz2" for key in linux["v3"]["tar.bz2"]} == set(V3_BZ2)
    assert set(noarch["packages.whl"]) == {"attrs-23.2.0-pypi_0"} and set(noarch["v3"]["whl"]) == {"six-1.16.0-pypi_0"}
    assert (config.channel_dir / "noarch" / WHEEL).is_file() and (config.channel_dir / "noarch" / V3_WHEEL).is_file()
    for key in ("v4", "packages.future"):
        assert key not in linux
    assert "conda-v2" not in linux["v3"]
    assert linux["info"]["repodata_revisions"] == {
        "v3": {"n_packages": 4, "oldest": 1_700_000_000_000, "newest": 1_750_000_000_000, "message": "v3!"}
    }
    assert noarch["info"]["repodata_revisions"]["v3"]["n_packages"] == 1
    assert linux["signatures"] == docs["linux-64"]["signatures"]  # holds no records: carried as served
    assert summary.left_out == {"linux-64": set(UNKNOWN)}
    report = report_json(summary, mirror="m", started_at=0.0)
    assert report["left_out"] == {"linux-64": sorted(UNKNOWN)}
    # The same counts from an unchanged second run, which reads nothing.
    again = await mirror(config)
    assert again.unchanged == ["noarch", "linux-64"] and again.left_out == {"linux-64": set(UNKNOWN)}


async def test_every_filter_reaches_every_section(tmp_path: Path) -> None:
    docs = build_formats_channel(tmp_path / "up")
    run_exports = {
        "info": {"subdir": "linux-64"},
        "packages.conda": {},
        "v3": {"conda": {"gdbm-1.18-hd4cb3f1_4": {"run_exports": {}}, "numpy-1.26.4-py311h64a7726_0": {}}},
        "v4": {"conda": {"numpy-2-h0_0": {"name": "numpy", "version": "2"}}},
    }
    (tmp_path / "up" / "linux-64" / "run_exports.json").write_text(json.dumps(run_exports))
    config = make_config(
        tmp_path,
        channels=[(tmp_path / "up").as_uri()],
        platforms=["linux-64"],
        license_blacklist=["GPL3"],
        blacklist=["zlib", "attrs"],
    )
    assert (await mirror(config)).exit_code == 0
    everything = set()
    for subdir in SUBDIRS:
        doc = assert_index_sound(config, subdir, docs[subdir])
        names = {record["name"] for entries in sections(doc).values() for record in entries.values()}
        assert not names & {"readline", "gdbm", "zlib", "attrs"}, names
        everything |= published_files(doc)
    assert "six" in {
        r["name"] for r in sections(assert_index_sound(config, "noarch", docs["noarch"]))["v3.whl"].values()
    }
    held = {path.name for path in config.channel_dir.glob("*/*") if path.suffix in (".conda", ".bz2", ".whl")}
    assert held == everything and V3_GPL not in held and WHEEL not in held
    sidecar = json.loads((config.channel_dir / "linux-64" / "run_exports.json").read_text())
    assert sidecar["v3"] == {"conda": {"numpy-1.26.4-py311h64a7726_0": {}}} and "v4" not in sidecar


async def test_pkg_list_and_its_dependencies_reach_v3_records(tmp_path: Path) -> None:
    docs = build_formats_channel(tmp_path / "up")
    alone = make_config(
        tmp_path / "a", channels=[(tmp_path / "up").as_uri()], platforms=["linux-64"], pkg_list=["numpy"]
    )
    assert (await mirror(alone)).exit_code == 0
    doc = assert_index_sound(alone, "linux-64", docs["linux-64"])
    assert published_files(doc) == {V3_ONLY, "numpy-1.26.4-py310hb13e2d6_0.conda"}
    closed = make_config(
        tmp_path / "b",
        channels=[(tmp_path / "up").as_uri()],
        platforms=["linux-64"],
        pkg_list=["numpy"],
        python_versions=["3.11"],
        include_dependencies=True,
    )
    assert (await mirror(closed)).exit_code == 0
    doc = assert_index_sound(closed, "linux-64", docs["linux-64"])
    # numpy (v3 only) needs python 3.11 (packages.conda and v3.conda) and python_abi (packages.conda).
    assert set(doc["v3"]["conda"]) == {V3_ONLY.removesuffix(".conda")}
    assert {BOTH, "python_abi-3.11-2_cp311.conda"} <= set(doc["packages.conda"])


async def test_prefer_conda_drops_a_tar_bz2_whose_build_is_there_as_conda(tmp_path: Path) -> None:
    docs = build_formats_channel(tmp_path / "up")
    config = make_config(tmp_path, channels=[(tmp_path / "up").as_uri()], platforms=["linux-64"], prefer_conda=True)
    summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    doc = assert_index_sound(config, "linux-64", docs["linux-64"])
    # python's .tar.bz2 (packages), zlib's and readline's (v3.tar.bz2): each has a .conda in packages.conda.
    assert doc["packages"] == {} and doc["v3"]["tar.bz2"] == {}
    assert summary.verdicts[Verdict.FORMAT] == 3
    assert not list((config.channel_dir / "linux-64").glob("*.tar.bz2"))
    lines = await MirrorRun(config, _local(config), NullReporter()).explain(Query.parse("zlib"))
    assert any("zlib-1.3.1-h5eee18b_0.tar.bz2: not mirrored; dropped by prefer_conda" in line for line in lines), lines
    without = make_config(tmp_path / "b", channels=[(tmp_path / "up").as_uri()], platforms=["linux-64"])
    assert (await mirror(without)).exit_code == 0
    assert len(list((without.channel_dir / "linux-64").glob("*.tar.bz2"))) == 3


def _local(config: Any) -> Any:
    from mirror_engine.destinations.local import LocalDestination

    return LocalDestination(config.channel_dir)


async def test_rattler_installs_a_v3_only_package_from_a_mirror_of_an_http_upstream(tmp_path: Path) -> None:
    docs = build_formats_channel(tmp_path / "up")
    async with ChannelServer(tmp_path / "up") as upstream:
        config = make_config(tmp_path, channels=[upstream.url], platforms=["linux-64"])
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    for subdir in SUBDIRS:
        assert_index_sound(config, subdir, docs[subdir])
    async with ChannelServer(config.channel_dir) as served:
        gateway = Gateway(cache_dir=tmp_path / "cache", default_config=SourceConfig(sharded_enabled=True))
        platforms = [Subdir("linux-64"), Subdir("noarch")]
        records = await rattler.solve(
            sources=[served.url], specs=["numpy ==1.26.4 py311*"], platforms=platforms, gateway=gateway
        )
        solved = {record.name.normalized: record for record in records}
        assert solved["numpy"].url == f"{served.url}linux-64/{V3_ONLY}"
        assert str(solved["python"].version) == "3.11.9"
        await rattler.install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "pkgs", show_progress=False)
    assert (tmp_path / "env" / "share" / "numpy" / "data.bin").stat().st_size == 400_000
    assert served.fetched(f"/linux-64/{V3_ONLY}")
    assert any(path.startswith("/linux-64/shards/") for _, path in served.requests)  # v3 records, from shards


async def test_every_section_lands_in_s3_as_in_a_folder(tmp_path: Path, s3: S3Server) -> None:
    docs = build_formats_channel(tmp_path / "up")
    prefix = unique_prefix()
    config = make_config(
        tmp_path, channels=[(tmp_path / "up").as_uri()], platforms=["linux-64"], destination=s3.destination(prefix)
    )
    destination = S3Destination.from_config(
        config, config.state_dir / "staging" / config.dest_channel, session=s3.session
    )
    summary = await MirrorRun(config, destination, NullReporter(), rng=random.Random(1)).run()
    assert summary.exit_code == 0, summary.failures
    assert summary.left_out == {"linux-64": set(UNKNOWN)}
    readback = make_config(tmp_path / "readback", channels=[(tmp_path / "up").as_uri()])
    await s3.download(f"{prefix}/{config.dest_channel}/", readback.channel_dir)
    for subdir in SUBDIRS:
        assert_index_sound(readback, subdir, docs[subdir])
    assert (readback.channel_dir / "linux-64" / V3_ONLY).is_file() and (
        readback.channel_dir / "noarch" / WHEEL
    ).is_file()
    # A second run lists the wheels and v3 files as held: nothing fetched again, nothing deleted.
    again = await MirrorRun(config, S3Destination.from_config(config, config.state_dir / "s2", session=s3.session),
                            NullReporter()).run()  # fmt: skip
    assert again.exit_code == 0 and again.unchanged == ["noarch", "linux-64"]
    assert sum(row.downloaded for row in again.rows.values()) == 0 and not any(again.deleted.values())


async def test_a_wheel_elsewhere_or_a_v3_record_naming_another_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "up"
    docs = build_formats_channel(root)
    noarch = docs["noarch"]
    elsewhere = dict(noarch["packages.whl"]["attrs-23.2.0-pypi_0"], url=f"https://files.example/{WHEEL}")
    noarch["packages.whl"]["attrs-23.2.0-pypi_1"] = elsewhere
    linux = docs["linux-64"]
    linux["v3"]["conda"]["numpy-9-h0_0"] = dict(linux["v3"]["conda"][V3_ONLY.removesuffix(".conda")], fn=V3_ONLY)
    for subdir, doc in docs.items():
        (root / subdir / "repodata.json").write_text(json.dumps(doc))
        (root / subdir / "repodata.json.zst").unlink()
    config = make_config(tmp_path, channels=[root.as_uri()], platforms=["linux-64"])
    summary = await mirror(config)
    problems = dict(summary.failures)
    assert "is not a file beside the index" in problems[f"{root}/noarch/https://files.example/{WHEEL}"]
    assert (
        "fn 'numpy-1.26.4-py311h64a7726_0.conda' is not 'numpy-9-h0_0.conda'"
        in problems[f"{root}/linux-64/numpy-9-h0_0.conda"]
    )
    assert "attrs-23.2.0-pypi_1" not in assert_index_sound(config, "noarch", noarch)["packages.whl"]
    assert "numpy-9-h0_0" not in assert_index_sound(config, "linux-64", linux)["v3"]["conda"]
