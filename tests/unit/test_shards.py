"""CEP-16 shards: records in equal records out, the same input gives the same bytes, names are sha256s."""

from __future__ import annotations

import copy
import hashlib
import random
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror_engine.errors import BadRepodata
from mirror_engine.repodata import Record
from mirror_engine.shards import (
    SHARD_INDEX_VERSION,
    Shard,
    _pack,
    build_shard_index,
    build_shards,
    name_from_filename,
    read_shard,
    read_shard_index,
)


def hexdigest(text: str, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, text.encode(), usedforsecurity=False).hexdigest()


def record(name: str, version: str = "1.0", build: str = "h1_0", ext: str = ".conda", **extra: Any) -> Record:
    filename = f"{name}-{version}-{build}{ext}"
    raw: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": ["python >=3.8", "zlib"],
        "subdir": "linux-64",
        "size": 1234,
        "timestamp": 1_700_000_000_000,
        "md5": hexdigest(filename, "md5"),
        "sha256": hexdigest(filename),
    }
    raw.update(extra)
    raw = {key: value for key, value in raw.items() if value is not None}  # extra=None drops a field
    return Record.of(filename, "packages.conda" if ext == ".conda" else "packages", raw)


def unpacked(value: Any) -> Any:
    """A shard record back as repodata.json has it: raw digests as lower-case hex."""
    return {
        key: item.hex() if key in ("sha256", "md5") and isinstance(item, bytes) else item for key, item in value.items()
    }


def records_out(shards: list[Shard]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for shard in shards:
        doc = read_shard(shard.data)
        for section in ("packages", "packages.conda"):
            for filename, rec in doc[section].items():
                out[(section, filename)] = unpacked(rec)
    return out


CHANNEL = [
    record("python", "3.11.9", "h955ad1f_0"),
    record("python", "3.11.9", "h955ad1f_0", ext=".tar.bz2"),
    record("python", "3.10.14", "h955ad1f_1"),
    record("numpy", "1.26.4", "py311h64a7726_0", constrains=["numpy-base <0a0"]),
    record("python-dateutil", "2.9.0", "pyhd8ed1ab_0", noarch="python", subdir="noarch"),
    record("zlib", "1.3.1", "h5eee18b_0", license="Zlib", extra_field={"nested": [1, {"b": 2, "a": None}]}),
]


def test_records_round_trip_with_digests_as_raw_bytes() -> None:
    shards = build_shards(CHANNEL)
    assert [shard.name for shard in shards] == ["numpy", "python", "python-dateutil", "zlib"]
    assert records_out(shards) == {(r.section, r.filename): r.raw for r in CHANNEL}
    python = read_shard(shards[1].data)
    assert set(python) == {"packages", "packages.conda", "removed"}
    assert list(python["packages.conda"]) == ["python-3.10.14-h955ad1f_1.conda", "python-3.11.9-h955ad1f_0.conda"]
    assert list(python["packages"]) == ["python-3.11.9-h955ad1f_0.tar.bz2"]
    rec = python["packages"]["python-3.11.9-h955ad1f_0.tar.bz2"]
    assert rec["sha256"] == bytes.fromhex(hexdigest("python-3.11.9-h955ad1f_0.tar.bz2"))
    assert len(rec["sha256"]) == 32 and len(rec["md5"]) == 16
    assert list(rec) == sorted(rec)
    assert python["removed"] == []


def test_every_section_is_written_even_when_empty() -> None:
    # rattler's Shard has no default for "packages": a shard without it fails to parse.
    (shard,) = build_shards([record("numpy")])
    doc = read_shard(shard.data)
    assert list(doc) == ["packages", "packages.conda", "removed"]
    assert (doc["packages"], list(doc["packages.conda"]), doc["removed"]) == ({}, ["numpy-1.0-h1_0.conda"], [])


def test_same_records_in_another_order_give_identical_bytes() -> None:
    first = build_shards(CHANNEL)
    shuffled = CHANNEL.copy()
    random.Random(7).shuffle(shuffled)
    again = build_shards(reversed(shuffled))
    assert first == again
    assert build_shard_index("linux-64", first) == build_shard_index("linux-64", reversed(again))


def test_key_order_of_upstream_json_does_not_change_the_bytes() -> None:
    reordered = [Record.of(r.filename, r.section, dict(reversed(list(r.raw.items())))) for r in CHANNEL]
    assert build_shards(reordered) == build_shards(CHANNEL)


def test_a_changed_record_changes_only_its_own_shard() -> None:
    before = {shard.name: shard for shard in build_shards(CHANNEL)}
    patched = [
        Record.of(r.filename, r.section, {**r.raw, "depends": ["python >=3.9"]}) if r.name == "numpy" else r
        for r in CHANNEL
    ]
    after = {shard.name: shard for shard in build_shards(patched)}
    assert after["numpy"].sha256 != before["numpy"].sha256
    assert {name: s for name, s in after.items() if name != "numpy"} == {
        name: s for name, s in before.items() if name != "numpy"
    }


def test_file_name_is_the_sha256_of_the_compressed_bytes() -> None:
    for shard in build_shards(CHANNEL):
        assert shard.sha256 == hashlib.sha256(shard.data).digest()
        assert shard.filename == f"{hashlib.sha256(shard.data).hexdigest()}.msgpack.zst"
        assert zstandard.ZstdDecompressor().decompressobj().decompress(shard.data)  # plain zstd frame


def test_index_maps_each_name_to_its_shard_sha256() -> None:
    shards = build_shards(CHANNEL)
    index = read_shard_index(build_shard_index("linux-64", shards))
    assert index == {
        "version": SHARD_INDEX_VERSION,
        "info": {"base_url": "./", "shards_base_url": "./shards/", "subdir": "linux-64"},
        "shards": {shard.name: shard.sha256 for shard in shards},
    }
    assert all(isinstance(digest, bytes) and len(digest) == 32 for digest in index["shards"].values())
    assert list(index["shards"]) == sorted(index["shards"])


def test_index_created_at_is_written_only_when_given() -> None:
    shards = build_shards(CHANNEL)
    stamped = read_shard_index(build_shard_index("noarch", shards, created_at="2024-07-22T10:00:00Z"))
    assert stamped["info"]["created_at"] == "2024-07-22T10:00:00Z"
    assert stamped["info"]["subdir"] == "noarch"
    assert "created_at" not in read_shard_index(build_shard_index("noarch", shards))["info"]
    for bad in ("yesterday", "2024-07-22", "2024-07-22T10:00:00", "2024-13-22T10:00:00Z"):
        with pytest.raises(ValueError):
            build_shard_index("noarch", shards, created_at=bad)


def test_removed_goes_to_the_shard_of_the_name_it_spells() -> None:
    removed = [
        "python-dateutil-2.8.0-py_0.tar.bz2",  # the name has a dash of its own
        "python-3.9.0-h1_0.conda",
        "python-3.9.0-h1_0.conda",  # duplicates collapse
        "python-3.8.0-h1_0.tar.bz2",
        "scipy-1.0-h1_0.conda",  # no shard for scipy: dropped
        "README.md",  # not a package file name
        "nodashes.conda",
    ]
    shards = {shard.name: read_shard(shard.data) for shard in build_shards(CHANNEL, removed)}
    assert shards["python-dateutil"]["removed"] == ["python-dateutil-2.8.0-py_0.tar.bz2"]
    assert shards["python"]["removed"] == ["python-3.8.0-h1_0.tar.bz2", "python-3.9.0-h1_0.conda"]
    assert shards["numpy"]["removed"] == shards["zlib"]["removed"] == []
    assert set(shards) == {"numpy", "python", "python-dateutil", "zlib"}


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("python-dateutil-2.9.0-pyhd8ed1ab_0.conda", "python-dateutil"),
        ("_libgcc_mutex-0.1-main.tar.bz2", "_libgcc_mutex"),
        ("PyQt-5.9.2-py37h05f1152_2.tar.bz2", "pyqt"),
        ("a-1-0.conda", "a"),
        ("-1-0.conda", None),
        ("numpy-1.26.4.conda", None),
        ("numpy-1.26.4-py311_0.whl", None),
        (".hidden-1-0.conda", None),
    ],
)
def test_name_from_filename(filename: str, name: str | None) -> None:
    assert name_from_filename(filename) == name


