"""Publish a subdir: with its packages in place, shards, shard index, .zst, .json, then deletions."""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import hashlib
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import zstandard

from mirror_engine.channelfiles import filter_sidecar
from mirror_engine.destinations.base import Destination
from mirror_engine.errors import destination_error
from mirror_engine.gcpause import without_gc
from mirror_engine.pages import write_subdir_page
from mirror_engine.plan import SubdirPlan
from mirror_engine.repodata import Record, Repodata, Writable, write_index_json
from mirror_engine.shards import SHARD_INDEX_FILENAME, SHARDS_DIR, Shard, shard_batches, shard_filename, shard_index

SHARD_GRACE_SECONDS = 7 * 86400  # CEP-16: clients holding an older shard index still find its shards
SHARD_BATCH = 2000  # shards built, then written, at a time: all 25,000 of a 600,000-record subdir took 150 MB


@dataclass(frozen=True, slots=True)
class Published:
    index_sha256: str  # of repodata.json
    files: int
    deleted: tuple[str, ...]
    names: frozenset[str] = frozenset()  # package names the index holds
    size: int = 0  # bytes of the files it names


async def publish_subdir(
    destination: Destination,
    plan: SubdirPlan,
    verified: Collection[str],
    *,
    now: float | None = None,
    with_bz2: bool = False,
    page_title: str | None = None,
) -> Published:
    """Write the subdir's index for the verified files, then delete stale files and expired shards.

    Every package the index names was committed before this is called. Files upstream retired into
    `removed` that we still hold are listed in our `removed`; nothing else is.
    """
    records = [record for filename, record in plan.wanted.items() if filename in verified]
    held = {record.filename for record in records} | set(plan.retired)
    keyed = {(record.section, record.key) for record in records}
    for name, docs in plan.sidecars.items():
        await destination.write_index(plan.subdir, name, await asyncio.to_thread(_encode_sidecar, docs, held, keyed))
    index_sha256, shard_files = await write_index(
        destination, plan.subdir, plan.upstream, records, plan.retired, with_bz2=with_bz2
    )
    if page_title is not None:  # after repodata.json, from the same records
        await write_index_streamed(
            destination, plan.subdir, "index.html", lambda out: write_subdir_page(out, page_title, plan.subdir, records)
        )
    stale = plan.stale
    if stale:
        await destination.delete(plan.subdir, list(stale))
    await collect_old_shards(destination, plan.subdir, shard_files, now=time.time() if now is None else now)
    names = frozenset(record.name for record in records)
    return Published(index_sha256, len(records), stale, names, sum(record.size or 0 for record in records))


def _encode_sidecar(docs: tuple[dict[str, Any], ...], held: set[str], keyed: set[tuple[str, str]]) -> bytes:
    return orjson.dumps(filter_sidecar(docs, held, keyed), option=orjson.OPT_SORT_KEYS)


async def write_index(
    destination: Destination,
    subdir: str,
    upstream: tuple[Repodata, ...],
    records: Collection[Record],
    removed: Iterable[str] = (),
    *,
    with_bz2: bool = False,
) -> tuple[str, frozenset[str]]:
    """Write every index file of a subdir in the order that keeps clients safe.

    Returns repodata.json's sha256 and the file names of the shards the new shard index names.
    `with_bz2` adds the deprecated repodata.json.bz2, for clients told not to use zstd."""
    removed = list(removed)
    # Shards first: no index names them yet, and written before repodata.json is built, the two never
    # take memory at the same time (600,000 records: 150 MB of shards).
    digests = await _write_shards(destination, subdir, records, removed)
    # repodata.json goes to a file a thousand records at a time and is compressed from there: built in
    # memory, the 600,000-record index and its .zst added 300 MB to the peak of a run.
    json_temp = destination.temp_path(subdir, "repodata.json")
    compressed = [(name, destination.temp_path(subdir, name)) for name in _COMPRESSED if with_bz2 or name != _BZ2]
    try:
        index_sha256 = await asyncio.to_thread(_write_json, json_temp, subdir, upstream, records, removed)
        for name, temp in compressed:
            await asyncio.to_thread(_COMPRESSED[name], json_temp, temp)
        created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        index_bytes = await asyncio.to_thread(shard_index, subdir, digests, created_at=created_at)
        await destination.write_index(subdir, SHARD_INDEX_FILENAME, index_bytes)
        # .bz2 and .zst before plain .json, as conda's own indexers do; each rename is atomic on its own.
        for name, temp in compressed:
            await destination.write_index_file(subdir, name, temp)
        await destination.write_index_file(subdir, "repodata.json", json_temp)
    finally:
        await asyncio.to_thread(_remove, [json_temp, *(temp for _, temp in compressed)])
    return index_sha256, frozenset(shard_filename(digest) for digest in digests.values())


