"""CEP 48 v3 sections read as records, written back under their keys, and through the shards."""

from __future__ import annotations

import json

from mirror_engine.repodata import encode_index, holds_records, parse_repodata
from mirror_engine.shards import build_shards, read_shard, repodata_from_shards

RECORD = {"name": "zlib", "version": "1.3.1", "build": "h_0", "sha256": "ab" * 32, "size": 3}


def test_v3_keys_name_files_by_their_format_or_fn() -> None:
    v3: dict[str, dict[str, object]] = {
        "conda": {"zlib-1.3.1-h_0": RECORD, "odd": RECORD | {"fn": "zlib-1.3.1-h_1.conda"}},
        "tar.bz2": {"zlib-1.3.1-h_0.tar.bz2": RECORD},
        "future": {"x": RECORD},
    }
    doc = {"info": {"subdir": "linux-64"}, "v3": v3}
    repodata = parse_repodata(json.dumps(doc).encode(), "test")
    files = {(record.section, record.key, record.filename) for record in repodata.records}
    assert files == {
        ("v3.conda", "zlib-1.3.1-h_0", "zlib-1.3.1-h_0.conda"),
        ("v3.conda", "odd", "zlib-1.3.1-h_1.conda"),
        ("v3.tar.bz2", "zlib-1.3.1-h_0.tar.bz2", "zlib-1.3.1-h_0.tar.bz2"),
    }
    assert repodata.left_out == ("v3.future",)
    written = json.loads(encode_index("linux-64", [repodata], repodata.records))
    assert written["v3"] == {"conda": v3["conda"], "tar.bz2": v3["tar.bz2"]}


def test_a_v3_record_whose_fn_has_another_format_is_unusable() -> None:
    doc = {"v3": {"conda": {"zlib-1.3.1-h_0": RECORD | {"fn": "zlib-1.3.1-h_0.tar.bz2"}}}}
    (record,) = parse_repodata(json.dumps(doc).encode(), "test").records
    assert record.unusable_because() == "v3.conda record names a file without .conda"


def test_keys_without_records_are_carried_and_record_like_ones_left_out() -> None:
    doc = {
        "signatures": {"a-1-0.conda": {"key": {"signature": "00"}}},
        "channel_relations": {"base": "../other"},
        "packages.whl": {"w": RECORD},
        "nested": [{"deeper": {"still": RECORD}}],
    }
    repodata = parse_repodata(json.dumps(doc).encode(), "test")
    assert sorted(repodata.left_out) == ["nested", "packages.whl"]
    assert set(repodata.extra) == {"signatures", "channel_relations"}
    assert not holds_records({"v3": {"count": 4, "newest": 1}})


def test_v3_records_survive_a_round_trip_through_shards() -> None:
    doc = {"v3": {"conda": {"zlib-1.3.1-h_0": RECORD}}, "packages.conda": {"zlib-1.3.1-h_0.conda": RECORD}}
    records = parse_repodata(json.dumps(doc).encode(), "test").records
    (shard,) = build_shards(records)
    unpacked = read_shard(shard.data)
    assert set(unpacked["v3"]["conda"]) == {"zlib-1.3.1-h_0"}
    back = repodata_from_shards({"info": {}}, [unpacked], "test")
    assert {(r.section, r.key, r.filename) for r in back.records} == {
        ("packages.conda", "zlib-1.3.1-h_0.conda", "zlib-1.3.1-h_0.conda"),
        ("v3.conda", "zlib-1.3.1-h_0", "zlib-1.3.1-h_0.conda"),
    }
    assert {r.filename: r.raw for r in back.records}["zlib-1.3.1-h_0.conda"] == RECORD
