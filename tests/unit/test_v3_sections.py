"""CEP 48 v3 sections and wheels read as records, written back under their keys, and through the shards;
revisions counted again."""

from __future__ import annotations

import json

from mirror_engine.repodata import Record, encode_index, holds_records, parse_repodata, recount_revisions
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
    odd = next(record for record in repodata.records if record.key == "odd")
    assert odd.unusable_because() == "v3.conda key 'odd' is not its file name 'zlib-1.3.1-h_1.conda' without .conda"
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
        "packages.future": {"w": RECORD},
        "nested": [{"deeper": {"still": RECORD}}],
    }
    repodata = parse_repodata(json.dumps(doc).encode(), "test")
    assert sorted(repodata.left_out) == ["nested", "packages.future"]
    assert set(repodata.extra) == {"signatures", "channel_relations"}
    assert not holds_records({"v3": {"count": 4, "newest": 1}})


WHEEL = {"name": "requests", "version": "2.32.5", "build": "py3_0", "sha256": "cd" * 32, "size": 9}


def test_wheel_records_are_named_by_key_or_fn_and_read_whatever_pkg_list_says() -> None:
    doc = {
        "packages.whl": {
            "requests-2.32.5-py3-none-any.whl": WHEEL,
            "charset-normalizer-3.3.2-py3_0": WHEEL
            | {"name": "charset-normalizer", "fn": "charset_normalizer-3.3.2-py3-none-any.whl"},
        },
        "v3": {"whl": {"idna-3.10-py3-none-any": WHEEL | {"name": "idna"}}},
    }
    # pkg_list asks for charset-normalizer: its wheel's file name spells charset_normalizer, so wheels are
    # never passed over by file name (were they, this record would be lost: unread 1)
    repodata = parse_repodata(json.dumps(doc).encode(), "test", names=lambda name: name == "charset-normalizer")
    assert repodata.unread == 0
    files = {(record.section, record.key, record.filename) for record in repodata.records}
    assert files == {
        ("packages.whl", "requests-2.32.5-py3-none-any.whl", "requests-2.32.5-py3-none-any.whl"),
        ("packages.whl", "charset-normalizer-3.3.2-py3_0", "charset_normalizer-3.3.2-py3-none-any.whl"),
        ("v3.whl", "idna-3.10-py3-none-any", "idna-3.10-py3-none-any.whl"),
    }
    assert all(record.unusable_because() is None for record in repodata.records)
    assert repodata.sections == ("packages.whl", "v3.whl") and repodata.left_out == ()
    written = json.loads(encode_index("noarch", [repodata], repodata.records))
    assert written["packages.whl"] == doc["packages.whl"] and written["v3"] == doc["v3"]
    # a section upstream has stays, empty, when nothing in it is kept
    assert json.loads(encode_index("noarch", [repodata], []))["packages.whl"] == {}


def test_a_wheel_record_naming_no_wheel_is_unusable() -> None:
    doc = {"packages.whl": {"x": WHEEL | {"fn": "requests-2.32.5-py3_0.conda"}}}
    (record,) = parse_repodata(json.dumps(doc).encode(), "test").records
    assert record.unusable_because() == "packages.whl record names a file without .whl"


def _stamped(filename: str, **stamps: int) -> Record:
    return Record.of(filename, "packages.conda", RECORD | stamps)


def test_repodata_revisions_are_counted_for_what_is_published() -> None:
    v1 = [_stamped("a-1-0.conda", timestamp=5), _stamped("b-1-0.conda", indexed_timestamp=9, timestamp=1)]
    v3 = [Record.of(f"c-{n}-0.conda", "v3.conda", RECORD | {"indexed_timestamp": n}, f"c-{n}-0") for n in (3, 7)]
    v3.append(Record.of("d-1-0.conda", "v3.conda", RECORD, "d-1-0"))  # no stamp: counted, not dated
    listed = [{"revision": 3, "n_packages": 40, "oldest": 1, "newest": 99, "message": "v3 is here"}]
    assert recount_revisions(listed, [*v1, *v3]) == [
        {"revision": 3, "n_packages": 3, "oldest": 3, "newest": 7, "message": "v3 is here"}
    ]
    mapped = {"v3": {"n_packages": 40}, "legacy": {"n_packages": 2, "oldest": 0}}
    assert recount_revisions(mapped, [*v1, *v3]) == {
        "v3": {"n_packages": 3, "oldest": 3, "newest": 7},
        "legacy": {"n_packages": 2, "oldest": 5, "newest": 9},
    }
    # nothing of a revision published: no count, no dates upstream's
    assert recount_revisions(listed, v1) == [{"revision": 3, "n_packages": 0, "message": "v3 is here"}]
    assert recount_revisions("v3", v1) is None  # a shape we do not know carries upstream's counts: left out


def test_the_published_index_carries_recounted_revisions() -> None:
    doc = {
        "info": {"subdir": "linux-64", "repodata_revisions": [{"revision": 3, "n_packages": 2}]},
        "v3": {"conda": {"zlib-1.3.1-h_0": RECORD, "gdbm-1-h_0": RECORD | {"name": "gdbm"}}},
    }
    repodata = parse_repodata(json.dumps(doc).encode(), "test")
    kept = [record for record in repodata.records if record.name != "gdbm"]
    written = json.loads(encode_index("linux-64", [repodata], kept))
    assert written["info"]["repodata_revisions"] == [{"revision": 3, "n_packages": 1}]
    assert set(written["v3"]["conda"]) == {"zlib-1.3.1-h_0"}


def test_v3_records_survive_a_round_trip_through_shards() -> None:
    doc = {
        "v3": {"conda": {"zlib-1.3.1-h_0": RECORD, "zlib-1.3.1-h_1": RECORD}, "whl": {"zlib-9-py3-none-any": RECORD}},
        "packages.whl": {"zlib-8-py3-none-any.whl": RECORD},
    }
    records = parse_repodata(json.dumps(doc).encode(), "test").records
    (shard,) = build_shards(records)
    unpacked = read_shard(shard.data)
    assert set(unpacked["v3"]["conda"]) == {"zlib-1.3.1-h_0", "zlib-1.3.1-h_1"}
    back = repodata_from_shards({"info": {}}, [unpacked], "test")
    assert {(r.section, r.key, r.filename) for r in back.records} == {(r.section, r.key, r.filename) for r in records}
    assert {r.filename: r.raw for r in back.records}["zlib-1.3.1-h_0.conda"] == RECORD


def test_a_file_in_a_legacy_section_and_in_v3_is_in_a_shard_once() -> None:
    """rattler's solver refuses a shard naming one file twice ("encountered duplicate records")."""
    doc = {
        "packages.conda": {"zlib-1.3.1-h_0.conda": RECORD},
        "v3": {"conda": {"zlib-1.3.1-h_0": RECORD, "zlib-1.3.2-h_0": RECORD}},
    }
    (shard,) = build_shards(parse_repodata(json.dumps(doc).encode(), "test").records)
    unpacked = read_shard(shard.data)
    assert set(unpacked["packages.conda"]) == {"zlib-1.3.1-h_0.conda"}
    assert set(unpacked["v3"]["conda"]) == {"zlib-1.3.2-h_0"}
