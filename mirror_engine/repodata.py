"""Pure: repodata.json / .zst bytes <-> records; upstream records are carried over verbatim, never rebuilt."""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import zstandard

from mirror_engine.errors import BadRepodata
from mirror_engine.gcpause import without_gc

SECTIONS = ("packages", "packages.conda")  # the legacy sections: keyed by file name, always written
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+!-]*\.(tar\.bz2|conda|whl)$")
PACKAGE_EXTENSIONS = (".tar.bz2", ".conda", ".whl")
JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Section:
    """One map of records in an index, and how a key of it names the record's file.

    `packages` and `packages.conda` are keyed by file name. CEP 48's `v3` buckets are keyed by the file
    name without its extension (`v3.conda`: `zstd-1.5.7-h0_0` is `zstd-1.5.7-h0_0.conda`). Wheel records
    (`packages.whl`, `v3.whl`) are keyed by an identifier that is no file name: their `url` says which file.
    """

    name: str  # as the summary and the JSON report say it: "packages.conda", "v3.tar.bz2"
    top: str  # the top-level key
    bucket: str | None = None  # the key inside `top` (v3), or None when `top` is the map itself
    extension: str = ""  # appended to a key for the file name ("" for the legacy maps: the key is one)
    wheel: bool = False  # the record's `url` (or `fn`) names its file


LEGACY_SECTIONS = (Section("packages", "packages"), Section("packages.conda", "packages.conda"))
V3 = "v3"
RECORD_SECTIONS: tuple[Section, ...] = (
    *LEGACY_SECTIONS,
    Section("packages.whl", "packages.whl", wheel=True),
    Section("v3.conda", V3, "conda", ".conda"),
    Section("v3.tar.bz2", V3, "tar.bz2", ".tar.bz2"),
    Section("v3.whl", V3, "whl", wheel=True),
)
SECTION_BY_NAME = {section.name: section for section in RECORD_SECTIONS}
_TOP_LEVEL_SECTIONS = {section.top: section for section in RECORD_SECTIONS if section.bucket is None}
_V3_BUCKETS = {section.bucket: section for section in RECORD_SECTIONS if section.top == V3}
# Top-level keys that hold no records, carried as upstream has them.
NOT_RECORDS = ("info", "removed", "repodata_version", "signatures")
_RECORD_FIELDS = ("version", "build", "sha256", "md5", "size", "url", "depends")
RecordBytes = bytes | msgspec.Raw  # a Raw is a slice of the index it was decoded from, not a copy
_EMPTY_LIST = msgspec.Raw(b"[]")


class _Checked(msgspec.Struct, gc=False):
    """The fields every record is checked and planned by, decoded once when the index is parsed. Typed
    Any: one odd value must not fail a whole index (Record.unusable_because judges it)."""

    name: Any = None
    size: Any = None
    sha256: Any = None
    md5: Any = None


class RecordDetails(msgspec.Struct, gc=False):
    """Fields that only some filters, the pages and the dependency closure read: decoded from a record's
    bytes when asked for (`Record.details`), so that 600,000 records do not each hold them."""

    version_: Any = msgspec.field(name="version", default=None)
    build_: Any = msgspec.field(name="build", default=None)
    build_number: Any = None
    subdir: Any = None
    license_: Any = msgspec.field(name="license", default=None)
    license_family_: Any = msgspec.field(name="license_family", default=None)
    noarch: Any = None
    timestamp: Any = None
    md5: Any = None
    depends_: msgspec.Raw = msgspec.field(name="depends", default=_EMPTY_LIST)

    @property
    def version(self) -> str:
        return _text(self.version_)

    @property
    def build(self) -> str:
        return _text(self.build_)

    @property
    def license(self) -> str | None:
        return self.license_ if isinstance(self.license_, str) else None

    @property
    def license_family(self) -> str | None:
        return self.license_family_ if isinstance(self.license_family_, str) else None

    @property
    def timestamp_ms(self) -> int:
        value = self.timestamp
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    @property
    def depends(self) -> list[object]:
        """Upstream's list as it is (items unchecked)."""
        try:
            value = _ANY_JSON.decode(self.depends_)
        except msgspec.DecodeError:
            return []
        return value if isinstance(value, list) else []


# msgspec for every JSON value an index carries: orjson turns an integer beyond 64 bits into a float,
# which would change upstream's value in what we publish.
_ANY_JSON = msgspec.json.Decoder()
_CHECKED = msgspec.json.Decoder(_Checked)
_DETAILS = msgspec.json.Decoder(RecordDetails)


