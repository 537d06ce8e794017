"""Publish a subdir: its index names exactly the verified files, written after them; stale files go last."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection
from dataclasses import dataclass

from mirror_engine.destinations.base import Destination
from mirror_engine.plan import SubdirPlan
from mirror_engine.repodata import Record, Repodata, build_index, compress_zst, encode_index


@dataclass(frozen=True, slots=True)
class Published:
    index_sha256: str  # of repodata.json
    files: int
    deleted: tuple[str, ...]


async def publish_subdir(destination: Destination, plan: SubdirPlan, verified: Collection[str]) -> Published:
    """Write repodata.json.zst then repodata.json for the verified files, then delete stale files.

    Every package the index names was committed before this is called.
    """
    records = [record for filename, record in plan.wanted.items() if filename in verified]
    index_sha256 = await write_index(destination, plan.subdir, plan.upstream, records)
    named = {record.filename for record in records}
    stale = tuple(sorted(name for name in plan.existing if name not in named))
    if stale:
        await destination.delete(plan.subdir, list(stale))
    return Published(index_sha256, len(records), stale)


async def write_index(
    destination: Destination, subdir: str, upstream: tuple[Repodata, ...], records: Collection[Record]
) -> str:
    """Write both index files of a subdir; returns the sha256 of repodata.json."""
    doc = build_index(subdir, upstream, records)
    json_bytes = await asyncio.to_thread(encode_index, doc)
    zst_bytes = await asyncio.to_thread(compress_zst, json_bytes)
    # .zst first and plain .json last, as conda's own indexers do; each rename is atomic on its own.
    await destination.write_index(subdir, "repodata.json.zst", zst_bytes)
    await destination.write_index(subdir, "repodata.json", json_bytes)
    return hashlib.sha256(json_bytes).hexdigest()
