"""Pure: upstream records of a subdir + what the destination holds -> what to fetch, check, publish and delete."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import filterfalse
from typing import Any, NamedTuple

from mirror_engine.destinations.base import FileStat
from mirror_engine.filters import FilterRules, Verdict, judge
from mirror_engine.gcpause import without_gc
from mirror_engine.repodata import Record, Repodata
from mirror_engine.transfer import TransferItem


@dataclass(frozen=True, slots=True)
class Upstream:
    """One channel's index of the subdir being planned, and where its packages are downloaded from."""

    channel: int  # position in the config's channels: the earlier channel wins a conflict
    package_base: str  # URL ending in '/' that a filename is appended to
    repodata: Repodata


class Vouched(NamedTuple):
    """What the journal vouches for among the files a destination lists (see `vouched_among`)."""

    digests: dict[str, str]  # file name -> the sha256 it was verified with (md5 where it had none)
    unchanged: bool  # the listing is exactly the files last published, each with the stat it had then


JournalRow = tuple[str, str | None, int, int, bool]  # file name, digest, size, mtime_ns, published


def vouched_among(rows: Iterable[JournalRow], existing: Mapping[str, FileStat]) -> Vouched:
    """The journal's verified files that are listed with the size and mtime they were verified with.

    Only the digest of each is kept: for 600,000 files, a tuple of every row's fields held 90 MB more
    while the subdir was planned."""
    digests: dict[str, str] = {}
    rows_read = published = 0
    for name, digest, size, mtime_ns, is_published in rows:
        rows_read += 1
        stat = existing.get(name)
        if digest is not None and stat is not None and stat.size == size and stat.mtime_ns == mtime_ns:
            digests[name] = digest
            published += is_published
    # Names are unique in both: as many rows as listed files, each one matched and published.
    return Vouched(digests, rows_read == len(existing) == published)


@dataclass(frozen=True, slots=True)
class Conflict:
    filename: str
    kept_channel: int
    other_channel: int


@dataclass(frozen=True, slots=True)
class Rejected:
    filename: str
    channel: int
    reason: str


@dataclass(frozen=True, slots=True)
class SubdirPlan:
    subdir: str
    upstream: tuple[Repodata, ...]
    wanted: Mapping[str, Record]  # filename -> the record we publish when its file is verified
    transfers: tuple[TransferItem, ...]  # wanted files to fetch, or whose copy on disk must be hashed
    stale: tuple[str, ...]  # in the destination, not named by the new index: deleted after it is published
    trusted: Mapping[str, int] = field(default_factory=dict)  # file name -> channel: vouched for, nothing to do
    verdicts: Mapping[int, Counter[Verdict]] = field(default_factory=dict)  # per channel
    conflicts: tuple[Conflict, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    retired: tuple[str, ...] = ()  # on disk, gone from upstream's packages into its `removed`: kept
    sidecars: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)  # run_exports.json...

    @property
    def fetch_bytes(self) -> int:
        return sum(item.size for item in self.transfers if not item.check_existing)

    @property
    def fetch_count(self) -> int:
        return sum(1 for item in self.transfers if not item.check_existing)


