"""Build a small channel of valid conda packages: the demo's upstream and the tests' fixture channels.

`python -m mirror_engine.demo OUT_DIR` writes the demo channel. Every byte is derived from fixed seeds,
so the same packages always hash the same.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import random
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

EPOCH = 1_700_000_000  # a fixed mtime for every archive member, so archives are reproducible


@dataclass(frozen=True)
class DemoPackage:
    name: str
    version: str
    build: str
    subdir: str = "linux-64"
    depends: tuple[str, ...] = ()
    license: str | None = None
    license_family: str | None = None
    formats: tuple[str, ...] = (".conda",)
    payload_size: int = 2048
    noarch: str | None = None
    build_number: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def filename(self, ext: str) -> str:
        return f"{self.name}-{self.version}-{self.build}{ext}"

    def index_json(self) -> dict[str, Any]:
        index: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "build_number": self.build_number,
            "depends": list(self.depends),
            "subdir": self.subdir,
            "timestamp": EPOCH * 1000,
        }
        if self.license is not None:
            index["license"] = self.license
        if self.license_family is not None:
            index["license_family"] = self.license_family
        if self.noarch is not None:
            index["noarch"] = self.noarch
        if self.subdir != "noarch":
            index["arch"], index["platform"] = {"linux-64": ("x86_64", "linux")}.get(self.subdir, (None, None))
        return index | self.extra


DEMO_PACKAGES: tuple[DemoPackage, ...] = (
    DemoPackage("python", "3.11.9", "h955ad1f_0", license="PSF-2.0", license_family="PSF",
                formats=(".conda", ".tar.bz2"), payload_size=600_000),
    DemoPackage("python", "3.10.14", "h955ad1f_1", license="PSF-2.0", license_family="PSF",
                payload_size=600_000),
    DemoPackage("python_abi", "3.11", "2_cp311", depends=("python 3.11.*",), license="BSD-3-Clause",
                license_family="BSD", payload_size=512),
    DemoPackage("numpy", "1.26.4", "py311h64a7726_0", depends=("python >=3.11,<3.12.0a0", "python_abi 3.11.* *_cp311"),
                license="BSD-3-Clause", license_family="BSD", payload_size=400_000),
    DemoPackage("numpy", "1.26.4", "py310hb13e2d6_0", depends=("python >=3.10,<3.11.0a0",),
                license="BSD-3-Clause", license_family="BSD", payload_size=400_000),
    DemoPackage("readline", "8.2", "h5eee18b_0", depends=("ncurses >=6.4",), license="GPL-3.0-only",
                license_family="GPL3", formats=(".conda", ".tar.bz2"), payload_size=120_000),
    DemoPackage("ncurses", "6.4", "h6a678d5_0", license="X11 AND BSD-3-Clause", license_family="MIT",
                payload_size=300_000),
    DemoPackage("gdbm", "1.18", "hd4cb3f1_4", depends=("readline >=8.0",), license="GPL-3.0-or-later",
                payload_size=80_000),
    DemoPackage("zlib", "1.3.1", "h5eee18b_0", license="Zlib", license_family="Other",
                formats=(".conda", ".tar.bz2"), payload_size=90_000),
    DemoPackage("futures", "3.3.0", "py27_0", depends=("python 2.7*",), license="PSF", payload_size=20_000),
    DemoPackage("requests", "2.32.3", "pyhd8ed1ab_0", subdir="noarch", noarch="python",
                depends=("python >=3.8", "urllib3 >=1.21.1,<3"), license="Apache-2.0", payload_size=60_000),
    DemoPackage("urllib3", "2.2.2", "pyhd8ed1ab_1", subdir="noarch", noarch="python",
                depends=("python >=3.8",), license="MIT", license_family="MIT", payload_size=50_000),
    DemoPackage("tzdata", "2024a", "h0c530f3_0", subdir="noarch", noarch="generic",
                license="LicenseRef-Public-Domain", payload_size=300_000),
)  # fmt: skip

# An upstream hot-fix: the served record differs from the archive's info/index.json, as
# conda-forge's and Anaconda's repodata patches make it. A mirror must carry the served record.
DEMO_PATCHES: dict[str, dict[str, Any]] = {
    "numpy-1.26.4-py311h64a7726_0.conda": {"constrains": ["numpy-base <0a0"]},
}


def _payload(package: DemoPackage) -> bytes:
    rng = random.Random(f"{package.name}-{package.version}-{package.build}")
    return rng.randbytes(package.payload_size)


def _tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _members(package: DemoPackage) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(info members, payload members) of a package."""
    payload_path = f"share/{package.name}/data.bin"
    payload = _payload(package)
    paths = {
        "paths": [{"_path": payload_path, "path_type": "hardlink",
                   "sha256": hashlib.sha256(payload).hexdigest(), "size_in_bytes": len(payload)}],
        "paths_version": 1,
    }  # fmt: skip
    info = [
        ("info/index.json", json.dumps(package.index_json(), indent=2, sort_keys=True).encode()),
        ("info/paths.json", json.dumps(paths, indent=2).encode()),
        ("info/files", f"{payload_path}\n".encode()),
    ]
    return info, [(payload_path, payload)]


def package_bytes(package: DemoPackage, ext: str) -> bytes:
    info, payload = _members(package)
    if ext == ".tar.bz2":
        return bz2.compress(_tar(info + payload), 9)
    stem = package.filename("")
    compressor = zstandard.ZstdCompressor(level=3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in (
            ("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
            (f"pkg-{stem}.tar.zst", compressor.compress(_tar(payload))),
            (f"info-{stem}.tar.zst", compressor.compress(_tar(info))),
        ):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2023, 11, 14, 22, 13, 20)), data)
    return buffer.getvalue()


def build_channel(
    root: Path,
    packages: Iterable[DemoPackage] = DEMO_PACKAGES,
    *,
    patches: dict[str, dict[str, Any]] | None = None,
    zst: bool = True,
    channeldata: bool = True,
    removed: dict[str, list[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write packages and an index per subdir under `root`; returns the repodata documents written."""
    patches = DEMO_PATCHES if patches is None else patches
    docs: dict[str, dict[str, Any]] = {}
    for package in packages:
        doc = docs.setdefault(package.subdir, {
            "info": {"subdir": package.subdir}, "packages": {}, "packages.conda": {},
            "removed": list((removed or {}).get(package.subdir, [])), "repodata_version": 1,
        })  # fmt: skip
        folder = root / package.subdir
        folder.mkdir(parents=True, exist_ok=True)
        for ext in package.formats:
            data = package_bytes(package, ext)
            filename = package.filename(ext)
            (folder / filename).write_bytes(data)
            record = package.index_json() | {
                "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
            record.update(patches.get(filename, {}))
            doc["packages.conda" if ext == ".conda" else "packages"][filename] = record
    for subdir, doc in docs.items():
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        (root / subdir / "repodata.json").write_bytes(data)
        if zst:
            (root / subdir / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    if channeldata:
        (root / "channeldata.json").write_text(json.dumps({"channeldata_version": 1, "subdirs": sorted(docs)}))
    return docs


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m mirror_engine.demo OUT_DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    docs = build_channel(root)
    files = sum(len(doc["packages"]) + len(doc["packages.conda"]) for doc in docs.values())
    print(f"demo channel: {files} package files in {', '.join(sorted(docs))} at {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
