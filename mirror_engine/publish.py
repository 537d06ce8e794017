"""Publish a subdir: with its packages in place, shards, shard index, .zst, .json, then deletions."""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from mirror_engine.channelfiles import filter_sidecar
from mirror_engine.destinations.base import Destination
from mirror_engine.gcpause import without_gc
from mirror_engine.pages import subdir_page
from mirror_engine.plan import SubdirPlan
from mirror_engine.repodata import Record, Repodata, compress_zst, encode_index
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
    for name, docs in plan.sidecars.items():
        await destination.write_index(plan.subdir, name, await asyncio.to_thread(_encode_sidecar, docs, held))
    index_sha256, shard_files = await write_index(
        destination, plan.subdir, plan.upstream, records, plan.retired, with_bz2=with_bz2
    )
    if page_title is not None:  # after repodata.json, from the same records
        page = await asyncio.to_thread(subdir_page, page_title, plan.subdir, records)
        await destination.write_index(plan.subdir, "index.html", page)
    stale = plan.stale
    if stale:
        await destination.delete(plan.subdir, list(stale))
    await collect_old_shards(destination, plan.subdir, shard_files, now=time.time() if now is None else now)
    names = frozenset(record.name for record in records)
    return Published(index_sha256, len(records), stale, names, sum(record.size or 0 for record in records))


def _encode_sidecar(docs: tuple[dict[str, Any], ...], held: set[str]) -> bytes:
    return orjson.dumps(filter_sidecar(docs, held), option=orjson.OPT_SORT_KEYS)


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
    # take memory at the same time (600,000 records: 150 MB of shards, 320 MB of json and zst).
    digests = await _write_shards(destination, subdir, records, removed)
    json_bytes = await asyncio.to_thread(encode_index, subdir, upstream, records, removed)
    zst_bytes = await asyncio.to_thread(compress_zst, json_bytes)
    created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    index_bytes = await asyncio.to_thread(shard_index, subdir, digests, created_at=created_at)
    await destination.write_index(subdir, SHARD_INDEX_FILENAME, index_bytes)
    if with_bz2:
        await destination.write_index(subdir, "repodata.json.bz2", await asyncio.to_thread(bz2.compress, json_bytes))
    # .zst before plain .json, as conda's own indexers do; each rename is atomic on its own.
    await destination.write_index(subdir, "repodata.json.zst", zst_bytes)
    await destination.write_index(subdir, "repodata.json", json_bytes)
    return hashlib.sha256(json_bytes).hexdigest(), frozenset(shard_filename(digest) for digest in digests.values())


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
