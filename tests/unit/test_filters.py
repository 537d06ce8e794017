"""Which records a mirror keeps: the reference tool's examples, our globs, and the order of evaluation as properties."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror_engine.filters import FilterRules, Verdict, judge, record_family_of, select, subdir_selected
from mirror_engine.licenses import FAMILIES, blacklisted
from mirror_engine.pyversion import record_python_minor
from mirror_engine.repodata import Record


def record(
    name: str,
    build: str = "h1234_0",
    *,
    version: str = "1.0",
    license_family: str | None = None,
    license: str | None = None,
    depends: list[str] | None = None,
    **extra: Any,
) -> Record:
    raw: dict[str, Any] = {"name": name, "version": version, "build": build, "depends": depends or [], **extra}
    if license_family is not None:
        raw["license_family"] = license_family
    if license is not None:
        raw["license"] = license
    return Record.of(f"{name}-{version}-{build}.conda", "packages.conda", raw)


def kept_names(records: list[Record], rules: FilterRules) -> list[str]:
    return [r.name for r in select(records, rules)]


# A small repository in the spirit of the reference's examples.
READLINE = record("readline", license_family="GPL3")
GDBM = record("gdbm", license="GPL-3.0-or-later")
GMP = record("gmp", license_family="GPL2")
GPL_ANY = record("ghostscript", license_family="GPL")
PYQT = record("pyqt", "py38h1234_0", license_family="GPL3")
LIBGCC = record("libgcc", license_family="LGPL")
NUMPY = record("numpy", "py38h1234_0", license_family="BSD")
REQUESTS = record("requests", "pyhd8ed1ab_0", license="Apache-2.0", noarch="python")
ACCELERATE = record("accelerate", "np111py27_0", license_family="Proprietary")
ASTROPY = record("astropy", "py310_0", license_family="BSD")
PYGMENTS = record("pygments", "pyhd8ed1ab_0", license_family="BSD", noarch="python")
REPO = [READLINE, GDBM, GMP, GPL_ANY, PYQT, LIBGCC, NUMPY, REQUESTS, ACCELERATE, ASTROPY, PYGMENTS]
ALL_NAMES = [r.name for r in REPO]


def test_license_blacklist_gpl2_gpl3_with_whitelist_readline_keeps_readline() -> None:
    rules = FilterRules.build(license_blacklist=["GPL2", "GPL3"], whitelist=["readline"])
    assert judge(READLINE, rules) is Verdict.RESCUED
    assert judge(GDBM, rules) is Verdict.LICENSE
    assert judge(GMP, rules) is Verdict.LICENSE
    assert judge(GPL_ANY, rules) is Verdict.LICENSE
    assert judge(LIBGCC, rules) is Verdict.KEPT
    expected = [n for n in ALL_NAMES if n not in {"gdbm", "gmp", "ghostscript", "pyqt"}]
    assert kept_names(REPO, rules) == expected


def test_blacklist_with_whitelist_keeps_the_whitelisted_one() -> None:
    rules = FilterRules.build(blacklist=["accelerate", "astropy", "pygments"], whitelist=["accelerate"])
    assert judge(ACCELERATE, rules) is Verdict.RESCUED
    assert judge(ASTROPY, rules) is Verdict.BLACKLIST
    assert judge(PYGMENTS, rules) is Verdict.BLACKLIST
    assert kept_names(REPO, rules) == [n for n in ALL_NAMES if n not in {"astropy", "pygments"}]


def test_license_blacklist_gpl2_and_blacklist_pyqt() -> None:
    rules = FilterRules.build(license_blacklist=["GPL2"], blacklist=["pyqt"])
    assert judge(GMP, rules) is Verdict.LICENSE
    assert judge(GPL_ANY, rules) is Verdict.LICENSE  # an unversioned GPL falls to GPL2
    assert judge(PYQT, rules) is Verdict.BLACKLIST  # GPL3, so only the blacklist drops it
    assert judge(READLINE, rules) is Verdict.KEPT
    assert judge(GDBM, rules) is Verdict.KEPT
    assert kept_names(REPO, rules) == [n for n in ALL_NAMES if n not in {"gmp", "ghostscript", "pyqt"}]


def test_license_blacklist_is_evaluated_before_blacklist() -> None:
    rules = FilterRules.build(license_blacklist=["GPL3"], blacklist=["pyqt"])
    assert judge(PYQT, rules) is Verdict.LICENSE


def test_license_blacklist_gpl_drops_every_gpl_but_not_lgpl() -> None:
    rules = FilterRules.build(license_blacklist=["gpl"])
    assert kept_names(REPO, rules) == [
        n for n in ALL_NAMES if n not in {"readline", "gdbm", "gmp", "ghostscript", "pyqt"}
    ]


def test_pkg_list_on_linux_64() -> None:
    rules = FilterRules.build(platforms=["linux-64"], pkg_list=["dnspython", "shapely", "gdal"])
    assert subdir_selected("linux-64", rules)
    assert not subdir_selected("osx-64", rules)
    assert not subdir_selected("win-64", rules)
    assert subdir_selected("noarch", rules)
    records = [record("dnspython"), record("Shapely"), record("gdal"), record("numpy"), record("gdal-data")]
    assert kept_names(records, rules) == ["dnspython", "Shapely", "gdal"]
    assert judge(record("numpy"), rules) is Verdict.PKG_LIST


@pytest.mark.parametrize(
    ("platforms", "subdir", "selected"),
    [
        (None, "linux-64", True),
        (None, "noarch", True),
        (None, "win-32", True),
        (["linux-64"], "linux-64", True),
        (["linux-64"], "linux-aarch64", False),
        (["linux-64"], "noarch", True),
        (["osx-arm64", "win-64"], "noarch", True),
        (["osx-arm64", "win-64"], "win-64", True),
        (["osx-arm64", "win-64"], "osx-64", False),
    ],
)
def test_subdir_selected(platforms: list[str] | None, subdir: str, selected: bool) -> None:
    assert subdir_selected(subdir, FilterRules.build(platforms=platforms)) is selected


@pytest.mark.parametrize(
    "rules",
    [
        FilterRules.build(blacklist=["NumPy"]),
        FilterRules.build(blacklist=["numpy"]),
        FilterRules.build(blacklist=["NUMPY"]),
        FilterRules.build(pkg_list=["Requests"]),
        FilterRules.build(license_blacklist=["bsd"], blacklist=["numpy"], whitelist=["REQUESTS"]),
    ],
)
def test_names_compare_case_insensitively(rules: FilterRules) -> None:
    numpy, requests = record("NumPy"), record("requests", license_family="BSD")
    assert not judge(numpy, rules).kept
    assert judge(requests, rules).kept


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("py*", "pyqt", True),
        ("py*", "python", True),
        ("py*", "PyYAML", True),
        ("py*", "py", True),
        ("py*", "numpy", False),
        ("Py*", "pyqt", True),
        ("?ip", "pip", True),
        ("?ip", "zip", True),
        ("?ip", "ip", False),
        ("?ip", "pipx", False),
        ("?ip", "xpip", False),
        ("lib*-dev", "libxml2-dev", True),
        ("lib*-dev", "libxml2", False),
        ("r-[ab]*", "r-base", True),
        ("r-[ab]*", "r-cli", False),
    ],
)
def test_globs(pattern: str, name: str, matches: bool) -> None:
    assert judge(record(name), FilterRules.build(blacklist=[pattern])).kept is not matches
    assert judge(record(name), FilterRules.build(pkg_list=[pattern])).kept is matches


def test_glob_and_exact_names_mix() -> None:
    rules = FilterRules.build(blacklist=["py*", "zlib"], whitelist=["pyqt", "z*"])
    records = [record("pyqt"), record("pygments"), record("zlib"), record("numpy")]
    assert [(r.name, judge(r, rules)) for r in records] == [
        ("pyqt", Verdict.RESCUED),
        ("pygments", Verdict.BLACKLIST),
        ("zlib", Verdict.RESCUED),
        ("numpy", Verdict.KEPT),
    ]


def test_pkg_list_applies_after_python_versions() -> None:
    rules = FilterRules.build(python_versions=["3.10"], pkg_list=["numpy"])
    assert judge(record("numpy", "py38h1234_0"), rules) is Verdict.PYTHON
    assert judge(record("numpy", "py310h1234_0"), rules) is Verdict.KEPT
    assert judge(record("numpy", "h1234_0"), rules) is Verdict.KEPT
    assert judge(record("scipy", "py310h1234_0"), rules) is Verdict.PKG_LIST


def test_whitelist_never_undoes_python_versions() -> None:
    rules = FilterRules.build(python_versions=["3.10"], blacklist=["numpy"], whitelist=["numpy"])
    assert judge(record("numpy", "py38h1234_0"), rules) is Verdict.PYTHON
    assert judge(record("numpy", "py310h1234_0"), rules) is Verdict.RESCUED


@pytest.mark.parametrize(
    ("rec", "verdict"),
    [
        (record("python", "h955ad1f_1", version="3.10.14"), Verdict.KEPT),
        (record("python", "h955ad1f_1", version="3.9.1"), Verdict.PYTHON),
        (record("numpy", "py38h1234_0"), Verdict.PYTHON),
        (record("numpy", "py311h1234_0"), Verdict.KEPT),
        (record("numpy", depends=["python >=3.8,<3.9.0a0"]), Verdict.PYTHON),
        (record("numpy", depends=["python_abi 3.10.* *_cp310"]), Verdict.KEPT),
        (record("six", "pyhd8ed1ab_0", depends=["python >=3.6"], noarch="python"), Verdict.KEPT),
        (record("zlib"), Verdict.KEPT),
        (record("scipy", "np111py27_0"), Verdict.PYTHON),
    ],
)
def test_python_versions(rec: Record, verdict: Verdict) -> None:
    rules = FilterRules.build(python_versions=["3.10", "3.11"])
    assert judge(rec, rules) is verdict


def test_noarch_python_is_kept_whatever_python_versions_says() -> None:
    rules = FilterRules.build(python_versions=["2.7"])
    noarch = record("attrs", "pyhd8ed1ab_0", depends=["python >=3.7"], noarch="python")
    assert judge(noarch, rules) is Verdict.KEPT


def test_no_rules_keep_everything() -> None:
    assert select(REPO, FilterRules.build()) == REPO
    assert select(REPO, FilterRules()) == REPO


# --- properties -------------------------------------------------------------------------------------------

NAMES = ["numpy", "NumPy", "pip", "readline", "pyqt", "zope", "python-dateutil", "astropy", "r-base"]
PATTERNS = [*NAMES, "py*", "?ip", "r-*", "ZOPE"]
BUILDS = ["py38h1234_0", "py310_0", "py311h5eee18b_0", "h1234_0", "np111py27_0", "pyhd8ed1ab_0", "0"]
DEPENDS = [
    [],
    ["python >=3.8,<3.9.0a0"],
    ["python 3.10.*"],
    ["python_abi 3.11.* *_cp311"],
    ["python >=3.6"],
    ["libgcc-ng >=11"],
]
LICENSE_FAMILIES = [*FAMILIES, "gpl3", "Other", None]
LICENSES = ["GPL-3.0-or-later", "MIT", "BSD-3-Clause", "LGPL-2.1", "MPL-2.0", "bespoke", None]
MINORS = ["2.7", "3.8", "3.10", "3.11", "3.12"]


@st.composite
def records(draw: st.DrawFn) -> Record:
    name = draw(st.sampled_from(NAMES))
    build = draw(st.sampled_from(BUILDS))
    raw: dict[str, Any] = {"name": name, "version": "1.0", "build": build, "depends": draw(st.sampled_from(DEPENDS))}
    family = draw(st.sampled_from(LICENSE_FAMILIES))
    if family is not None:
        raw["license_family"] = family
    text = draw(st.sampled_from(LICENSES))
    if text is not None:
        raw["license"] = text
    if draw(st.booleans()) and build.startswith("pyh"):
        raw["noarch"] = "python"
    return Record.of(f"{name}-1.0-{build}.conda", "packages.conda", raw)


def rules_kwargs(with_pkg_list: bool = False) -> st.SearchStrategy[dict[str, list[str]]]:
    return st.fixed_dictionaries(
        {
            "python_versions": st.lists(st.sampled_from(MINORS), max_size=3),
            "license_blacklist": st.lists(st.sampled_from(FAMILIES), max_size=4),
            "blacklist": st.lists(st.sampled_from(PATTERNS), max_size=4),
            "whitelist": st.lists(st.sampled_from(PATTERNS), max_size=3),
            "pkg_list": st.lists(st.sampled_from(PATTERNS), max_size=3) if with_pkg_list else st.just([]),
        }
    )


def swap_case(name: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(name, flips + [False] * len(name), strict=False))


@settings(max_examples=300, deadline=None)
@given(rec=records(), kwargs=rules_kwargs(), flips=st.lists(st.booleans(), max_size=20))
def test_whitelist_beats_blacklist_and_license_blacklist(
    rec: Record, kwargs: dict[str, list[str]], flips: list[bool]
) -> None:
    minor = record_python_minor(rec)
    if kwargs["python_versions"] and minor is not None:
        kwargs["python_versions"].append(minor)  # make sure the record passes step 2
    kwargs["whitelist"].append(swap_case(rec.name, flips))
    assert judge(rec, FilterRules.build(**kwargs)).kept


@settings(max_examples=300, deadline=None)
@given(rec=records(), kwargs=rules_kwargs(with_pkg_list=True), minors=st.lists(st.sampled_from(MINORS), min_size=1))
def test_whitelist_never_rescues_a_record_dropped_by_python_versions(
    rec: Record, kwargs: dict[str, list[str]], minors: list[str]
) -> None:
    minor = record_python_minor(rec)
    others = [m for m in minors if m != minor]
    kwargs["python_versions"] = others
    kwargs["whitelist"].append(rec.name)
    kwargs["pkg_list"].append(rec.name)
    verdict = judge(rec, FilterRules.build(**kwargs))
    if minor is not None and others:
        assert verdict is Verdict.PYTHON
    else:
        assert verdict is not Verdict.PYTHON


@settings(max_examples=100, deadline=None)
@given(recs=st.lists(records(), max_size=30), platforms=st.none() | st.lists(st.sampled_from(["linux-64", "osx-64"])))
def test_without_rules_every_record_is_kept(recs: list[Record], platforms: list[str] | None) -> None:
    rules = FilterRules.build(python_versions=[], license_blacklist=[], blacklist=[], whitelist=[], pkg_list=[])
    assert select(recs, rules) == recs
    assert all(judge(r, rules) is Verdict.KEPT for r in recs)
    assert subdir_selected("noarch", FilterRules.build(platforms=platforms))


@settings(max_examples=200, deadline=None)
@given(recs=st.lists(records(), max_size=20), kwargs=rules_kwargs(), extra=st.sampled_from(PATTERNS))
def test_adding_to_blacklist_never_adds_records(recs: list[Record], kwargs: dict[str, list[str]], extra: str) -> None:
    before = FilterRules.build(**kwargs)
    after = FilterRules.build(**{**kwargs, "blacklist": [*kwargs["blacklist"], extra]})
    for rec in recs:
        if judge(rec, after).kept:
            assert judge(rec, before).kept
    assert len(select(recs, after)) <= len(select(recs, before))


def named_by(name: str, patterns: list[str]) -> bool:
    """The reference's name matching, one pattern at a time: case-insensitive, `*` and `?` as in a shell."""
    return any(fnmatch.fnmatchcase(name.lower(), pattern.lower()) for pattern in patterns)