class Record:
    """One upstream record: `json` is exactly the bytes upstream served for it, and is what we publish.

    A conda-forge subdir has 600,000 records: each holds its bytes (a slice of the served index) and the
    few checked fields every step reads; the rest is decoded from the bytes where needed (`details`).
    """

    __slots__ = ("_md5", "filename", "json", "name", "section", "sha256", "size")

    def __init__(self, filename: str, section: str, json: RecordBytes) -> None:
        self.filename = filename
        self.section = section
        self.json = json
        checked = _CHECKED.decode(json)
        self.name: str = _text(checked.name)
        value = checked.size
        self.size: int | None = value if type(value) is int and value >= 0 else None
        self.sha256: str | None = checked_digest(checked.sha256, 64)
        # md5 is read only where a record has no sha256: 600,000 others need not hold one
        self._md5: str | None = checked_digest(checked.md5, 32) if self.sha256 is None else None

    @property
    def key(self) -> str:
        """The record's key in its section: its file name in the legacy sections (KeyedRecord)."""
        return self.filename

    @classmethod
    def of(cls, filename: str, section: str, raw: Mapping[str, Any]) -> Record:
        """A record from its decoded form (shards, tests): its bytes are msgspec's encoding of `raw`."""
        return cls(filename, section, msgspec.json.encode(raw))  # orjson's bytes keep kB of spare room each

    @property
    def raw(self) -> JsonObject:
        """The whole record, decoded anew on each call (shards decode each record once)."""
        doc: JsonObject = _ANY_JSON.decode(self.json)
        return doc

    @property
    def details(self) -> RecordDetails:
        """The fields beyond the checked ones, decoded anew on each call: read it once per record."""
        return _DETAILS.decode(self.json)

    @property
    def md5(self) -> str | None:
        return self._md5 if self.sha256 is None else checked_digest(self.details.md5, 32)

    @property
    def version(self) -> str:
        return self.details.version

    @property
    def build(self) -> str:
        return self.details.build

    @property
    def depends(self) -> list[object]:
        return self.details.depends

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        key = (self.filename, self.section)
        return key == (other.filename, other.section) and bytes(self.json) == bytes(other.json)

    def __hash__(self) -> int:
        return hash((self.filename, self.section))

    def __repr__(self) -> str:
        return f"Record({self.filename!r}, {self.section!r}, {bytes(self.json)!r})"

    def unusable_because(self) -> str | None:
        """Why we cannot mirror this record safely, or None when we can."""
        if not _SAFE_FILENAME.fullmatch(self.filename):
            return f"unsafe file name {self.filename!r}"
        if not self.name:
            return "record has no name"
        if self.size is None:
            return "record has no valid size"
        if self.sha256 is None and self._md5 is None:
            return "record has neither a valid sha256 nor md5"
        return None


class _Names(msgspec.Struct, gc=False):
    """The fields that may name a record's file besides its key."""

    fn: Any = None
    url: Any = None


_NAMES = msgspec.json.Decoder(_Names)


class KeyedRecord(Record):
    """A record of a section whose keys are not file names (v3, wheels): its file name is derived from the
    key or the record (`file_for`); a record whose fields contradict its key is unusable, never guessed at."""

    __slots__ = ("_key", "_problem")

    def __init__(self, key: str, section: Section, json: RecordBytes) -> None:
        names = _NAMES.decode(json)
        filename, self._problem = file_for(section, key, names.fn, names.url)
        self._key = key
        super().__init__(filename, section.name, json)

    @property
    def key(self) -> str:
        return self._key

    def unusable_because(self) -> str | None:
        return self._problem or super().unusable_because()


def file_for(section: Section, key: str, fn: object, url: object) -> tuple[str, str | None]:
    """(file name, why the record cannot be mirrored or None) for a record of a keyed section."""
    if not section.wheel:
        filename = key + section.extension
        if fn is not None and fn != filename:
            return filename, f"{section.name}[{key!r}]: fn {fn!r} is not {filename!r}"
        return filename, None
    if isinstance(url, str):
        # Only a file beside the index: a record's bytes are published unchanged, so an absolute or
        # other-folder url would send clients of the mirror to a file the mirror does not hold.
        if not url or any(char in url for char in ":/?#%\\") or url.startswith("."):
            return url, f"{section.name}[{key!r}]: url {url!r} is not a file beside the index"
        if fn is not None and fn != url:
            return url, f"{section.name}[{key!r}]: fn {fn!r} is not its url {url!r}"
        filename = url
    elif isinstance(fn, str) and url is None:
        filename = fn
    else:
        return key, f"{section.name}[{key!r}]: names no file (no url or fn)"
    if not filename.endswith(".whl"):
        return filename, f"{section.name}[{key!r}]: {filename!r} is not a wheel"
    return filename, None