@without_gc
def plan_subdir(
    subdir: str,
    upstreams: Sequence[Upstream],
    rules: FilterRules,
    existing: Mapping[str, FileStat],
    vouched: Mapping[str, str] | None = None,
    *,
    keep_removed: bool = True,
    dependencies: Collection[str] = (),
    prefer_conda: bool = False,
) -> SubdirPlan:
    """Filter each channel's records, merge channels (first one wins a filename), and pair with the destination.

    A file on disk is trusted without reading it when the journal verified it with the record's hash and it
    still has the size and mtime it had then (`vouched`: file name -> that hash, from `vouched_among`); one
    of the right size is hashed; anything else is fetched.
    Files upstream has moved into `removed` stay (lockfiles still point at them) unless not `keep_removed`.
    `dependencies` names files the filters dropped but a selected record needs (`include_dependencies`).
    With `prefer_conda`, a .tar.bz2 is dropped when a channel has the same name-version-build as .conda.
    A file named in several sections of one index (`packages.conda` and `v3.conda`) is published in the
    first (legacy before v3): rattler refuses an index that lists one file twice.
    """
    vouched = vouched or {}
    wanted: dict[str, Record] = {}
    owner: dict[str, int] = {}  # file name -> channel its record came from, when there are several channels
    transfers: list[TransferItem] = []
    trusted: dict[str, int] = {}
    verdicts: dict[int, Counter[Verdict]] = {}
    conflicts: list[Conflict] = []
    rejected: list[Rejected] = []
    several = len(upstreams) > 1
    conda_twins = _conda_stems(upstreams) if prefer_conda else frozenset()
    for upstream in sorted(upstreams, key=lambda u: u.channel):
        counts = verdicts.setdefault(upstream.channel, Counter())
        if upstream.repodata.unread:  # left unread by parse_repodata: not of a package in pkg_list
            counts[Verdict.PKG_LIST] += upstream.repodata.unread
        # This loop runs once per upstream record (600,000 in conda-forge's linux-64): kept lean on purpose.
        for record in upstream.repodata.records:
            filename = record.filename
            verdict = judge(record, rules)
            if verdict is not Verdict.KEPT and not verdict.kept:
                if filename not in dependencies:
                    counts[verdict] += 1
                    continue
                verdict = Verdict.DEPENDENCY
            if conda_twins and filename.endswith(".tar.bz2") and filename[:-8] in conda_twins:
                counts[Verdict.FORMAT] += 1
                continue
            counts[verdict] += 1
            problem = record.unusable_because()
            if problem is not None:
                rejected.append(Rejected(filename, upstream.channel, problem))
                continue
            kept = wanted.get(filename)
            if kept is not None:
                if not _same_file(kept, record):
                    conflicts.append(Conflict(filename, owner.get(filename, upstream.channel), upstream.channel))
                continue
            wanted[filename] = record
            if several:
                owner[filename] = upstream.channel
            on_disk = existing.get(filename)
            if on_disk is not None and _vouched_for(record, on_disk, vouched.get(filename)):
                trusted[filename] = upstream.channel  # no TransferItem: 600,000 of them cost 250 MB
            else:
                transfers.append(_transfer(subdir, upstream, record, on_disk))
    upstream_removed = {name for u in upstreams for name in u.repodata.removed}
    retired = [name for name in sorted(existing) if name in upstream_removed and name not in wanted]
    if not keep_removed:
        retired = []
    # The plan keeps no listing: for 600,000 files it would hold 150 MB until the subdir is published.
    keep = set(retired)
    # filterfalse runs the test in C (600,000 names: 0.7 -> 0.4 s); a set difference would be faster still,
    # but copies the listing into a set first, 30 MB more at the peak of the plan.
    stale = tuple(sorted(name for name in filterfalse(wanted.__contains__, existing) if name not in keep))
    return SubdirPlan(
        subdir=subdir,
        upstream=tuple(u.repodata for u in sorted(upstreams, key=lambda u: u.channel)),
        wanted=wanted,
        transfers=tuple(transfers),
        stale=stale,
        trusted=trusted,
        verdicts=verdicts,
        conflicts=tuple(conflicts),
        rejected=tuple(rejected),
        retired=tuple(retired),
    )


def _conda_stems(upstreams: Sequence[Upstream]) -> frozenset[str]:
    """`name-version-build` of every usable .conda record: the builds whose .tar.bz2 `prefer_conda` drops."""
    return frozenset(
        record.filename[:-6]
        for upstream in upstreams
        for record in upstream.repodata.records
        if record.filename.endswith(".conda") and record.unusable_because() is None
    )


def _quoted(filename: str) -> str:
    """The name as a URL path segment ('+' must reach S3-like servers as %2B). Usable names hold only
    letters, digits and `_.+!-` (Record.unusable_because), so two replacements do what quote() does."""
    return filename.replace("+", "%2B").replace("!", "%21")


def _same_file(a: Record, b: Record) -> bool:
    """Whether two records describe the same bytes, by the strongest hash both carry."""
    if a.sha256 is not None and b.sha256 is not None:
        return a.sha256 == b.sha256
    if a.md5 is not None and b.md5 is not None:
        return a.md5 == b.md5
    return a.size == b.size


def _vouched_for(record: Record, on_disk: FileStat, digest: str | None) -> bool:
    """Whether the journal verified this file (unchanged since) with the record's strongest hash."""
    if digest is None or on_disk.size != record.size:
        return False
    return digest == (record.sha256 or record.md5)  # md5 only for a record without sha256


def _transfer(subdir: str, upstream: Upstream, record: Record, on_disk: FileStat | None) -> TransferItem:
    size = record.size or 0
    sha256 = record.sha256
    return TransferItem(
        url=upstream.package_base + _quoted(record.filename),
        subdir=subdir,
        filename=record.filename,
        size=size,
        sha256=sha256,
        md5=record.md5 if sha256 is None else None,
        channel=upstream.channel,
        check_existing=on_disk is not None and on_disk.size == size,
    )
