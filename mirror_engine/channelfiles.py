"""Pure: a channel's other files (run_exports.json, repodata_from_packages.json, channeldata.json), filtered
to what the mirror holds, so that none of them names a package the mirror lacks."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from mirror_engine.repodata import SECTIONS

JsonObject = dict[str, Any]
SUBDIR_SIDECARS = ("run_exports.json", "repodata_from_packages.json")  # same shape as repodata.json


def filter_sidecar(docs: Iterable[JsonObject], keep: Collection[str]) -> JsonObject:
    """Merge one subdir file of several channels (the first channel wins a file name), keeping only `keep`."""
    docs = [doc for doc in docs if isinstance(doc, dict)]
    first = docs[0] if docs else {}
    info = first.get("info")
    merged: JsonObject = {key: value for key, value in first.items() if key not in (*SECTIONS, "info", "removed")}
    merged["info"] = {k: v for k, v in info.items() if k != "base_url"} if isinstance(info, dict) else {}
    for section in SECTIONS:
        entries: JsonObject = {}
        for doc in docs:
            upstream = doc.get(section)
            if isinstance(upstream, dict):
                for filename, entry in upstream.items():
                    if filename in keep:
                        entries.setdefault(filename, entry)
        merged[section] = dict(sorted(entries.items()))
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