def make_record(section: Section, key: str, json: RecordBytes) -> Record:
    """The record at `key` of `section`, of the class that section's keys need."""
    if not section.extension and not section.wheel:
        return Record(key, section.name, json)
    return KeyedRecord(key, section, json)


def holds_records(value: object, depth: int = 3) -> bool:
    """Whether a JSON value holds something shaped like package records (an object with a string `name`
    and a record's fields), `depth` levels of objects and lists down: what an unknown key must not
    carry into a published index unfiltered."""
    if depth < 0:
        return False
    if isinstance(value, dict):
        if isinstance(value.get("name"), str) and any(field in value for field in _RECORD_FIELDS):
            return True
        return any(holds_records(item, depth - 1) for item in value.values())
    if isinstance(value, list):
        return any(holds_records(item, depth - 1) for item in value)
    return False


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def is_package_filename(name: str) -> bool:
    return name.endswith(PACKAGE_EXTENSIONS) and not name.startswith(".")


def published_files(repodata_json: bytes, source: str) -> dict[str, int]:
    """The package files an index names in any section, with their sizes (0 when not valid)."""
    return {record.filename: record.size or 0 for record in parse_repodata(repodata_json, source).records}


_LOWER_HEX = {64: re.compile("[0-9a-f]{64}"), 32: re.compile("[0-9a-f]{32}")}


def checked_digest(value: object, length: int) -> str | None:
    """`value` as lower-case hex when it is a hex digest of `length` digits, else None."""
    if isinstance(value, str) and len(value) == length and _LOWER_HEX[length].fullmatch(value):
        return value  # as nearly every record has it: no copy
    digest = digest_bytes(value, length)
    return None if digest is None else digest.hex()


def digest_bytes(value: object, length: int) -> bytes | None:
    """A hex digest of `length` digits (either case) as raw bytes, else None: what `checked_digest` accepts."""
    if not isinstance(value, str) or len(value) != length:
        return None
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        return None
    return digest if len(digest) * 2 == length else None  # fromhex skips whitespace: the length catches it


@dataclass(frozen=True, slots=True)
class Repodata:
    """One subdir's index as served upstream: records of both sections plus what we pass through."""

    info: JsonObject
    records: tuple[Record, ...]
    removed: tuple[str, ...] = ()
    extra: JsonObject = field(default_factory=dict)  # top-level keys we do not interpret
    unread: int = 0  # records left as bytes: their file names name packages not asked for (parse_repodata)
    sections: tuple[str, ...] = ()  # the record sections upstream's index has (Section.name), empty or not
    dropped: tuple[str, ...] = ()  # keys holding records in a shape we do not know: never published

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


_UTF8_CHUNK = 1 << 24
_RAW_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])  # keys decoded, values kept as their bytes


@without_gc
def parse_repodata(data: bytes, source: str, names: Callable[[str], bool] | None = None) -> Repodata:
    """Parse repodata.json bytes; any shape we cannot trust is a BadRepodata naming the source and key.

    Records stay as upstream's bytes plus the few fields every step reads (Record): msgspec decodes a
    600,000-record index this way in a fraction of the time and memory of a dict per record.

    With `names` (pkg_list), a record whose file name is a well-formed package file name of a package
    `names` rejects is not made at all, only counted (`unread`): a pkg_list of 20 names needs 400 of
    conda-forge's 600,000 records. A record whose `name` disagrees with its file name is therefore
    chosen by both; any other record is made and judged by its `name`.
    """
    _check_utf8(data, source)
    try:
        top = _RAW_OBJECT.decode(data)
    except msgspec.ValidationError:
        raise BadRepodata(f"{source}: top level is not a JSON object") from None
    except msgspec.DecodeError as exc:
        raise BadRepodata(f"{source}: not valid JSON: {exc}") from None
    maps, dropped = _section_maps(top, source)
    records: list[Record] = []
    unread = 0
    for section, section_bytes in maps:
        try:
            entries = _RAW_OBJECT.decode(section_bytes)
        except msgspec.ValidationError:
            raise BadRepodata(f"{source}: {section.name}: not an object") from None
        if names is not None and not section.wheel:  # a wheel's key does not spell its package name
            count = len(entries)
            entries = {key: raw for key, raw in entries.items() if _may_be_wanted(key + section.extension, names)}
            unread += count - len(entries)
        records += [_record(key, section, raw, source) for key, raw in entries.items()]
    rest = {}
    for key, value in top.items():
        decoded = _ANY_JSON.decode(value)
        if key not in NOT_RECORDS and holds_records(decoded):
            dropped.append(key)
        else:
            rest[key] = decoded
    info = rest.pop("info", {})
    if not isinstance(info, dict):
        raise BadRepodata(f"{source}: info: not an object")
    removed = rest.pop("removed", [])
    if not isinstance(removed, list) or not all(isinstance(item, str) for item in removed):
        raise BadRepodata(f"{source}: removed: not a list of file names")
    return Repodata(
        info=info,
        records=tuple(records),
        removed=tuple(removed),
        extra=rest,
        unread=unread,
        sections=tuple(section.name for section, _ in maps),
        dropped=tuple(dropped),
    )


