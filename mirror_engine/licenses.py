"""Pure: license families, as the reference tool's license_blacklist names them, and guessing one from a license.

Families are the reference's `AGPL GPL2 GPL3 LGPL BSD MIT Apache PSF Public-Domain Proprietary Other`,
plus conda-build's `GPL CC MOZILLA NONE`. All are handled upper-case.
"""

from __future__ import annotations

import functools
import re

FAMILIES: tuple[str, ...] = (
    "AGPL", "GPL", "GPL2", "GPL3", "LGPL", "BSD", "MIT", "APACHE", "PSF",
    "PUBLIC-DOMAIN", "PROPRIETARY", "OTHER", "CC", "MOZILLA", "NONE",
)  # fmt: skip
_FAMILY_SET = frozenset(FAMILIES)
_ALIASES = {"PUBLIC DOMAIN": "PUBLIC-DOMAIN", "PUBLIC_DOMAIN": "PUBLIC-DOMAIN", "PUBLICDOMAIN": "PUBLIC-DOMAIN"}

# What a blacklisted family also catches: `GPL` means every GPL; an unversioned GPL record falls to
# GPL2 and GPL3 alike; conda-build's extra families and anything unknown are the reference's `Other`.
_MATCHED_BY: dict[str, frozenset[str]] = {
    "GPL": frozenset({"GPL", "GPL2", "GPL3"}),
    "GPL2": frozenset({"GPL2", "GPL"}),
    "GPL3": frozenset({"GPL3", "GPL"}),
    "CC": frozenset({"CC", "OTHER"}),
    "MOZILLA": frozenset({"MOZILLA", "OTHER"}),
    "NONE": frozenset({"NONE", "OTHER"}),
}

# Ordered: the first pattern that matches the license text names the family. Copyleft first, so that a
# dual "MIT OR GPL-2.0" counts as GPL2: an operator who blacklists GPL wants to see it gone.
_GUESSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), family)
    for pattern, family in (
        (r"\bAGPL|AFFERO", "AGPL"),
        (r"\bLGPL|LESSER GENERAL|LIBRARY GENERAL", "LGPL"),
        (r"\bGPL[ -]?V?2|GENERAL PUBLIC LICENSE,? V(ERSION)? ?2", "GPL2"),
        (r"\bGPL[ -]?V?3|GENERAL PUBLIC LICENSE,? V(ERSION)? ?3", "GPL3"),
        (r"\bGPL|GENERAL PUBLIC LICENSE", "GPL"),
        (r"\bBSD", "BSD"),
        (r"\bMIT\b|EXPAT", "MIT"),
        (r"\bAPACHE", "APACHE"),
        (r"\bPSF|PYTHON SOFTWARE FOUNDATION|\bPYTHON-2", "PSF"),
        (r"PUBLIC[ -_]?DOMAIN|UNLICENSE|\bCC0", "PUBLIC-DOMAIN"),
        (r"PROPRIETARY|COMMERCIAL|LICENSEREF-PROPRIETARY", "PROPRIETARY"),
        (r"\bCC[ -]|CREATIVE COMMONS", "CC"),
        (r"\bMPL|MOZILLA", "MOZILLA"),
    )
)


def normalize_family(text: str) -> str | None:
    """The canonical family for a config entry or a record's license_family, or None if it is not one."""
    upper = text.strip().upper()
    upper = _ALIASES.get(upper, upper)
    return upper if upper in _FAMILY_SET else None


@functools.lru_cache(maxsize=4096)
def guess_family(license_text: str | None) -> str:
    """The family of a free-text or SPDX license, `OTHER` when nothing matches."""
    if not license_text:
        return "OTHER"
    upper = license_text.upper()
    for pattern, family in _GUESSES:
        if pattern.search(upper):
            return family
    return "OTHER"


def record_family(license_family: object, license_text: object) -> str:
    """The family of a record: its license_family when that is one we know, else guessed from license."""
    if isinstance(license_family, str) and license_family.strip():
        known = normalize_family(license_family)
        if known is not None:
            return known
        return guess_family(license_family)
    return guess_family(license_text if isinstance(license_text, str) else None)


def blacklisted(family: str, blacklist: frozenset[str]) -> bool:
    """Whether a record of `family` falls to a license_blacklist of canonical families."""
    return not blacklist.isdisjoint(_MATCHED_BY.get(family, frozenset({family})))
