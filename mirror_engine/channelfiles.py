"""Pure: a channel's other files (run_exports.json, repodata_from_packages.json, channeldata.json), filtered
to what the mirror holds, so that none of them names a package the mirror lacks; channeldata.json merged
with what other mirrors sharing the channel published for their subdirs."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import orjson

from mirror_engine.repodata import NOT_RECORDS, RECORD_SECTIONS, SECTIONS, holds_records

JsonObject = dict[str, Any]
SUBDIR_SIDECARS = ("run_exports.json", "repodata_from_packages.json")  # same shape as repodata.json


def filter_sidecar(
    docs: Iterable[JsonObject], keep: Collection[str], keyed: Collection[tuple[str, str]] = ()
) -> JsonObject:
    """Merge one subdir file of several channels (the first channel wins an entry), keeping only the
    entries of files in `keep` or of the (section name, key) pairs in `keyed`: the published records'.

    Every record section of repodata.json is read (v3 buckets by their keys plus extension, wheels only
    by `keyed`); an unknown key holding records is left out, as from repodata.json."""
    docs = [doc for doc in docs if isinstance(doc, dict)]
    first = docs[0] if docs else {}
    info = first.get("info")
    sections = {section.top for section in RECORD_SECTIONS}
    merged: JsonObject = {
        key: value
        for key, value in first.items()
        if key not in (*sections, "info", "removed") and (key in NOT_RECORDS or not holds_records(value))
    }
    merged["info"] = {k: v for k, v in info.items() if k != "base_url"} if isinstance(info, dict) else {}
    for section in RECORD_SECTIONS:
        entries: JsonObject = {}
        present = False
        for doc in docs:
            upstream = doc.get(section.top)
            if section.bucket is not None and isinstance(upstream, dict):
                upstream = upstream.get(section.bucket)
            if isinstance(upstream, dict):
                present = True
                for key, entry in upstream.items():
                    named = not section.wheel and key + section.extension in keep
                    if named or (section.name, key) in keyed:
                        entries.setdefault(key, entry)
        if section.name in SECTIONS or present:
            into = merged if section.bucket is None else merged.setdefault(section.top, {})
            into[section.bucket or section.top] = dict(sorted(entries.items()))
    return merged


def build_channeldata(names_by_subdir: Mapping[str, Collection[str]], upstream: Iterable[JsonObject]) -> JsonObject:
    """channeldata.json (CEP-38 shape) for the mirror: its subdirs, and per package name the subdirs that
    hold it; upstream's metadata for a name (description, home, license...) is kept, first channel wins."""
    subdirs_of: dict[str, set[str]] = {}
    for subdir, names in names_by_subdir.items():
        for name in names:
            subdirs_of.setdefault(name, set()).add(subdir)
    metadata: dict[str, JsonObject] = {}
    for doc in upstream:
        packages = doc.get("packages") if isinstance(doc, dict) else None
        if isinstance(packages, dict):
            for name, entry in packages.items():
                if isinstance(entry, dict):
                    metadata.setdefault(name, entry)
    packages_out = {
        name: {**metadata.get(name, {}), "subdirs": sorted(subdirs)} for name, subdirs in sorted(subdirs_of.items())
    }
    return {"channeldata_version": 1, "packages": packages_out, "subdirs": sorted(names_by_subdir)}


def merge_channeldata(current: object, ours: JsonObject, owned: Collection[str]) -> JsonObject:
    """channeldata.json for a channel several mirrors publish into, each owning some subdirs (docs/scaling.md).

    `ours` (from `build_channeldata`) is the truth about the subdirs in `owned`; `current`, the published
    document, still speaks for every other subdir. A package keeps the subdirs only others hold, gains ours,
    and is dropped when no subdir holds it any more; our upstream metadata for a name replaces the older.
    A `current` that is not a channeldata document counts as absent.
    """
    owned = set(owned)
    doc = current if isinstance(current, dict) else {}
    subdirs = {s for s in _strings(doc.get("subdirs")) if s not in owned} | set(ours["subdirs"])
    packages: dict[str, JsonObject] = {}
    previous = doc.get("packages")
    for name, entry in (previous if isinstance(previous, dict) else {}).items():
        if isinstance(entry, dict):
            others = [s for s in _strings(entry.get("subdirs")) if s not in owned]
            if others:
                packages[name] = {**entry, "subdirs": others}
    for name, entry in ours["packages"].items():
        held = packages.get(name, {})
        packages[name] = {**held, **entry, "subdirs": sorted({*held.get("subdirs", ()), *entry["subdirs"]})}
    return {**ours, "packages": dict(sorted(packages.items())), "subdirs": sorted(subdirs)}


def merged_channeldata(current: bytes | None, *, ours: JsonObject, owned: Collection[str]) -> bytes:
    """`merge_channeldata` from and to bytes: the update a destination applies to the published file."""
    try:
        published = orjson.loads(current) if current is not None else None
    except orjson.JSONDecodeError:
        published = None  # a damaged file is rebuilt from this run's subdirs rather than kept damaged
    return orjson.dumps(merge_channeldata(published, ours, owned), option=orjson.OPT_SORT_KEYS)


def _strings(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