def reference_keeps(rec: Record, kwargs: dict[str, list[str]]) -> bool:
    """The reference tool's documented order, written out plainly, as the oracle `select` is held to."""
    minor = record_python_minor(rec)
    if kwargs["python_versions"] and minor is not None and minor not in kwargs["python_versions"]:
        return False
    if kwargs["pkg_list"]:
        return named_by(rec.name, kwargs["pkg_list"])
    families = frozenset(family.upper() for family in kwargs["license_blacklist"])
    by_license = bool(families) and blacklisted(record_family_of(rec), families)
    if by_license or named_by(rec.name, kwargs["blacklist"]):
        return named_by(rec.name, kwargs["whitelist"])
    return True


@settings(max_examples=300, deadline=None)
@given(recs=st.lists(records(), max_size=20), kwargs=rules_kwargs(with_pkg_list=True), pkg_list=st.booleans())
def test_selection_is_the_ordered_subset_the_reference_keeps(
    recs: list[Record], kwargs: dict[str, list[str]], pkg_list: bool
) -> None:
    kwargs = kwargs if pkg_list else {**kwargs, "pkg_list": []}
    kept = select(recs, FilterRules.build(**kwargs))
    assert kept == [rec for rec in recs if reference_keeps(rec, kwargs)]  # in upstream's order, duplicates kept