def test_raw_records_are_not_mutated() -> None:
    before = copy.deepcopy([r.raw for r in CHANNEL])
    shards = build_shards(CHANNEL, ["python-3.9.0-h1_0.conda"])
    assert [r.raw for r in CHANNEL] == before
    assert all(isinstance(r.raw["sha256"], str) for r in CHANNEL)
    build_shard_index("linux-64", shards, created_at="2024-07-22T10:00:00+02:00")
    assert [r.raw for r in CHANNEL] == before


def test_md5_only_and_odd_digests() -> None:
    md5_only = record("oldpkg", sha256=None)
    bad_sha = record("badsha", sha256="not-hex")
    upper = record("upper", sha256=hexdigest("x").upper())
    spaced = record("spaced", sha256=hexdigest("y")[:62] + " 0")  # 64 characters that fromhex would take
    out = {shard.name: read_shard(shard.data) for shard in build_shards([md5_only, bad_sha, upper, spaced])}
    old = out["oldpkg"]["packages.conda"][md5_only.filename]
    assert "sha256" not in old
    assert old["md5"] == bytes.fromhex(hexdigest(md5_only.filename, "md5"))
    assert out["badsha"]["packages.conda"][bad_sha.filename]["sha256"] == "not-hex"  # verbatim, as in the JSON
    assert out["upper"]["packages.conda"][upper.filename]["sha256"] == bytes.fromhex(hexdigest("x"))
    assert out["spaced"]["packages.conda"][spaced.filename]["sha256"] == hexdigest("y")[:62] + " 0"


