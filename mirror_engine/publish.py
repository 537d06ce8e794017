"""Publish a subdir: its index names exactly the verified files, written after them; stale files go last."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from mirror_engine.destinations.base import Destination
from mirror_engine.plan import SubdirPlan
from mirror_engine.repodata import Record, Repodata, build_index, compress_zst, encode_index


async def publish_subdir(destination: Destination, plan: SubdirPlan, verified: Collection[str]) -> list[str]:
    """Write repodata.json.zst then repodata.json for the verified files, then delete stale files.

    Returns the names deleted. Every package the index names was committed before this is called.
    """
    records = [record for filename, record in plan.wanted.items() if filename in verified]
    await write_index(destination, plan.subdir, plan.upstream, records)
    named = {record.filename for record in records}
    stale = sorted(name for name in plan.existing if name not in named)
    if stale:
        await destination.delete(plan.subdir, stale)
    return stale


async def write_index(
    destination: Destination, subdir: str, upstream: tuple[Repodata, ...], records: Collection[Record]
) -> None:
    doc = build_index(subdir, upstream, records)
    json_bytes = await asyncio.to_thread(encode_index, doc)
    zst_bytes = await asyncio.to_thread(compress_zst, json_bytes)
    # .zst first and plain .json last, as conda's own indexers do; each rename is atomic on its own.
    await destination.write_index(subdir, "repodata.json.zst", zst_bytes)
    await destination.write_index(subdir, "repodata.json", json_bytes)