def _section_maps(top: dict[str, msgspec.Raw], source: str) -> tuple[list[tuple[Section, msgspec.Raw]], list[str]]:
    """Take the record sections out of `top`: each known one with its bytes, and the names of the v3
    buckets we do not know that hold anything (left out: fail closed)."""
    maps = [(section, top.pop(key)) for key, section in _TOP_LEVEL_SECTIONS.items() if key in top]
    dropped: list[str] = []
    v3 = top.pop(V3, None)
    if v3 is not None:
        try:
            buckets = _RAW_OBJECT.decode(v3)
        except msgspec.ValidationError:
            raise BadRepodata(f"{source}: {V3}: not an object") from None
        for bucket, value in buckets.items():
            section = _V3_BUCKETS.get(bucket)
            if section is not None:
                maps.append((section, value))
            elif bytes(value).strip() not in (b"{}", b"[]", b"null"):
                dropped.append(f"{V3}.{bucket}")
    return maps, dropped


def _may_be_wanted(filename: str, names: Callable[[str], bool]) -> bool:
    """Whether a record must be read to be judged: its file name's package is wanted, or the file name is
    not one we could mirror (so that Record.unusable_because reports it)."""
    parts = filename.rsplit("-", 2)  # name, version, build and extension: neither of the last two has a "-"
    return len(parts) < 3 or names(parts[0]) or not _SAFE_FILENAME.fullmatch(filename)


