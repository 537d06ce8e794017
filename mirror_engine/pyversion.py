"""Pure: which Python minor (e.g. "3.10") a record was built for, or None when it works with any.

Read, in this order: the `python` package's own version; the single minor its `python` (or `python_abi`)
dependency pins; the `pyXY` tag in its build string. `noarch: python` and open ranges such as
`python >=3.6` pin nothing.
"""

from __future__ import annotations

import functools
import re

from mirror_engine.repodata import Record

Minor = tuple[int, int]
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(.*)$")
_CONSTRAINT = re.compile(r"^(==|>=|<=|!=|~=|>|<|=)?\s*(.+)$")
_BUILD_TAG = re.compile(r"(?:^|[^a-z])py(\d)(\d{1,2})(?!\d)")
_PYTHON_DEPS = ("python", "python_abi")


def record_python_minor(record: Record) -> str | None:
    details = record.details
    if record.name.lower() == "python":
        own = _leading_minor(details.version)
        return _text(own) if own else None
    if details.noarch == "python":
        return None
    for dependency in details.depends:
        if isinstance(dependency, str) and dependency[:6].lower() == "python":
            pinned = _dependency_minor(dependency)
            if pinned is not None:
                return pinned
    return _build_tag_minor(details.build)


# A channel has hundreds of thousands of records but only a few hundred distinct python pins and
# build strings repeat their tags: caching makes filtering conda-forge's linux-64 take a second, not ten.
@functools.lru_cache(maxsize=4096)
def _dependency_minor(dependency: str) -> str | None:
    name, _, spec = dependency.strip().partition(" ")
    if name.lower() not in _PYTHON_DEPS:
        return None
    minor = pinned_minor(spec.strip().split(" ")[0])
    return _text(minor) if minor is not None else None


def _build_tag_minor(build: str) -> str | None:
    match = _BUILD_TAG.search(build.lower())
    return f"{match.group(1)}.{int(match.group(2))}" if match else None


def _text(minor: Minor) -> str:
    return f"{minor[0]}.{minor[1]}"


def _leading_minor(version: str) -> Minor | None:
    match = _VERSION.match(version.strip())
    if not match or match.group(2) is None:
        return None
    return int(match.group(1)), int(match.group(2))


def pinned_minor(spec: str) -> Minor | None:
    """The one minor a version spec allows (`3.8.*`, `>=3.8,<3.9.0a0`, `3.8`), or None for any other spec."""
    if not spec or "|" in spec:
        return None
    low: Minor | None = None
    high: Minor | None = None
    for part in spec.split(","):
        bounds = _constraint_bounds(part.strip())
        if bounds is None:
            return None
        part_low, part_high = bounds
        if part_low is not None:
            low = part_low if low is None else max(low, part_low)
        if part_high is not None:
            high = part_high if high is None else min(high, part_high)
    return low if low is not None and low == high else None


def _constraint_bounds(constraint: str) -> tuple[Minor | None, Minor | None] | None:
    """The inclusive (lowest, highest) minors one constraint allows; None for a constraint we cannot read."""
    match = _CONSTRAINT.match(constraint)
    if not match:
        return None
    operator, version = match.group(1) or "==", match.group(2).strip()
    if operator == "!=":
        return (None, None)
    minor = _leading_minor(version.rstrip("*").rstrip("."))
    if minor is None:
        return None
    if operator == "~=":  # ~=3.8 allows 3.9 and later; ~=3.8.0 allows 3.8.* only
        return (minor, minor if version.count(".") >= 2 else None)
    if operator in ("==", "="):
        return (minor, minor)
    if operator in (">=", ">"):
        return (minor, None)
    if operator == "<=":
        return (None, minor)
    # "<3.9", "<3.9.0", "<3.9.0a0" exclude all of 3.9; "<3.9.5" still allows part of it.
    rest = version[len(f"{minor[0]}.{minor[1]}") :]
    excludes_whole_minor = re.fullmatch(r"(\.0+)*(a0|\.0a0|dev0)?", rest) is not None
    return (None, (minor[0], minor[1] - 1) if excludes_whole_minor else minor)