async def write_index_streamed(
    destination: Destination, subdir: str, name: str, write: Callable[[Writable], None]
) -> None:
    """Publish an index file that `write` produces a piece at a time (in a thread), through a temporary file."""
    temp = destination.temp_path(subdir, name)
    try:
        await asyncio.to_thread(_write_file, temp, write)
        await destination.write_index_file(subdir, name, temp)
    finally:
        await asyncio.to_thread(_remove, [temp])


class _Hashing:
    """Writes to `out` and keeps the sha256 of what went through."""

    def __init__(self, out: Writable) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes, /) -> None:
        self.sha256.update(data)
        self.out.write(data)


def _write_json(
    temp: Path, subdir: str, upstream: tuple[Repodata, ...], records: Collection[Record], removed: list[str]
) -> str:
    """Write repodata.json to `temp`; returns its sha256."""
    with _new_file(temp) as handle:
        out = _Hashing(handle)
        write_index_json(out, subdir, upstream, records, removed)
    return out.sha256.hexdigest()


def _write_file(temp: Path, write: Callable[[Writable], None]) -> None:
    with _new_file(temp) as handle:
        write(handle)


@contextlib.contextmanager
def _new_file(temp: Path) -> Iterator[BinaryIO]:
    """A new file to write at `temp`; a failed write (a full disk) is one DestinationError."""
    try:
        with temp.open("xb", buffering=1 << 20) as handle:
            yield handle
    except OSError as exc:
        raise destination_error(temp, exc) from None


def _zst_file(source: Path, target: Path) -> None:
    # Level 3: on a 300 MB index, level 10 took 10x as long for a file 6 % smaller, and 19 takes minutes.
    # The size given ahead goes into the frame header: some clients decompress only frames that state it.
    compressor = zstandard.ZstdCompressor(level=3, threads=-1)
    _compress_file(source, target, lambda src, dst: compressor.copy_stream(src, dst, size=source.stat().st_size))


def _bz2_file(source: Path, target: Path) -> None:
    def copy(src: BinaryIO, dst: BinaryIO) -> None:
        compressor = bz2.BZ2Compressor()
        while chunk := src.read(1 << 20):
            dst.write(compressor.compress(chunk))
        dst.write(compressor.flush())

    _compress_file(source, target, copy)


def _compress_file(source: Path, target: Path, copy: Callable[[BinaryIO, BinaryIO], object]) -> None:
    with _new_file(target) as dst:
        try:
            src = source.open("rb")
        except OSError as exc:
            raise destination_error(source, exc) from None
        with src:
            copy(src, dst)


_BZ2 = "repodata.json.bz2"
_COMPRESSED: dict[str, Callable[[Path, Path], None]] = {_BZ2: _bz2_file, "repodata.json.zst": _zst_file}


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def _write_shards(
    destination: Destination, subdir: str, records: Collection[Record], removed: list[str]
) -> dict[str, bytes]:
    """Build and write the subdir's shards a batch at a time; returns package name -> shard sha256."""
    batches = shard_batches(records, removed, size=SHARD_BATCH)

    @without_gc
    def next_batch() -> list[Shard]:
        return next(batches, [])

    digests: dict[str, bytes] = {}
    while batch := await asyncio.to_thread(next_batch):
        await destination.write_absent(subdir, [(f"{SHARDS_DIR}/{shard.filename}", shard.data) for shard in batch])
        digests.update((shard.name, shard.sha256) for shard in batch)
    return digests


async def collect_old_shards(destination: Destination, subdir: str, named: Collection[str], *, now: float) -> list[str]:
    """Delete shards that the current index does not name (`named`) and that are older than the grace period.

    A shard named by the current index is rewritten only when absent, so its mtime tells when it was
    first published, not when it was last named: only unnamed ones are candidates.
    """
    present = await destination.list_folder(subdir, SHARDS_DIR)
    expired = sorted(name for name, mtime in present.items() if name not in named and now - mtime > SHARD_GRACE_SECONDS)
    if expired:
        await destination.delete(subdir, [f"{SHARDS_DIR}/{name}" for name in expired])
    return expired