def _check_utf8(data: bytes, source: str) -> None:
    """msgspec checks the JSON syntax of the values it keeps as bytes, but not that their strings are
    UTF-8: without this, such bytes would reach the published index and break every client reading it."""
    if data.isascii():  # nearly every index, checked in C without a copy
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    start = 0
    try:
        for start in range(0, len(view), _UTF8_CHUNK):  # a piece at a time: a 266 MB index, not a 266 MB copy
            decoder.decode(view[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise BadRepodata(f"{source}: not valid UTF-8 at byte {start + exc.start}") from None


def _record(key: str, section: Section, raw: msgspec.Raw, source: str) -> Record:
    try:
        return make_record(section, key, raw)
    except msgspec.ValidationError:
        raise BadRepodata(f"{source}: {section.name}[{key!r}]: not an object") from None


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def encode_index(
    subdir: str, upstream: Iterable[Repodata], records: Iterable[Record], removed: Iterable[str] | None = None
) -> bytes:
    """`write_index_json` into bytes."""
    out = io.BytesIO()
    write_index_json(out, subdir, upstream, records, removed)
    return out.getvalue()  # the buffer itself, not a copy


@without_gc
def write_index_json(
    out: Writable,
    subdir: str,
    upstream: Iterable[Repodata],
    records: Iterable[Record],
    removed: Iterable[str] | None = None,
) -> None:
    """Write the repodata.json a mirror publishes to `out`: the given upstream records, each exactly
    upstream's bytes, and upstream's other keys. Written a thousand records at a time, so that a
    600,000-record index can go to its file without ever lying whole in memory.

    `info` and unknown top-level keys come from the first upstream index; `base_url` is dropped so
    clients fetch packages from the mirror, not from upstream. `removed` is the given list, or else the
    union of upstream's, in order. Keys are sorted at the top level and records by file name, so the
    same records always give the same bytes, and so the same sha256.
    """
    upstream = list(upstream)
    first = upstream[0] if upstream else Repodata(info={}, records=())
    by_section: dict[str, dict[str, RecordBytes]] = {section: {} for section in SECTIONS}
    for repodata in upstream:  # a section upstream has stays in the index, if empty, as clients saw it
        for name in repodata.sections:
            by_section.setdefault(name, {})
    records = list(records)
    for record in records:
        by_section.setdefault(record.section, {})[record.key] = record.json
    info = {key: value for key, value in first.info.items() if key != "base_url"}
    info.setdefault("subdir", subdir)
    if "repodata_revisions" in info:
        info["repodata_revisions"] = recount_revisions(info["repodata_revisions"], records)
    if removed is None:
        removed = dict.fromkeys(name for repodata in upstream for name in repodata.removed)
    values: JsonObject = {"info": info, "removed": list(removed)}
    for key, value in first.extra.items():
        values.setdefault(key, value)
    values.setdefault("repodata_version", 1)
    tops = {SECTION_BY_NAME[name].top for name in by_section}
    for position, key in enumerate(sorted({*values, *tops})):
        out.write(b"%s%s:" % (b"," if position else b"{", msgspec.json.encode(key)))
        if key == V3:
            _write_buckets(out, {SECTION_BY_NAME[n].bucket or "": e for n, e in by_section.items() if n[:3] == "v3."})
        elif key in by_section:
            _write_section(out, by_section[key])
        else:
            out.write(msgspec.json.encode(values[key], order="sorted"))
    out.write(b"}\n")


def _write_buckets(out: Writable, buckets: dict[str, dict[str, RecordBytes]]) -> None:
    for position, bucket in enumerate(sorted(buckets)):
        out.write(b"%s%s:" % (b"," if position else b"{", msgspec.json.encode(bucket)))
        _write_section(out, buckets[bucket])
    out.write(b"}" if buckets else b"{}")


def recount_revisions(revisions: object, records: Iterable[Record]) -> object:
    """`info.repodata_revisions` with `n_packages`, `oldest` and `newest` counted again over the records
    published: rattler's map form (`{"v3": {...}}`) and the list form (`[{"revision": 3, ...}]`, with or
    without `key`). Other fields (`message`, `migrated_at`) stay upstream's; a shape we do not know is
    left out, since its counts would be upstream's."""
    stamps: dict[str, list[int]] = {}
    for record in records:
        top = SECTION_BY_NAME[record.section].top
        stamps.setdefault("legacy" if top in SECTIONS else top, []).append(_published_at(record))
    if isinstance(revisions, dict):
        return {
            key: _recounted(entry, stamps.get(_revision_key(key), []))
            for key, entry in revisions.items()
            if isinstance(entry, dict)
        }
    if isinstance(revisions, list):
        return [
            _recounted(entry, stamps.get(_revision_key(entry.get("key", entry.get("revision"))), []))
            for entry in revisions
            if isinstance(entry, dict)
        ]
    return None


def _revision_key(value: object) -> str:
    """The top-level key of a revision named `v3`, `3` or `legacy`/0 (the legacy maps)."""
    text = str(value).lower().removeprefix("v")
    return "legacy" if text in ("legacy", "0") else f"v{text}"


def _recounted(entry: JsonObject, stamps: list[int]) -> JsonObject:
    counted = {key: value for key, value in entry.items() if key not in ("n_packages", "oldest", "newest")}
    counted["n_packages"] = len(stamps)
    known = [stamp for stamp in stamps if stamp]
    if known:
        counted["oldest"], counted["newest"] = min(known), max(known)
    return counted


def _published_at(record: Record) -> int:
    """When the record was indexed (CEP 47 `indexed_timestamp`), else built (`timestamp`), in ms; 0 unknown."""
    stamps = _STAMPS.decode(record.json)
    for value in (stamps.indexed_timestamp, stamps.timestamp):
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return 0


class _Stamps(msgspec.Struct, gc=False):
    indexed_timestamp: Any = None
    timestamp: Any = None


_STAMPS = msgspec.json.Decoder(_Stamps)


def _write_section(out: Writable, entries: dict[str, RecordBytes]) -> None:
    """`{"filename": record, ...}` sorted by file name, joined a thousand records at a time: one list of
    pieces for 600,000 records held 60 MB more at the peak of a publish."""
    names = sorted(entries)
    encode = msgspec.json.encode
    separator = b"{"
    for start in range(0, len(names), 1000):
        pieces: list[bytes | msgspec.Raw] = []
        for name in names[start : start + 1000]:
            # The record's bytes are joined as they are: formatting each key with its record first copied
            # every record twice. msgspec also because orjson.dumps gives each small result kilobytes of
            # spare room (1.6 GB for 600,000 names).
            pieces += (separator, encode(name), b":", entries[name])
            separator = b","
        out.write(b"".join(pieces))
    out.write(b"}" if names else b"{}")
