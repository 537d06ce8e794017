"""Pure: repodata.json / .zst bytes <-> records; upstream records are carried over verbatim, never rebuilt."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard

from mirror_engine.errors import BadRepodata
from mirror_engine.gcpause import without_gc

SECTIONS = ("packages", "packages.conda")
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+!-]*\.(tar\.bz2|conda)$")
JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Record:
    """One upstream record; `raw` is exactly what upstream served and is what we publish."""

    filename: str
    section: str
    raw: JsonObject

    @property
    def name(self) -> str:
        return str(self.raw.get("name", ""))

    @property
    def version(self) -> str:
        return str(self.raw.get("version", ""))

    @property
    def build(self) -> str:
        return str(self.raw.get("build", ""))

    @property
    def depends(self) -> list[object]:
        """Upstream's list as it is (items unchecked): read for every record, so not copied."""
        value = self.raw.get("depends")
        return value if isinstance(value, list) else []

    @property
    def size(self) -> int | None:
        value = self.raw.get("size")
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    @property
    def sha256(self) -> str | None:
        return _hex_digest(self.raw.get("sha256"), 64)

    @property
    def md5(self) -> str | None:
        return _hex_digest(self.raw.get("md5"), 32)

    def unusable_because(self) -> str | None:
        """Why we cannot mirror this record safely, or None when we can."""
        if not _SAFE_FILENAME.fullmatch(self.filename):
            return f"unsafe file name {self.filename!r}"
        if not self.name:
            return "record has no name"
        if self.size is None:
            return "record has no valid size"
        if self.sha256 is None and self.md5 is None:
            return "record has neither a valid sha256 nor md5"
        return None


def is_package_filename(name: str) -> bool:
    return name.endswith((".tar.bz2", ".conda")) and not name.startswith(".")


def _hex_digest(value: object, length: int) -> str | None:
    if not isinstance(value, str) or len(value) != length:
        return None
    try:  # fromhex is C-fast, but skips whitespace: the decoded length catches that
        valid = len(bytes.fromhex(value)) * 2 == length
    except ValueError:
        return None
    return value.lower() if valid else None


@dataclass(frozen=True, slots=True)
class Repodata:
    """One subdir's index as served upstream: records of both sections plus what we pass through."""

    info: JsonObject
    records: tuple[Record, ...]
    removed: tuple[str, ...] = ()
    extra: JsonObject = field(default_factory=dict)  # top-level keys we do not interpret

    @property
    def base_url(self) -> str | None:
        value = self.info.get("base_url")
        return value if isinstance(value, str) and value else None


def decompress_zst(data: bytes, source: str) -> bytes:
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        data = decompressor.decompress(data)
    except zstandard.ZstdError as exc:
        raise BadRepodata(f"{source}: not valid zstd: {exc}") from None
    if not decompressor.eof:
        raise BadRepodata(f"{source}: not valid zstd: the frame is cut short")
    return data


@without_gc
def parse_repodata(data: bytes, source: str) -> Repodata:
    """Parse repodata.json bytes; any shape we cannot trust is a BadRepodata naming the source and key."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRepodata(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRepodata(f"{source}: top level is not a JSON object")
    info = doc.get("info", {})
    if not isinstance(info, dict):
        raise BadRepodata(f"{source}: info: not an object")
    records: list[Record] = []
    for section in SECTIONS:
        entries = doc.get(section, {})
        if not isinstance(entries, dict):
            raise BadRepodata(f"{source}: {section}: not an object")
        for filename, raw in entries.items():
            if not isinstance(raw, dict):
                raise BadRepodata(f"{source}: {section}[{filename!r}]: not an object")
            records.append(Record(filename, section, raw))
    removed = doc.get("removed", [])
    if not isinstance(removed, list) or not all(isinstance(item, str) for item in removed):
        raise BadRepodata(f"{source}: removed: not a list of file names")
    extra = {key: value for key, value in doc.items() if key not in (*SECTIONS, "info", "removed")}
    return Repodata(info=info, records=tuple(records), removed=tuple(removed), extra=extra)


@without_gc
def build_index(
    subdir: str, upstream: Iterable[Repodata], records: Iterable[Record], removed: Iterable[str] | None = None
) -> JsonObject:
    """The repodata a mirror publishes: the given upstream records unchanged, upstream's other keys kept.

    `info` and unknown top-level keys come from the first upstream index; `base_url` is dropped so
    clients fetch packages from the mirror, not from upstream. `removed` is the given list, or else the
    union of upstream's, in order.
    """
    upstream = list(upstream)
    first = upstream[0] if upstream else Repodata(info={}, records=())
    info = {key: value for key, value in first.info.items() if key != "base_url"}
    info.setdefault("subdir", subdir)
    sections: dict[str, JsonObject] = {section: {} for section in SECTIONS}
    for record in sorted(records, key=lambda r: (r.section, r.filename)):
        sections[record.section][record.filename] = record.raw
    if removed is None:
        removed = dict.fromkeys(name for repodata in upstream for name in repodata.removed)
    doc: JsonObject = {"info": info, **sections, "removed": list(removed)}
    for key, value in first.extra.items():
        doc.setdefault(key, value)
    doc.setdefault("repodata_version", 1)
    return doc


def encode_index(doc: Mapping[str, Any]) -> bytes:
    """Deterministic bytes: the same index always gives the same sha256."""
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def compress_zst(data: bytes) -> bytes:
    # Level 3: on a 300 MB index, level 10 took 10x as long for a file 6 % smaller, and 19 takes minutes.
    return zstandard.ZstdCompressor(level=3, threads=-1).compress(data)
