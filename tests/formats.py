"""A fixture channel with every record section of 2026 (CEP 48 `v3`, wheels) and keys no mirror knows."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import zstandard

from mirror_engine.demo import build_channel

WHEEL = "attrs-23.2.0-py3-none-any.whl"  # in packages.whl, keyed by an identifier
V3_WHEEL = "six-1.16.0-py2.py3-none-any.whl"  # in v3.whl
V3_ONLY = "numpy-1.26.4-py311h64a7726_0.conda"  # in v3.conda alone: no legacy record names it
BOTH = "python-3.11.9-h955ad1f_0.conda"  # in packages.conda and in v3.conda, the same file
V3_BZ2 = ("zlib-1.3.1-h5eee18b_0.tar.bz2", "readline-8.2-h5eee18b_0.tar.bz2")  # in v3.tar.bz2 alone
V3_GPL = "gdbm-1.18-hd4cb3f1_4.conda"  # GPL, in v3.conda alone: license_blacklist must reach it there
UNKNOWN = ("v4", "v3.conda-v2", "packages.future")  # record-like keys of a shape no mirror knows


def wheel_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            zipfile.ZipInfo(f"{name.split('-')[0]}/__init__.py", (2024, 1, 1, 0, 0, 0)), b"# " + name.encode()
        )
    return buffer.getvalue()


def _stem(filename: str) -> str:
    return filename.removesuffix(".conda").removesuffix(".tar.bz2")


def _wheel_record(root: Path, filename: str) -> dict[str, Any]:
    data = wheel_bytes(filename)
    (root / "noarch" / filename).write_bytes(data)
    name, version = filename.split("-")[:2]
    return {
        "name": name, "version": version, "build": "pypi_0", "build_number": 0, "depends": ["python >=3.8"],
        "subdir": "noarch", "noarch": "python", "url": filename, "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "timestamp": 1_700_000_100_000, "license": "MIT",
    }  # fmt: skip


def build_formats_channel(root: Path) -> dict[str, dict[str, Any]]:
    """The demo channel re-indexed with records in every section; returns the documents written."""
    docs = build_channel(root, zst=False)
    linux = docs["linux-64"]
    conda, bz2 = linux["packages.conda"], linux["packages"]
    v3: dict[str, dict[str, Any]] = {"conda": {}, "tar.bz2": {}, "whl": {}}
    for filename in (V3_ONLY, V3_GPL):
        v3["conda"][_stem(filename)] = conda.pop(filename) | {"indexed_timestamp": 1_750_000_000_000}
    v3["conda"][_stem(BOTH)] = conda[BOTH] | {"indexed_timestamp": 1_760_000_000_000}
    for filename in V3_BZ2:
        v3["tar.bz2"][_stem(filename)] = bz2.pop(filename)
    record = next(iter(v3["conda"].values()))
    linux["v3"] = v3
    linux["info"]["repodata_revisions"] = {"v3": {"n_packages": 99, "oldest": 1, "newest": 2, "message": "v3!"}}
    linux["v4"] = {"conda": {"tzdata-2099a-h0_0": record | {"name": "tzdata"}}}
    linux["v3"]["conda-v2"] = {"numpy-2.0-h0_0": record}
    linux["packages.future"] = {"numpy-2.0-h0_0.conda-v2": record}
    linux["signatures"] = {name: {"key": {"signature": "00"}} for name in (V3_ONLY, V3_GPL, "gone-1-0.conda")}
    noarch = docs["noarch"]
    noarch["packages.whl"] = {"attrs-23.2.0-pypi_0": _wheel_record(root, WHEEL)}
    noarch["v3"] = {"whl": {"six-1.16.0-pypi_0": _wheel_record(root, V3_WHEEL)}}
    noarch["info"]["repodata_revisions"] = {"v3": {"n_packages": 1}}
    for subdir, doc in docs.items():
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        (root / subdir / "repodata.json").write_bytes(data)
        (root / subdir / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    return docs
