"""Pure: why a record is or is not in the mirror, in the words of the filter step that decided it."""

from __future__ import annotations

from dataclasses import dataclass

from mirror_engine.filters import FilterRules, Verdict, judge, record_family_of, subdir_selected
from mirror_engine.licenses import blacklisted
from mirror_engine.pyversion import record_python_minor
from mirror_engine.repodata import Record


@dataclass(frozen=True, slots=True)
class Query:
    """`NAME[=VERSION[=BUILD]]`, as conda writes a pinned package."""

    name: str
    version: str | None = None
    build: str | None = None

    @classmethod
    def parse(cls, text: str) -> Query:
        name, _, rest = text.partition("=")
        version, _, build = rest.partition("=")
        return cls(name.strip().lower(), version or None, build or None)

    def matches(self, record: Record) -> bool:
        return (
            record.name.lower() == self.name
            and (self.version is None or record.version == self.version)
            and (self.build is None or record.build == self.build)
        )


def explain(record: Record, subdir: str, rules: FilterRules) -> tuple[bool, str]:
    """(selected, reason) for one upstream record of `subdir`."""
    if not subdir_selected(subdir, rules):
        return False, f"dropped by platforms: {subdir} is not listed"
    verdict = judge(record, rules)
    minor = record_python_minor(record)
    family = record_family_of(record)
    details = record.details
    source = "license_family" if details.license_family else f"license {details.license!r}"
    reasons = {
        Verdict.KEPT: "selected" + (f" (built for Python {minor})" if minor and rules.python_versions else ""),
        Verdict.PYTHON: f"dropped by python_versions: built for Python {minor}",
        Verdict.PKG_LIST: "dropped: not in pkg_list",
        Verdict.LICENSE: f"dropped by license_blacklist: family {family} (from {source})",
        Verdict.BLACKLIST: "dropped by blacklist",
        Verdict.RESCUED: "rescued by whitelist from "
        + (f"license_blacklist (family {family})" if blacklisted(family, rules.license_blacklist) else "blacklist"),
        Verdict.DEPENDENCY: "added as a dependency",
        Verdict.FORMAT: "dropped by prefer_conda",
    }
    problem = record.unusable_because() if verdict.kept else None
    if problem is not None:
        return False, f"refused: {problem}"
    return verdict.kept, reasons[verdict]
