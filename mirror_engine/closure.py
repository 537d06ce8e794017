"""Pure: the dependency closure of a selection (`include_dependencies`), within the mirrored subdirs.

A dependency already satisfied by a selected record adds nothing; an unsatisfied one adds every
candidate that matches it and passes the filters (so the solver keeps its choices), and their own
dependencies in turn. MatchSpecs are parsed and matched by py-rattler, conda's own grammar.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from rattler import BuildString, MatchSpec, PackageRecord
from rattler.exceptions import InvalidMatchSpecError

from mirror_engine.repodata import Record


@dataclass(frozen=True, slots=True)
class Candidate:
    """A record of one subdir, as the closure sees it."""

    subdir: str
    record: Record


@dataclass(slots=True)
class Closure:
    added: dict[str, set[str]] = field(default_factory=dict)  # subdir -> file names added as dependencies
    unsatisfied: dict[str, set[str]] = field(default_factory=dict)  # dependency -> names of who needs it


def close_over(
    selected: Iterable[Candidate],
    universe: Iterable[Candidate],
    allowed: Callable[[Record], bool],
) -> Closure:
    """Add to `selected` what its dependencies need from `universe` (records `allowed` by the filters)."""
    by_name: dict[str, list[Candidate]] = {}
    for candidate in universe:
        by_name.setdefault(candidate.record.name.lower(), []).append(candidate)
    chosen: dict[str, list[Candidate]] = {}
    chosen_files: set[tuple[str, str]] = set()
    todo: list[Candidate] = []

    def choose(candidate: Candidate) -> None:
        key = (candidate.subdir, candidate.record.filename)
        if key not in chosen_files:
            chosen_files.add(key)
            chosen.setdefault(candidate.record.name.lower(), []).append(candidate)
            todo.append(candidate)

    for candidate in selected:
        choose(candidate)
    initial = set(chosen_files)
    matches = _Matcher()
    result = Closure()
    satisfied: set[str] = set()
    while todo:
        needer = todo.pop()
        for dependency in needer.record.depends:
            if not isinstance(dependency, str) or dependency in satisfied:
                continue
            spec = _spec(dependency)
            if spec is None or spec.name is None or spec.name.normalized.startswith("__"):
                continue  # virtual packages (__glibc, __cuda) are the client machine's, not the channel's
            name = spec.name.normalized
            if any(matches(spec, c) for c in chosen.get(name, ())):
                satisfied.add(dependency)
                continue
            fits = [c for c in by_name.get(name, ()) if matches(spec, c) and allowed(c.record)]
            if not fits:
                result.unsatisfied.setdefault(dependency, set()).add(needer.record.name)
                continue
            for candidate in fits:
                choose(candidate)
            satisfied.add(dependency)
    for subdir, filename in chosen_files - initial:
        result.added.setdefault(subdir, set()).add(filename)
    return result


@functools.lru_cache(maxsize=65536)
def _spec(text: str) -> MatchSpec | None:
    try:
        return MatchSpec(text)
    except InvalidMatchSpecError:
        return None


class _Matcher:
    """MatchSpec against records, building rattler's view of each record once per closure."""

    def __init__(self) -> None:
        self._packages: dict[tuple[str, str], PackageRecord | None] = {}

    def __call__(self, spec: MatchSpec, candidate: Candidate) -> bool:
        key = (candidate.subdir, candidate.record.filename)
        if key not in self._packages:
            self._packages[key] = _package_record(candidate.record)
        package = self._packages[key]
        return package is not None and spec.matches(package)


def _package_record(record: Record) -> PackageRecord | None:
    """rattler's view of a record (name, version, build) for matching; None if rattler cannot read it."""
    details = record.details
    try:
        return PackageRecord(
            name=record.name,
            version=details.version,
            build=BuildString(details.build),
            build_number=int(details.build_number or 0),
            subdir=str(details.subdir or "noarch"),
        )
    except Exception:  # rattler raises its own types for unreadable versions; such a record never matches
        return None


def universes(subdirs: Mapping[str, list[Record]], noarch: str = "noarch") -> dict[str, list[Candidate]]:
    """Each platform subdir sees itself and noarch; noarch alone sees only itself when it is all there is."""
    platforms = [subdir for subdir in subdirs if subdir != noarch] or [noarch]
    shared = [Candidate(noarch, record) for record in subdirs.get(noarch, [])]
    return {
        platform: ([Candidate(platform, r) for r in subdirs[platform]] if platform != noarch else []) + shared
        for platform in platforms
    }
