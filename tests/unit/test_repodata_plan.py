"""repodata.json in and out, carried over verbatim; and the plan that merges channels and pairs with the destination."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
import zstandard

from mirror_engine.destinations.base import FileStat
from mirror_engine.errors import BadRepodata
from mirror_engine.filters import FilterRules, Verdict
from mirror_engine.plan import Conflict, JournalRow, Rejected, Upstream, plan_subdir, vouched_among
from mirror_engine.repodata import (
    Record,
    Repodata,
    decompress_zst,
    encode_index,
    parse_repodata,
)
from mirror_engine.transfer import TransferItem

SOURCE = "https://repo.example.com/main/linux-64/repodata.json"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def raw(name: str, version: str = "1.0", build: str = "h1234_0", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": [],
        "size": 1000,
        "sha256": sha(f"{name}-{version}-{build}"),
        "md5": hashlib.md5(f"{name}-{version}-{build}".encode()).hexdigest(),
        **extra,
    }


def rec(filename: str, section: str = "packages.conda", **fields: Any) -> Record:
    stem = filename.removesuffix(".conda").removesuffix(".tar.bz2")
    name, version, build = stem.rsplit("-", 2)
    return Record.of(filename, section, {**raw(name, version, build), **fields})


UPSTREAM_DOC: dict[str, Any] = {
    "info": {"subdir": "linux-64", "base_url": "https://cdn.example.com/main/linux-64/"},
    "packages": {
        "zlib-1.2.13-h5eee18b_0.tar.bz2": raw(
            "zlib", "1.2.13", "h5eee18b_0", license="Zlib", timestamp=1681978962034, constrains=["zlib-ng <0"]
        ),
    },
    "packages.conda": {
        "numpy-1.26.4-py311h08b1b3b_0.conda": raw(
            "numpy", "1.26.4", "py311h08b1b3b_0", depends=["python >=3.11,<3.12.0a0"], x_vendor_key={"nested": [1, 2]}
        ),
        "readline-8.2-h5eee18b_0.conda": raw("readline", "8.2", "h5eee18b_0", license_family="GPL3"),
    },
    "removed": ["old-0.1-0.tar.bz2"],
    "repodata_version": 2,
    "signatures": {"numpy-1.26.4-py311h08b1b3b_0.conda": {"key": "sig"}},
}


# --- parse_repodata ---------------------------------------------------------------------------------------


def test_parse_repodata_reads_both_sections_and_keeps_the_rest() -> None:
    repodata = parse_repodata(orjson.dumps(UPSTREAM_DOC), SOURCE)
    assert repodata.info == UPSTREAM_DOC["info"]
    assert repodata.base_url == "https://cdn.example.com/main/linux-64/"
    assert {(r.section, r.filename) for r in repodata.records} == {
        ("packages", "zlib-1.2.13-h5eee18b_0.tar.bz2"),
        ("packages.conda", "numpy-1.26.4-py311h08b1b3b_0.conda"),
        ("packages.conda", "readline-8.2-h5eee18b_0.conda"),
    }
    for record in repodata.records:
        assert record.raw == UPSTREAM_DOC[record.section][record.filename]
    assert repodata.removed == ("old-0.1-0.tar.bz2",)
    assert repodata.extra == {"repodata_version": 2, "signatures": UPSTREAM_DOC["signatures"]}


def test_parse_repodata_of_an_empty_object() -> None:
    repodata = parse_repodata(b"{}", SOURCE)
    assert (repodata.info, repodata.records, repodata.removed, repodata.extra) == ({}, (), (), {})
    assert repodata.base_url is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(b"not json at all", "not valid JSON", id="not-json"),
        pytest.param(b'{"packages": {', "not valid JSON", id="truncated-json"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"[1, 2]", "top level is not a JSON object", id="top-level-list"),
        pytest.param(b'"text"', "top level is not a JSON object", id="top-level-string"),
        pytest.param(b'{"info": []}', "info: not an object", id="info-list"),
        pytest.param(b'{"packages": []}', "packages: not an object", id="packages-list"),
        pytest.param(b'{"packages.conda": "x"}', "packages.conda: not an object", id="packages-conda-string"),
        pytest.param(b'{"packages": {"a-1-0.tar.bz2": [1]}}', "packages['a-1-0.tar.bz2']: not an object", id="rec"),
        pytest.param(b'{"packages.conda": {"a-1-0.conda": null}}', "not an object", id="record-null"),
        pytest.param(b'{"removed": {"a": 1}}', "removed: not a list", id="removed-object"),
        pytest.param(b'{"removed": [1, 2]}', "removed: not a list of file names", id="removed-ints"),
        # in a field nothing reads: it would otherwise be published as it is, and break every client
        pytest.param(b'{"packages": {"a-1-0.tar.bz2": {"x": "\xff\xfe"}}}', "not valid UTF-8 at byte", id="utf8"),
    ],
)
def test_parse_repodata_rejects_what_it_cannot_trust(data: bytes, problem: str) -> None:
    with pytest.raises(BadRepodata) as info:
        parse_repodata(data, SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: ")
    assert problem in message
    assert "\n" not in message


def test_zst_round_trip() -> None:
    data = orjson.dumps(UPSTREAM_DOC)
    assert decompress_zst(zstandard.ZstdCompressor().compress(data), SOURCE + ".zst") == data


@pytest.mark.parametrize("data", [b"garbage!", b"\x28\xb5\x2f\xfd" + b"\xff" * 16, b"{}"])
def test_decompress_zst_rejects_garbage(data: bytes) -> None:
    with pytest.raises(
        BadRepodata, match=r"^https://repo\.example\.com/main/linux-64/repodata\.json\.zst: not valid zstd"
    ):
        decompress_zst(data, SOURCE + ".zst")


def test_decompress_zst_rejects_a_truncated_frame() -> None:
    whole = zstandard.ZstdCompressor().compress(orjson.dumps(UPSTREAM_DOC))
    with pytest.raises(BadRepodata, match=r"repodata\.json\.zst: "):
        decompress_zst(whole[: len(whole) // 2], SOURCE + ".zst")


# --- encode_index ----------------------------------------------------------------------------------------


def published(subdir: str, upstream: list[Repodata], records: Any, removed: Any = None) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(encode_index(subdir, upstream, records, removed))
    return doc


def test_encode_index_carries_records_over_byte_for_byte() -> None:
    # upstream's own key order, spacing and number spelling: re-encoding a record would change each of them
    as_served = b'{"zz": 1.50, "name": "odd",  "size": 10,\n "sha256": "%s", "depends": [ ], "by": "%s"}' % (
        sha("odd").encode(),
        "Zoë".encode(),  # valid UTF-8 beyond ASCII: checked, and kept as it is
    )
    served = b'{"packages.conda": {"odd-1-0.conda": %s}, "info": {}}' % as_served
    upstream = parse_repodata(served, SOURCE)
    data = encode_index("linux-64", [upstream], upstream.records)
    assert b'"odd-1-0.conda":' + as_served in data
    assert orjson.loads(data)["packages.conda"]["odd-1-0.conda"] == orjson.loads(as_served)


def test_encode_index_drops_base_url_and_keeps_the_rest() -> None:
    upstream = parse_repodata(orjson.dumps(UPSTREAM_DOC), SOURCE)
    doc = published("linux-64", [upstream], upstream.records)
    assert doc["info"] == {"subdir": "linux-64"}
    assert upstream.info["base_url"] == "https://cdn.example.com/main/linux-64/"  # upstream's copy is untouched
    assert doc["removed"] == ["old-0.1-0.tar.bz2"]
    assert doc["signatures"] == UPSTREAM_DOC["signatures"]
    assert doc["repodata_version"] == 2
    assert set(doc) == {"info", "packages", "packages.conda", "removed", "repodata_version", "signatures"}


def test_encode_index_publishes_only_the_given_records() -> None:
    upstream = parse_repodata(orjson.dumps(UPSTREAM_DOC), SOURCE)
    kept = [r for r in upstream.records if r.name != "readline"]
    doc = published("linux-64", [upstream], kept)
    assert list(doc["packages.conda"]) == ["numpy-1.26.4-py311h08b1b3b_0.conda"]
    assert list(doc["packages"]) == ["zlib-1.2.13-h5eee18b_0.tar.bz2"]


def test_encode_index_with_no_upstream_info() -> None:
    assert published("noarch", [], []) == {
        "info": {"subdir": "noarch"},
        "packages": {},
        "packages.conda": {},
        "removed": [],
        "repodata_version": 1,
    }


def test_encode_index_unions_removed_in_order() -> None:
    first = Repodata(info={"subdir": "linux-64"}, records=(), removed=("a-1-0.conda", "b-1-0.conda"))
    second = Repodata(info={"subdir": "linux-64", "extra": 1}, records=(), removed=("b-1-0.conda", "c-1-0.conda"))
    doc = published("linux-64", [first, second], [])
    assert doc["removed"] == ["a-1-0.conda", "b-1-0.conda", "c-1-0.conda"]
    assert doc["info"] == {"subdir": "linux-64"}  # info comes from the first upstream


def test_encode_index_is_deterministic() -> None:
    upstream = parse_repodata(orjson.dumps(UPSTREAM_DOC), SOURCE)
    reordered_doc = {key: UPSTREAM_DOC[key] for key in reversed(list(UPSTREAM_DOC))}
    reordered_doc["packages.conda"] = dict(reversed(list(UPSTREAM_DOC["packages.conda"].items())))
    reordered = parse_repodata(orjson.dumps(reordered_doc), SOURCE)
    one = encode_index("linux-64", [upstream], upstream.records)
    two = encode_index("linux-64", [reordered], reversed(reordered.records))
    assert one == two
    assert list(orjson.loads(one)) == sorted(UPSTREAM_DOC)  # top-level keys sorted, records by file name
    assert list(orjson.loads(one)["packages.conda"]) == sorted(UPSTREAM_DOC["packages.conda"])


def test_encode_index_escapes_file_names_as_json() -> None:
    odd = Record.of('we"ird\\name-1-0.conda', "packages.conda", raw("weird"))
    doc = published("linux-64", [], [odd])
    assert list(doc["packages.conda"]) == ['we"ird\\name-1-0.conda']


# --- Record -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "fields", "problem"),
    [
        ("../evil.conda", {}, "unsafe file name '../evil.conda'"),
        ("a/b.conda", {}, "unsafe file name 'a/b.conda'"),
        ("..conda", {}, "unsafe file name"),
        (".hidden-1-0.conda", {}, "unsafe file name"),
        ("evil.zip", {}, "unsafe file name"),
        ("a\\b-1-0.conda", {}, "unsafe file name"),
        ("ok-1.0-0.conda", {"name": ""}, "record has no name"),
        ("ok-1.0-0.conda", {"size": None}, "no valid size"),
        ("ok-1.0-0.conda", {"size": -1}, "no valid size"),
        ("ok-1.0-0.conda", {"size": "1000"}, "no valid size"),
        ("ok-1.0-0.conda", {"size": True}, "no valid size"),
        ("ok-1.0-0.conda", {"sha256": None, "md5": None}, "neither a valid sha256 nor md5"),
        ("ok-1.0-0.conda", {"sha256": "abc", "md5": "xyz"}, "neither a valid sha256 nor md5"),
        ("ok-1.0-0.conda", {"sha256": "g" * 64, "md5": None}, "neither a valid sha256 nor md5"),
    ],
)
def test_unusable_records(filename: str, fields: dict[str, Any], problem: str) -> None:
    record = Record.of(filename, "packages.conda", {**raw("ok"), **fields})
    reason = record.unusable_because()
    assert reason is not None
    assert problem in reason


@pytest.mark.parametrize(
    ("filename", "fields"),
    [
        ("ok-1.0-0.conda", {}),
        ("ok-1.0-0.tar.bz2", {}),
        ("ok-1.0-0.conda", {"sha256": None}),  # md5 alone will do
        ("ok-1.0-0.conda", {"md5": None}),
        ("ok-1.0-0.conda", {"size": 0}),
        ("_libgcc_mutex-0.1-main.conda", {}),
        ("r-base64enc-0.1_3-r36h7b6447c_4.tar.bz2", {}),
        ("libstdcxx-ng-11.2.0+x-h1234_1.conda", {}),
    ],
)
def test_usable_records(filename: str, fields: dict[str, Any]) -> None:
    assert Record.of(filename, "packages.conda", {**raw("ok"), **fields}).unusable_because() is None


def test_hashes_are_lower_cased() -> None:
    record = Record.of("ok-1.0-0.conda", "packages.conda", {**raw("ok"), "sha256": "AB" * 32, "md5": "CD" * 16})
    assert record.sha256 == "ab" * 32
    assert record.md5 == "cd" * 16


# --- plan_subdir ------------------------------------------------------------------------------------------


def upstream(channel: int, *records: Record, base: str | None = None) -> Upstream:
    return Upstream(
        channel=channel,
        package_base=base or f"https://channel{channel}.example.com/linux-64/",
        repodata=Repodata(info={"subdir": "linux-64"}, records=records),
    )


NO_RULES = FilterRules.build()


def test_plan_fetches_every_wanted_file() -> None:
    a, b = rec("a-1.0-0.conda"), rec("b-2.0-1.tar.bz2", "packages")
    plan = plan_subdir("linux-64", [upstream(0, a, b)], NO_RULES, {})
    assert plan.wanted == {"a-1.0-0.conda": a, "b-2.0-1.tar.bz2": b}
    assert plan.transfers == (
        TransferItem(
            url="https://channel0.example.com/linux-64/a-1.0-0.conda",
            subdir="linux-64",
            filename="a-1.0-0.conda",
            size=1000,
            sha256=a.sha256,
            md5=None,
            channel=0,
            check_existing=False,
        ),
        TransferItem(
            url="https://channel0.example.com/linux-64/b-2.0-1.tar.bz2",
            subdir="linux-64",
            filename="b-2.0-1.tar.bz2",
            size=1000,
            sha256=b.sha256,
            md5=None,
            channel=0,
            check_existing=False,
        ),
    )
    assert (plan.fetch_count, plan.fetch_bytes, len(plan.transfers)) == (2, 2000, 2)
    assert plan.conflicts == ()
    assert plan.rejected == ()
    assert plan.stale == ()


def test_plan_uses_md5_only_when_there_is_no_sha256() -> None:
    record = rec("a-1.0-0.conda", sha256=None)
    (item,) = plan_subdir("linux-64", [upstream(0, record)], NO_RULES, {}).transfers
    assert item.sha256 is None
    assert item.md5 == record.md5


def test_first_channel_wins_a_filename() -> None:
    ours = rec("a-1.0-0.conda", sha256=sha("ours"))
    theirs = rec("a-1.0-0.conda", sha256=sha("theirs"), size=2000)
    plan = plan_subdir("linux-64", [upstream(1, theirs), upstream(0, ours)], NO_RULES, {})  # order given is not rank
    assert plan.wanted == {"a-1.0-0.conda": ours}
    (item,) = plan.transfers
    assert (item.channel, item.sha256, item.size) == (0, sha("ours"), 1000)
    assert item.url == "https://channel0.example.com/linux-64/a-1.0-0.conda"
    assert plan.conflicts == (Conflict("a-1.0-0.conda", kept_channel=0, other_channel=1),)


def test_same_sha256_in_two_channels_is_one_file_without_conflict() -> None:
    one, two = rec("a-1.0-0.conda"), rec("a-1.0-0.conda")
    plan = plan_subdir("linux-64", [upstream(0, one), upstream(1, two)], NO_RULES, {})
    assert len(plan.transfers) == 1
    assert plan.transfers[0].channel == 0
    assert plan.wanted["a-1.0-0.conda"] is one
    assert plan.conflicts == ()


def test_conflicts_name_each_losing_channel() -> None:
    plan = plan_subdir(
        "linux-64",
        [
            upstream(0, rec("a-1.0-0.conda", sha256=sha("0"))),
            upstream(1, rec("a-1.0-0.conda", sha256=sha("1"))),
            upstream(2, rec("a-1.0-0.conda", sha256=sha("0"))),
            upstream(3, rec("a-1.0-0.conda", sha256=sha("3"))),
        ],
        NO_RULES,
        {},
    )
    assert plan.conflicts == (Conflict("a-1.0-0.conda", 0, 1), Conflict("a-1.0-0.conda", 0, 3))
    assert len(plan.transfers) == 1


def test_a_record_dropped_by_the_filters_does_not_claim_its_filename() -> None:
    rules = FilterRules.build(python_versions=["3.11"])
    old = rec("a-1.0-py38_0.conda", sha256=sha("py38 in channel 0"))
    new = rec("a-1.0-py38_0.conda", sha256=sha("py38 in channel 1"))
    plan = plan_subdir("linux-64", [upstream(0, old), upstream(1, new)], rules, {})
    assert plan.wanted == {}
    assert plan.conflicts == ()
    assert plan.verdicts == {0: {Verdict.PYTHON: 1}, 1: {Verdict.PYTHON: 1}}


def test_existing_file_with_matching_size_is_checked_not_fetched() -> None:
    a, b, c = rec("a-1.0-0.conda"), rec("b-1.0-0.conda"), rec("c-1.0-0.conda")
    existing = {"a-1.0-0.conda": FileStat(1000, 1), "b-1.0-0.conda": FileStat(999, 1)}
    plan = plan_subdir("linux-64", [upstream(0, a, b, c)], NO_RULES, existing)
    assert {item.filename: item.check_existing for item in plan.transfers} == {
        "a-1.0-0.conda": True,
        "b-1.0-0.conda": False,  # wrong size: fetched again
        "c-1.0-0.conda": False,
    }
    assert (plan.fetch_count, len(plan.transfers) - plan.fetch_count, plan.fetch_bytes) == (2, 1, 2000)
    assert plan.stale == ()  # both listed files are wanted


def test_stale_lists_files_no_longer_wanted() -> None:
    rules = FilterRules.build(blacklist=["b"])
    a, b = rec("a-1.0-0.conda"), rec("b-1.0-0.conda")
    existing = {
        name: FileStat(size, 1)
        for name, size in {
            "a-1.0-0.conda": 1000,
            "b-1.0-0.conda": 1000,
            "zz-0.1-0.tar.bz2": 5,
            "old-0.1-0.conda": 7,
        }.items()
    }
    plan = plan_subdir("linux-64", [upstream(0, a, b)], rules, existing)
    assert plan.stale == ("b-1.0-0.conda", "old-0.1-0.conda", "zz-0.1-0.tar.bz2")
    assert list(plan.wanted) == ["a-1.0-0.conda"]


def test_unusable_records_are_rejected() -> None:
    good = rec("a-1.0-0.conda")
    evil = Record.of("../evil.conda", "packages.conda", raw("evil"))
    sizeless = rec("b-1.0-0.conda", size=None)
    hashless = rec("c-1.0-0.conda", sha256=None, md5=None)
    plan = plan_subdir(
        "linux-64",
        [upstream(0, good, evil), upstream(1, sizeless, hashless)],
        NO_RULES,
        {"../evil.conda": FileStat(1000, 1)},
    )
    assert list(plan.wanted) == ["a-1.0-0.conda"]
    assert [item.filename for item in plan.transfers] == ["a-1.0-0.conda"]
    assert [(r.filename, r.channel) for r in plan.rejected] == [
        ("../evil.conda", 0),
        ("b-1.0-0.conda", 1),
        ("c-1.0-0.conda", 1),
    ]
    assert all(isinstance(r, Rejected) and r.reason for r in plan.rejected)
    assert "unsafe file name" in plan.rejected[0].reason


def test_a_rejected_record_leaves_the_filename_to_a_later_channel() -> None:
    broken = rec("a-1.0-0.conda", size=None)
    fine = rec("a-1.0-0.conda")
    plan = plan_subdir("linux-64", [upstream(0, broken), upstream(1, fine)], NO_RULES, {})
    assert plan.wanted == {"a-1.0-0.conda": fine}
    assert plan.transfers[0].channel == 1
    assert plan.conflicts == ()


def test_verdicts_are_counted_per_channel() -> None:
    rules = FilterRules.build(license_blacklist=["GPL3"], blacklist=["b"], whitelist=["c"])
    plan = plan_subdir(
        "linux-64",
        [
            upstream(0, rec("a-1.0-0.conda"), rec("b-1.0-0.conda"), rec("c-1.0-0.conda", license_family="GPL3")),
            upstream(1, rec("d-1.0-0.conda", license_family="GPL3")),
        ],
        rules,
        {},
    )
    assert plan.verdicts == {
        0: {Verdict.KEPT: 1, Verdict.BLACKLIST: 1, Verdict.RESCUED: 1},
        1: {Verdict.LICENSE: 1},
    }
    assert sorted(plan.wanted) == ["a-1.0-0.conda", "c-1.0-0.conda"]


def test_filenames_are_quoted_in_urls() -> None:
    record = rec("libstdcxx-ng-11.2.0+x-h1234_1.conda")
    (item,) = plan_subdir(
        "linux-64", [upstream(0, record, base="file:///srv/air gap/linux-64/")], NO_RULES, {}
    ).transfers
    assert item.url == "file:///srv/air gap/linux-64/libstdcxx-ng-11.2.0%2Bx-h1234_1.conda"
    assert item.filename == "libstdcxx-ng-11.2.0+x-h1234_1.conda"


def test_plan_keeps_the_upstream_indexes_in_channel_order() -> None:
    zero, one = upstream(0, rec("a-1.0-0.conda")), upstream(1, rec("b-1.0-0.conda"))
    plan = plan_subdir("linux-64", [one, zero], NO_RULES, {})
    assert plan.upstream == (zero.repodata, one.repodata)
    assert plan.subdir == "linux-64"


SHA_A = hashlib.sha256(b"a").hexdigest()


@pytest.mark.parametrize(
    ("row", "on_disk", "trusted"),
    [
        pytest.param((SHA_A, 1000, 5), FileStat(1000, 5), True, id="journal-vouches"),
        pytest.param((SHA_A, 1000, 5), FileStat(1000, 6), False, id="mtime-changed"),
        pytest.param((SHA_A, 1000, 5), FileStat(999, 5), False, id="size-changed"),
        pytest.param((SHA_A, 999, 5), FileStat(999, 5), False, id="size-not-the-records"),
        pytest.param(("0" * 64, 1000, 5), FileStat(1000, 5), False, id="upstream-hash-changed"),
        pytest.param(None, FileStat(1000, 5), False, id="not-in-journal"),
    ],
)
def test_journal_trust(row: tuple[str, int, int] | None, on_disk: FileStat, trusted: bool) -> None:
    record = rec("a-1.0-0.conda", sha256=SHA_A)
    existing = {"a-1.0-0.conda": on_disk}
    rows: list[JournalRow] = [("a-1.0-0.conda", *row, True)] if row else []
    vouched = vouched_among(rows, existing)
    plan = plan_subdir("linux-64", [upstream(0, record)], NO_RULES, existing, vouched.digests)
    assert plan.trusted == ({"a-1.0-0.conda": 0} if trusted else {})
    assert [item.check_existing for item in plan.transfers] == ([] if trusted else [on_disk.size == 1000])
    assert plan.stale == ()


def test_md5_only_records_are_trusted_by_md5_and_others_never() -> None:
    md5_only = rec("a-1.0-0.conda", sha256=None, md5="a" * 32)
    with_sha = rec("b-1.0-0.conda", sha256=SHA_A, md5="b" * 32)
    existing = {"a-1.0-0.conda": FileStat(1000, 5), "b-1.0-0.conda": FileStat(1000, 5)}
    vouched = {"a-1.0-0.conda": "a" * 32, "b-1.0-0.conda": "b" * 32}  # b verified by md5 alone: not enough
    plan = plan_subdir("linux-64", [upstream(0, md5_only, with_sha)], NO_RULES, existing, vouched)
    assert plan.trusted == {"a-1.0-0.conda": 0} and [item.filename for item in plan.transfers] == ["b-1.0-0.conda"]


@pytest.mark.parametrize(
    ("rows", "unchanged"),
    [
        pytest.param([("a", "d", 1, 1, True), ("b", "d", 2, 2, True)], True, id="as-published"),
        pytest.param([("a", "d", 1, 1, True), ("b", "d", 2, 2, False)], False, id="one-only-verified"),
        pytest.param([("a", "d", 1, 1, True), ("b", "d", 2, 3, True)], False, id="one-touched"),
        pytest.param([("a", "d", 1, 1, True)], False, id="one-not-in-journal"),
        pytest.param([("a", "d", 1, 1, True), ("b", "d", 2, 2, True), ("c", "d", 3, 3, True)], False, id="one-gone"),
        pytest.param([("a", "d", 1, 1, True), ("c", "d", 3, 3, True)], False, id="swapped"),
    ],
)
def test_unchanged_only_when_the_listing_is_what_was_published(rows: list[JournalRow], unchanged: bool) -> None:
    existing = {"a": FileStat(1, 1), "b": FileStat(2, 2)}
    assert vouched_among(rows, existing).unchanged is unchanged


def test_integers_beyond_64_bits_are_published_exactly_as_served() -> None:
    # orjson reads such an integer as a float: 123456789012345678901234567890 would come out as 1.2345...e+29
    huge = b"123456789012345678901234567890"
    served = b'{"info": {}, "signatures": {"n": %s}, "packages": {"a-1-0.conda": %s}}' % (
        huge,
        b'{"name": "a", "size": 1, "sha256": "%s", "n": %s}' % (sha("a").encode(), huge),
    )
    upstream = parse_repodata(served, SOURCE)
    assert upstream.extra == {"signatures": {"n": 123456789012345678901234567890}}
    assert upstream.records[0].raw["n"] == 123456789012345678901234567890
    published = encode_index("linux-64", [upstream], upstream.records)
    assert published.count(huge) == 2


def test_pkg_list_parses_only_the_records_of_its_names_and_counts_the_rest() -> None:
    def entry(name: str) -> dict[str, Any]:
        return {"name": name, "version": "1", "build": "0", "size": 1, "sha256": sha(name)}

    served = orjson.dumps(
        {
            "packages": {"numpy-1-0.tar.bz2": entry("numpy"), "scipy-1-0.tar.bz2": entry("scipy")},
            "packages.conda": {
                "numpy-1-0.conda": entry("numpy"),
                "NumPy-2-0.conda": entry("numpy"),  # pkg_list is matched case-insensitively
                "scipy-1-0.conda": entry("scipy"),
                "other-1-0.conda": entry("numpy"),  # its file name names another package: not chosen
                "numpy.conda": entry("numpy"),  # no version or build in its name: read and judged
                "../numpy-1-0.conda": entry("numpy"),  # unsafe: read, so that the plan reports it
            },
        }
    )
    rules = FilterRules.build(pkg_list=["numpy"])
    upstream_index = parse_repodata(served, SOURCE, rules.pkg_list.__contains__)
    assert upstream_index.unread == 3
    assert sorted(r.filename for r in upstream_index.records) == [
        "../numpy-1-0.conda", "NumPy-2-0.conda", "numpy-1-0.conda", "numpy-1-0.tar.bz2", "numpy.conda"
    ]  # fmt: skip
    plan = plan_subdir("linux-64", [Upstream(0, "https://c.example.com/linux-64/", upstream_index)], rules, {})
    assert plan.verdicts[0] == {Verdict.KEPT: 5, Verdict.PKG_LIST: 3}
    assert sorted(plan.wanted) == ["NumPy-2-0.conda", "numpy-1-0.conda", "numpy-1-0.tar.bz2", "numpy.conda"]
    assert [(r.filename, r.reason) for r in plan.rejected] == [
        ("../numpy-1-0.conda", "unsafe file name '../numpy-1-0.conda'")
    ]
    # read whole, the same records are chosen but for the one whose file name names another package
    whole = plan_subdir(
        "linux-64", [Upstream(0, "https://c.example.com/linux-64/", parse_repodata(served, SOURCE))], rules, {}
    )
    assert set(whole.wanted) - set(plan.wanted) == {"other-1-0.conda"}
    assert whole.verdicts[0][Verdict.PKG_LIST] == 2
