"""Pure: which records a mirror keeps, in the reference tool's order of evaluation.

For each record of each subdir: 1. platforms, 2. python_versions, 3. license_blacklist, 4. blacklist,
5. whitelist (puts back what 3 or 4 dropped, never what 1 or 2 did). pkg_list, which stands alone,
keeps only its names after 1 and 2. Names compare case-insensitively; `*` and `?` make globs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from mirror_engine.licenses import blacklisted, record_family
from mirror_engine.pyversion import record_python_minor
from mirror_engine.repodata import Record

ALWAYS_MIRRORED_SUBDIR = "noarch"  # conda cannot install without it


class Verdict(StrEnum):
    # in the order the filters are evaluated
    KEPT = "kept"
    PYTHON = "dropped by python_versions"
    PKG_LIST = "not in pkg_list"
    LICENSE = "dropped by license_blacklist"
    BLACKLIST = "dropped by blacklist"
    RESCUED = "put back by whitelist"
    DEPENDENCY = "added as a dependency"  # include_dependencies: needed by a selected record
    FORMAT = "dropped by prefer_conda"  # the same build is mirrored as .conda

    @property
    def kept(self) -> bool:
        return self in (Verdict.KEPT, Verdict.RESCUED, Verdict.DEPENDENCY)


@dataclass(frozen=True, slots=True)
class NameSet:
    """Package names and globs, matched case-insensitively."""

    exact: frozenset[str] = frozenset()
    globs: re.Pattern[str] | None = None

    @classmethod
    def of(cls, names: Iterable[str]) -> NameSet:
        lowered = [name.lower() for name in names]
        patterns = [name for name in lowered if any(char in name for char in "*?[")]
        globs = re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None
        return cls(frozenset(lowered) - frozenset(patterns), globs)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lowered = name.lower()
        return lowered in self.exact or (self.globs is not None and self.globs.match(lowered) is not None)

    def __bool__(self) -> bool:
        return bool(self.exact) or self.globs is not None


@dataclass(frozen=True, slots=True)
class FilterRules:
    platforms: frozenset[str] | None = None  # None: every subdir the channel has
    python_versions: frozenset[str] = frozenset()
    license_blacklist: frozenset[str] = frozenset()
    blacklist: NameSet = NameSet()
    whitelist: NameSet = NameSet()
    pkg_list: NameSet = NameSet()
    judges_records: bool = field(init=False, default=False)  # whether any of steps 2-5 may drop a record

    def __post_init__(self) -> None:
        judges = bool(self.python_versions or self.pkg_list or self.license_blacklist or self.blacklist)
        object.__setattr__(self, "judges_records", judges)  # frozen; kept right by dataclasses.replace too

    @classmethod
    def build(
        cls,
        *,
        platforms: Iterable[str] | None = None,
        python_versions: Iterable[str] = (),
        license_blacklist: Iterable[str] = (),
        blacklist: Iterable[str] = (),
        whitelist: Iterable[str] = (),
        pkg_list: Iterable[str] = (),
    ) -> FilterRules:
        return cls(
            platforms=None if platforms is None else frozenset(platforms),
            python_versions=frozenset(python_versions),
            license_blacklist=frozenset(family.upper() for family in license_blacklist),
            blacklist=NameSet.of(blacklist),
            whitelist=NameSet.of(whitelist),
            pkg_list=NameSet.of(pkg_list),
        )


def subdir_selected(subdir: str, rules: FilterRules) -> bool:
    """Step 1: platforms. noarch is always mirrored when the channel has it."""
    return rules.platforms is None or subdir == ALWAYS_MIRRORED_SUBDIR or subdir in rules.platforms


def judge(record: Record, rules: FilterRules) -> Verdict:
    """Steps 2-5 for one record of a subdir that passed step 1."""
    if not rules.judges_records:
        return Verdict.KEPT  # the common full mirror: 600,000 records need no look at all
    if rules.python_versions:
        minor = record_python_minor(record)
        if minor is not None and minor not in rules.python_versions:
            return Verdict.PYTHON
    if rules.pkg_list:
        return Verdict.KEPT if record.name in rules.pkg_list else Verdict.PKG_LIST
    dropped: Verdict | None = None
    if rules.license_blacklist and blacklisted(record_family_of(record), rules.license_blacklist):
        dropped = Verdict.LICENSE
    elif record.name in rules.blacklist:
        dropped = Verdict.BLACKLIST
    if dropped is None:
        return Verdict.KEPT
    return Verdict.RESCUED if record.name in rules.whitelist else dropped


def record_family_of(record: Record) -> str:
    """The license family license_blacklist judges a record by (see licenses.record_family)."""
    details = record.details
    return record_family(details.license_family, details.license)


def select(records: Iterable[Record], rules: FilterRules) -> list[Record]:
    return [record for record in records if judge(record, rules).kept]
