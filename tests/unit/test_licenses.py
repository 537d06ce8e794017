"""License families: config entries, guesses from license text, and what a license_blacklist catches."""

from __future__ import annotations

import pytest

from mirror_engine.licenses import FAMILIES, blacklisted, guess_family, normalize_family, record_family


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GPL3", "GPL3"),
        ("gpl3", "GPL3"),
        ("Gpl2", "GPL2"),
        ("  agpl ", "AGPL"),
        ("Apache", "APACHE"),
        ("mit", "MIT"),
        ("Public-Domain", "PUBLIC-DOMAIN"),
        ("public domain", "PUBLIC-DOMAIN"),
        ("PUBLIC_DOMAIN", "PUBLIC-DOMAIN"),
        ("publicdomain", "PUBLIC-DOMAIN"),
        ("Proprietary", "PROPRIETARY"),
        ("other", "OTHER"),
        ("cc", "CC"),
        ("Mozilla", "MOZILLA"),
        ("none", "NONE"),
        ("GPL", "GPL"),
    ],
)
def test_normalize_family_accepts_families_in_any_case(text: str, expected: str) -> None:
    assert normalize_family(text) == expected


@pytest.mark.parametrize("text", ["GPLv3", "GPL-3.0", "BSD-3-Clause", "Apache-2.0", "", "  ", "LGPL3", "free"])
def test_normalize_family_rejects_what_is_not_a_family(text: str) -> None:
    assert normalize_family(text) is None


def test_every_family_normalizes_to_itself() -> None:
    for family in FAMILIES:
        assert normalize_family(family) == family
        assert normalize_family(family.lower()) == family


@pytest.mark.parametrize(
    ("license_text", "expected"),
    [
        ("GPL-3.0-or-later", "GPL3"),
        ("GPL-3.0-only", "GPL3"),
        ("GPLv3", "GPL3"),
        ("GNU General Public License v3 (GPLv3)", "GPL3"),
        ("GPL-2.0-only", "GPL2"),
        ("GPL-2.0-or-later", "GPL2"),
        ("GPLv2+", "GPL2"),
        ("GPL", "GPL"),
        ("BSD-3-Clause", "BSD"),
        ("BSD 2-Clause", "BSD"),
        ("Apache-2.0", "APACHE"),
        ("Apache Software License", "APACHE"),
        ("MIT", "MIT"),
        ("mit", "MIT"),
        ("LGPL-2.1", "LGPL"),
        ("LGPL-2.1-or-later", "LGPL"),
        ("GNU Lesser General Public License v3", "LGPL"),
        ("AGPL-3.0", "AGPL"),
        ("AGPL-3.0-only", "AGPL"),
        ("PSF-2.0", "PSF"),
        ("Python Software Foundation License", "PSF"),
        ("MPL-2.0", "MOZILLA"),
        ("CC-BY-4.0", "CC"),
        ("CC-BY-SA-4.0", "CC"),
        ("CC0-1.0", "PUBLIC-DOMAIN"),
        ("Unlicense", "PUBLIC-DOMAIN"),
        ("Proprietary", "PROPRIETARY"),
        ("MIT OR GPL-2.0", "GPL2"),  # dual-licensed with a copyleft option counts as that copyleft
        ("some bespoke terms", "OTHER"),
        ("ISC", "OTHER"),
        ("", "OTHER"),
        (None, "OTHER"),
    ],
)
def test_guess_family(license_text: str | None, expected: str) -> None:
    assert guess_family(license_text) == expected


@pytest.mark.parametrize(
    ("license_family", "license_text", "expected"),
    [
        ("MIT", "GPL-3.0-or-later", "MIT"),  # license_family wins over the license text
        ("gpl2", "MIT", "GPL2"),
        ("Other", "GPL-3.0", "OTHER"),
        ("Public Domain", None, "PUBLIC-DOMAIN"),
        (None, "GPL-3.0-or-later", "GPL3"),
        ("", "BSD-3-Clause", "BSD"),
        ("   ", "Apache-2.0", "APACHE"),
        ("GPL-3.0", None, "GPL3"),  # not a family name: guessed from the family text itself
        (None, None, "OTHER"),
        (7, 42, "OTHER"),  # junk types from upstream never crash
        (None, ["MIT"], "OTHER"),
    ],
)
def test_record_family(license_family: object, license_text: object, expected: str) -> None:
    assert record_family(license_family, license_text) == expected


@pytest.mark.parametrize(
    ("family", "blacklist", "dropped"),
    [
        # blacklisting GPL drops every GPL, not the LGPL or AGPL
        ("GPL", {"GPL"}, True),
        ("GPL2", {"GPL"}, True),
        ("GPL3", {"GPL"}, True),
        ("LGPL", {"GPL"}, False),
        ("AGPL", {"GPL"}, False),
        # an unversioned GPL record falls to GPL2 and to GPL3
        ("GPL", {"GPL2"}, True),
        ("GPL", {"GPL3"}, True),
        # but the versions stay apart
        ("GPL2", {"GPL3"}, False),
        ("GPL3", {"GPL2"}, False),
        ("GPL2", {"GPL2"}, True),
        ("LGPL", {"GPL2", "GPL3"}, False),
        # conda-build's extra families count as Other
        ("CC", {"OTHER"}, True),
        ("MOZILLA", {"OTHER"}, True),
        ("NONE", {"OTHER"}, True),
        ("OTHER", {"OTHER"}, True),
        ("CC", {"CC"}, True),
        ("OTHER", {"CC"}, False),
        ("MIT", {"OTHER"}, False),
        ("BSD", {"OTHER"}, False),
        ("BSD", {"BSD", "MIT"}, True),
        ("APACHE", {"GPL2", "GPL3", "BSD"}, False),
        ("MIT", set(), False),
    ],
)
def test_blacklisted(family: str, blacklist: set[str], dropped: bool) -> None:
    assert blacklisted(family, frozenset(blacklist)) is dropped


@pytest.mark.parametrize(
    ("license_family", "license_text"),
    [(None, None), (None, "some bespoke terms"), ("", "WTFPL"), ("Weird-Family", None), (None, "MPL-2.0")],
)
def test_unknown_and_missing_licenses_fall_to_other(license_family: object, license_text: object) -> None:
    assert blacklisted(record_family(license_family, license_text), frozenset({"OTHER"}))
    assert not blacklisted(record_family(license_family, license_text), frozenset({"MIT", "BSD", "GPL"}))
