"""Pure: record sections beyond the legacy two (CEP 48 v3 buckets, wheels), keys of unknown shape, and
info.repodata_revisions counted again for what is published."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mirror_engine.repodata import (
    SECTION_BY_NAME,
    encode_index,
    file_for,
    holds_records,
    parse_repodata,
    recount_revisions,
)
from mirror_engine.shards import build_shards, read_shard, repodata_from_shards

SHA = "ab" * 32


def rec(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": "1", "build": "0", "size": 10, "sha256": SHA, **extra}


def index(**top: Any) -> bytes:
    return json.dumps({"info": {"subdir": "noarch"}, **top}).encode()


def test_each_section_names_its_file_from_its_key_or_its_record() -> None:
    repodata = parse_repodata(
        index(
            packages={"a-1-0.tar.bz2": rec("a")},
            v3={
                "conda": {"b-1-0": rec("b")},
                "tar.bz2": {"c-1-0": rec("c")},
                "whl": {"d-1-0": rec("d", url="d-1-py3-none-any.whl")},
            },
            **{"packages.whl": {"e-1-0": rec("e", fn="e-1-py3-none-any.whl")}},
        ),
        "t",
    )
    files = {(r.section, r.key): r.filename for r in repodata.records}
    assert files == {
        ("packages", "a-1-0.tar.bz2"): "a-1-0.tar.bz2",
        ("v3.conda", "b-1-0"): "b-1-0.conda",
        ("v3.tar.bz2", "c-1-0"): "c-1-0.tar.bz2",
        ("v3.whl", "d-1-0"): "d-1-py3-none-any.whl",
        ("packages.whl", "e-1-0"): "e-1-py3-none-any.whl",
    }
    assert all(r.unusable_because() is None for r in repodata.records)
    assert set(repodata.sections) == {"packages", "v3.conda", "v3.tar.bz2", "v3.whl", "packages.whl"}


@pytest.mark.parametrize(
    ("section", "key", "fn", "url", "problem"),
    [
        ("v3.conda", "b-1-0", "other-1-0.conda", None, "fn 'other-1-0.conda' is not 'b-1-0.conda'"),
        ("v3.whl", "d-1-0", None, "https://pypi.example/d-1-py3-none-any.whl", "is not a file beside the index"),
        ("v3.whl", "d-1-0", None, "../d-1-py3-none-any.whl", "is not a file beside the index"),
        ("v3.whl", "d-1-0", None, "sub/d-1-py3-none-any.whl", "is not a file beside the index"),
        ("packages.whl", "d-1-0", "x-1-py3-none-any.whl", "d-1-py3-none-any.whl", "fn 'x-1-py3-none-any.whl' is not"),
        ("packages.whl", "d-1-0", None, None, "names no file"),
        ("packages.whl", "d-1-0", None, "d-1-0.conda", "is not a wheel"),
    ],
)
def test_a_record_whose_fields_contradict_its_key_is_unusable(
    section: str, key: str, fn: str | None, url: str | None, problem: str
) -> None:
    _, found = file_for(SECTION_BY_NAME[section], key, fn, url)
    assert found is not None and problem in found


def test_keys_holding_records_of_unknown_shape_are_left_out_and_named() -> None:
    repodata = parse_repodata(
        index(
            v3={"conda": {}, "conda-v2": {"x-1-0": rec("x")}, "empty": {}},
            v4={"conda": {"x-1-0": rec("x")}},
            signatures={"a-1-0.conda": {"k": {"signature": "00"}}},
            channel_note={"text": "hello"},
        ),
        "t",
    )
    assert sorted(repodata.dropped) == ["v3.conda-v2", "v4"]
    assert set(repodata.extra) == {"signatures", "channel_note"}
    published = json.loads(encode_index("noarch", [repodata], []))
    assert "v4" not in published and published["v3"] == {"conda": {}}
    assert published["signatures"] == {"a-1-0.conda": {"k": {"signature": "00"}}}
    assert published["channel_note"] == {"text": "hello"}


def test_holds_records_sees_records_a_few_levels_down_and_nothing_else() -> None:
    assert holds_records({"x": {"y": rec("x")}})
    assert holds_records([rec("x")])
    assert not holds_records({"a-1-0.conda": {"key": {"signature": "00"}}})
    assert not holds_records({"name": "just a name"})


def test_published_index_writes_each_record_in_its_section_and_recounts_revisions() -> None:
    doc = index(
        packages={"a-1-0.tar.bz2": rec("a", timestamp=5)},
        v3={"conda": {"b-1-0": rec("b", timestamp=7, indexed_timestamp=9), "z-1-0": rec("z", timestamp=3)}},
    )
    repodata = parse_repodata(doc, "t")
    kept = [r for r in repodata.records if r.name != "z"]
    map_form = {"v3": {"n_packages": 2, "oldest": 3, "newest": 9, "message": "m"}, "legacy": {"n_packages": 40}}
    assert recount_revisions(map_form, kept) == {
        "v3": {"n_packages": 1, "oldest": 9, "newest": 9, "message": "m"},
        "legacy": {"n_packages": 1, "oldest": 5, "newest": 5},
    }
    list_form = [{"revision": 3, "key": "v3", "migrated_at": 1}, {"revision": 4}]
    assert recount_revisions(list_form, kept) == [
        {"revision": 3, "key": "v3", "migrated_at": 1, "n_packages": 1, "oldest": 9, "newest": 9},
        {"revision": 4, "n_packages": 0},
    ]
    with_info = parse_repodata(
        json.dumps({**json.loads(doc), "info": {"subdir": "noarch", "repodata_revisions": map_form}}).encode(), "t"
    )
    published = json.loads(encode_index("noarch", [with_info], [r for r in with_info.records if r.name != "z"]))
    assert published["v3"] == {"conda": {"b-1-0": rec("b", timestamp=7, indexed_timestamp=9)}}
    assert published["info"]["repodata_revisions"]["v3"]["n_packages"] == 1
    assert list(published["packages"]) == ["a-1-0.tar.bz2"]


def test_shards_carry_v3_and_wheel_records_and_read_back() -> None:
    repodata = parse_repodata(
        index(v3={"conda": {"b-1-0": rec("b")}}, **{"packages.whl": {"b-1-w": rec("b", url="b-1-py3-none-any.whl")}}),
        "t",
    )
    (shard,) = build_shards(repodata.records)
    doc = read_shard(shard.data)
    assert set(doc["v3"]["conda"]) == {"b-1-0"} and set(doc["packages.whl"]) == {"b-1-w"}
    again = repodata_from_shards({"info": {}}, [doc], "t")
    assert {(r.section, r.filename) for r in again.records} == {
        ("v3.conda", "b-1-0.conda"),
        ("packages.whl", "b-1-py3-none-any.whl"),
    }


def test_pkg_list_reads_v3_records_of_its_names_only() -> None:
    repodata = parse_repodata(index(v3={"conda": {"b-1-0": rec("b"), "c-1-0": rec("c")}}), "t", {"b"}.__contains__)
    assert [r.key for r in repodata.records] == ["b-1-0"] and repodata.unread == 1
