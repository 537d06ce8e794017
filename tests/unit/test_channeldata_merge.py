"""channeldata.json merged across mirrors that each own some subdirs: nobody's subdirs are lost, whoever writes last."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from mirror_engine.channelfiles import build_channeldata, merge_channeldata, merged_channeldata

SUBDIRS = ("noarch", "linux-64", "osx-arm64", "win-64")
NAMES = st.sets(st.sampled_from(["python", "numpy", "zlib", "tzdata", "requests", "openssl"]), max_size=6)
# A channel's truth: the package names each subdir holds.
CHANNELS = st.dictionaries(st.sampled_from(SUBDIRS), NAMES, min_size=1)


def host_doc(holdings: dict[str, set[str]], owned: set[str]) -> dict[str, Any]:
    """What a host owning `owned` builds from the subdirs' published indexes."""
    return build_channeldata({subdir: names for subdir, names in holdings.items() if subdir in owned}, [])


@given(CHANNELS, st.sets(st.sampled_from(SUBDIRS)), st.booleans())
def test_hosts_with_disjoint_subdirs_add_up_to_the_whole_channel_in_any_order(
    holdings: dict[str, set[str]], first_owns: set[str], first_writes_first: bool
) -> None:
    owners = [first_owns, set(SUBDIRS) - first_owns]
    if not first_writes_first:
        owners.reverse()
    doc: dict[str, Any] | None = None
    for owned in owners:
        doc = merge_channeldata(doc, host_doc(holdings, owned), owned)
    assert doc == build_channeldata(holdings, [])


@given(CHANNELS, CHANNELS, st.sets(st.sampled_from(SUBDIRS)))
def test_a_host_replaces_what_it_owns_and_keeps_the_rest(
    before: dict[str, set[str]], after: dict[str, set[str]], owned: set[str]
) -> None:
    """A host's new run (packages added or removed upstream) changes its subdirs and nothing else."""
    published = build_channeldata(before, [])
    merged = merge_channeldata(published, host_doc(after, owned), owned)
    truth = {s: n for s, n in before.items() if s not in owned} | {s: n for s, n in after.items() if s in owned}
    assert merged == build_channeldata(truth, [])
    # Applying the same update again changes nothing: a retried merge is harmless.
    assert merge_channeldata(merged, host_doc(after, owned), owned) == merged


def test_upstream_metadata_of_the_newer_run_wins_and_the_other_hosts_is_kept() -> None:
    published = {
        "channeldata_version": 1,
        "subdirs": ["linux-64", "osx-arm64"],
        "packages": {
            "zlib": {"description": "old", "home": "https://zlib.net", "subdirs": ["linux-64", "osx-arm64"]},
            "gone": {"subdirs": ["osx-arm64"]},
            "theirs": {"license": "MIT", "subdirs": ["linux-64"]},
        },
    }
    ours = build_channeldata({"osx-arm64": {"zlib"}}, [{"packages": {"zlib": {"description": "new"}}}])
    merged = merge_channeldata(published, ours, {"osx-arm64"})
    assert merged["packages"] == {
        "zlib": {"description": "new", "home": "https://zlib.net", "subdirs": ["linux-64", "osx-arm64"]},
        "theirs": {"license": "MIT", "subdirs": ["linux-64"]},
    }
    assert merged["subdirs"] == ["linux-64", "osx-arm64"]


def test_an_owned_subdir_that_is_gone_leaves_the_channel() -> None:
    published = build_channeldata({"linux-64": {"zlib"}, "win-64": {"zlib"}}, [])
    merged = merge_channeldata(published, build_channeldata({}, []), {"win-64"})
    assert merged == build_channeldata({"linux-64": {"zlib"}}, [])


def test_bytes_that_are_not_channeldata_are_rebuilt_from_this_run() -> None:
    ours = build_channeldata({"noarch": {"tzdata"}}, [])
    for damaged in (b"not json", b"[1, 2]", b'{"packages": [], "subdirs": "noarch"}', None):
        assert orjson.loads(merged_channeldata(damaged, ours=ours, owned={"noarch"})) == ours
    assert merged_channeldata(None, ours=ours, owned={"noarch"}) == orjson.dumps(ours, option=orjson.OPT_SORT_KEYS)
