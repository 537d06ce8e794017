"""Pure: repodata records of a realistic shape (names, versions, builds, depends, licenses), from a seed.

The shape follows what conda-forge's linux-64 index holds: a long tail of names with a few builds each
and a head of names with thousands, python-specific builds beside plain ones, pinned depends, both
.conda and .tar.bz2 files. Sizes and hashes are the caller's: real ones for files that exist, made-up
ones (same length, same alphabet) for records whose files are never fetched.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

SUBDIR = "linux-64"
_SYLLABLES = (
    "ar", "ba", "co", "da", "el", "fo", "ge", "hy", "io", "ja", "ka", "lu", "mo", "ne", "or", "pa", "qu", "ro",
    "sa", "te", "ur", "vi", "wa", "xe", "yo", "za", "bit", "cor", "dex", "fin", "gl", "kit", "lin", "mat", "net",
    "plot", "sci", "tor", "ux", "zip",
)  # fmt: skip
_PREFIXES = ("", "", "", "", "py", "lib", "r-", "perl-", "ros-humble-", "jupyterlab-", "font-", "xorg-")
_LICENSES = (
    ("MIT", "MIT", 30), ("BSD-3-Clause", "BSD", 20), ("Apache-2.0", "APACHE", 15), ("GPL-3.0-or-later", "GPL3", 6),
    ("GPL-2.0-or-later", "GPL2", 5), ("LGPL-2.1-or-later", "LGPL", 4), ("MPL-2.0", "MOZILLA", 3),
    ("BSD-2-Clause", "BSD", 3), ("ISC", "ISC", 2), ("Zlib", "OTHER", 1), ("Unlicense", "PUBLIC-DOMAIN", 1),
    ("LicenseRef-Proprietary", "PROPRIETARY", 1), ("GPL-2.0-or-later OR MIT", "GPL", 1),
)  # fmt: skip
_PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12")
_COMMON_DEPENDS = ("libgcc-ng >=12", "libstdcxx-ng >=12", "libzlib >=1.2.13,<2.0.0a0", "openssl >=3.2.1,<4.0a0")


@dataclass(frozen=True, slots=True)
class Draft:
    """A record without its file facts: the caller adds size, sha256 and md5 (real or made up)."""

    filename: str
    fields: dict[str, object]

    @property
    def name(self) -> str:
        return str(self.fields["name"])

    @property
    def is_conda(self) -> bool:
        return self.filename.endswith(".conda")

    def record(self, size: int, sha256: str, md5: str) -> dict[str, object]:
        return {**self.fields, "size": size, "sha256": sha256, "md5": md5}


def package_names(rng: random.Random, count: int) -> list[str]:
    """`count` distinct lowercase package names, made of syllables behind a conda-forge-like prefix."""
    names: dict[str, None] = {}
    while len(names) < count:
        stem = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
        if rng.random() < 0.15:
            stem += f"-{rng.choice(('core', 'base', 'tools', 'utils', 'data', 'cli'))}"
        names[rng.choice(_PREFIXES) + stem] = None
    return list(names)


def records_per_name(rng: random.Random, names: int, records: int) -> list[int]:
    """How many records each name gets: at least one each, the rest by a power law over rank, so that a
    few names (say ros-humble-*, libarrow) hold thousands of builds and most hold a handful."""
    weights = list(itertools.accumulate(1 / (rank**0.6) for rank in range(1, names + 1)))
    counts = [1] * names
    for index in rng.choices(range(names), cum_weights=weights, k=records - names):
        counts[index] += 1
    return counts


def lognormal_sizes(rng: random.Random, count: int, median: int, mean: int) -> list[int]:
    """File sizes with the given median and (expected) mean: sigma follows from mean = median * e^(sigma^2/2)."""
    sigma = math.sqrt(2 * math.log(mean / median))
    return [max(1, round(rng.lognormvariate(math.log(median), sigma))) for _ in range(count)]


def drafts(
    rng: random.Random, names: list[str], counts: list[int], *, start: int = 1_500_000_000_000
) -> Iterator[Draft]:
    """Records for each name in turn: versions ascending, a few builds per version, one in three files
    the older .tar.bz2 format. File names are unique (the build hash makes them so)."""
    popular = names[: max(1, len(names) // 20)]
    seen: set[str] = set()
    for name, count in zip(names, counts, strict=True):
        python = rng.random() < 0.4  # a python package: one build per python minor
        license_id, family, _ = rng.choices(_LICENSES, weights=[w for *_, w in _LICENSES])[0]
        extra = [f"{rng.choice(popular)} >={rng.randint(0, 9)}.{rng.randint(0, 30)}" for _ in range(rng.randint(0, 3))]
        major, minor, patch = rng.randint(0, 5), rng.randint(0, 20), 0
        made = 0
        while made < count:
            version = f"{major}.{minor}.{patch}"
            for build_number in range(rng.randint(1, 3)):
                for py in rng.sample(_PYTHONS, rng.randint(1, 4)) if python else [None]:
                    if made == count:
                        break
                    stamp = start + made * 3_600_000 + rng.randint(0, 999)  # an hour apart, in ms
                    draft = _draft(rng, name, version, build_number, py, license_id, family, extra, stamp)
                    if draft.filename not in seen:
                        seen.add(draft.filename)
                        made += 1
                        yield draft
            patch += 1
            if rng.random() < 0.2:
                minor, patch = minor + 1, 0


def _draft(
    rng: random.Random,
    name: str,
    version: str,
    build_number: int,
    python: str | None,
    license_id: str,
    family: str,
    extra: list[str],
    timestamp: int,
) -> Draft:
    digest = f"{rng.getrandbits(28):07x}"
    depends = list(_COMMON_DEPENDS[: rng.randint(0, 3)]) + extra
    if python is None:
        build = f"h{digest}_{build_number}"
    else:
        tag = python.replace(".", "")
        build = f"py{tag}h{digest}_{build_number}"
        major, minor = python.split(".")
        depends += [f"python >={python},<{major}.{int(minor) + 1}.0a0", f"python_abi {python}.* *_cp{tag}"]
    fields: dict[str, object] = {
        "build": build,
        "build_number": build_number,
        "depends": sorted(depends),
        "license": license_id,
        "license_family": family,
        "name": name,
        "subdir": SUBDIR,
        "timestamp": timestamp,
        "version": version,
    }
    if rng.random() < 0.15:
        fields["constrains"] = [f"{name}-doc {version}"]
    extension = ".tar.bz2" if rng.random() < 1 / 3 else ".conda"
    return Draft(f"{name}-{version}-{build}{extension}", fields)


def fake_digests(rng: random.Random) -> tuple[str, str]:
    """A sha256 and md5 of the right shape for a record whose file nobody fetches."""
    return f"{rng.getrandbits(256):064x}", f"{rng.getrandbits(128):032x}"


def repodata(records: dict[str, dict[str, object]]) -> dict[str, object]:
    """A repodata.json document: .conda files under packages.conda, .tar.bz2 under packages."""
    return {
        "info": {"subdir": SUBDIR},
        "packages": {name: r for name, r in records.items() if name.endswith(".tar.bz2")},
        "packages.conda": {name: r for name, r in records.items() if name.endswith(".conda")},
        "removed": [],
        "repodata_version": 1,
    }