def test_names_are_keyed_lower_case_and_nameless_records_are_left_out() -> None:
    mixed = record("PyQt", "5.9.2", "py37_2")
    nameless = Record.of("ghost-1.0-0.conda", "packages.conda", {"version": "1.0", "size": 1})
    (shard,) = build_shards([mixed, nameless])
    assert shard.name == "pyqt"
    assert read_shard(shard.data)["packages.conda"][mixed.filename]["name"] == "PyQt"
    assert build_shards([]) == []
    assert read_shard_index(build_shard_index("linux-64", []))["shards"] == {}


def test_a_later_duplicate_replaces_an_earlier_one() -> None:
    first = record("numpy", license="BSD")
    second = record("numpy", license="MIT")
    (shard,) = build_shards([first, second])
    assert read_shard(shard.data)["packages.conda"][first.filename]["license"] == "MIT"


def test_unreadable_shards_are_bad_repodata() -> None:
    with pytest.raises(BadRepodata, match=r"^shard: not valid zstd"):
        read_shard(b"not zstd")
    with pytest.raises(BadRepodata, match=r"^x/shards/a\.msgpack\.zst: not valid msgpack"):
        read_shard(zstandard.ZstdCompressor().compress(b"\xc1"), "x/shards/a.msgpack.zst")
    with pytest.raises(BadRepodata, match="top level is not a map"):
        read_shard_index(zstandard.ZstdCompressor().compress(b"\x93\x01\x02\x03"))  # [1, 2, 3]


def test_shard_sha256_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 raw bytes"):
        Shard("numpy", b"data", hashlib.sha256(b"data").hexdigest().encode())


NAMES = ["a", "b", "py-x", "py-x-y", "Cc"]
JSON_INTS = st.integers(-(2**63), 2**64 - 1)  # what orjson reads, and so what upstream records can hold


@st.composite
def record_sets(draw: st.DrawFn) -> list[Record]:
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(NAMES),
                st.sampled_from(["1.0", "2.0.1", "10"]),
                st.sampled_from(["h0_0", "py_1"]),
                st.sampled_from([".conda", ".tar.bz2"]),
            ),
            unique=True,
            max_size=12,
        )
    )
    out = []
    for name, version, build, ext in keys:
        extra = draw(
            st.dictionaries(
                st.sampled_from(["license", "noarch", "constrains", "track_features", "sha256", "md5"]),
                st.none() | st.text(max_size=5) | st.lists(st.text(max_size=3), max_size=3) | JSON_INTS,
                max_size=3,
            )
        )
        extra = {key: value for key, value in extra.items() if value is not None or key not in ("sha256", "md5")}
        out.append(record(name, version, build, ext, **extra))
    return out


@settings(max_examples=200, deadline=None)
@given(recs=record_sets(), seed=st.integers(0, 1000), removed=st.lists(st.sampled_from(NAMES), max_size=3))
def test_property_shards_partition_records_and_ignore_order(recs: list[Record], seed: int, removed: list[str]) -> None:
    gone = [f"{name}-0.1-h0_0.conda" for name in removed]
    before = copy.deepcopy([r.raw for r in recs])
    shards = build_shards(recs, gone)
    assert [r.raw for r in recs] == before
    # each record lands once, in the shard of its lower-cased name, and comes back as it went in
    assert records_out(shards) == {(r.section, r.filename): r.raw for r in recs}
    for shard in shards:
        doc = read_shard(shard.data)
        assert {rec["name"].lower() for section in ("packages", "packages.conda") for rec in doc[section].values()} == {
            shard.name
        }
        assert doc["removed"] == sorted({f for f in gone if name_from_filename(f) == shard.name})
        assert shard.sha256 == hashlib.sha256(shard.data).digest()
    assert [s.name for s in shards] == sorted({r.name.lower() for r in recs})
    # the same set in any order gives the same bytes
    shuffled = recs.copy()
    random.Random(seed).shuffle(shuffled)
    assert build_shards(shuffled, reversed(gone)) == shards
    index = read_shard_index(build_shard_index("linux-64", reversed(shards)))
    assert index["shards"] == {s.name: s.sha256 for s in shards}


def test_packing_sorts_every_map_all_the_way_down_as_msgpack_would() -> None:
    doc = {"b": {"z": 1, "a": [{"y": 2, "x": b"\x00\x01"}]}, "a": "text", "c": 2**40, "d": 1.5}
    packed = _pack(doc)
    assert msgpack.unpackb(packed, raw=False) == doc
    in_order = {"a": "text", "b": {"a": [{"x": b"\x00\x01", "y": 2}], "z": 1}, "c": 2**40, "d": 1.5}
    assert packed == msgpack.packb(in_order, use_bin_type=True)  # shard names did not change with the encoder


def test_an_integer_msgpack_cannot_hold_is_a_one_line_error_not_a_crash() -> None:
    huge = record("huge", x=2**70)
    with pytest.raises(BadRepodata, match=r"^a record of 'huge' holds an integer too large for a CEP-16 shard$"):
        build_shards([huge])
