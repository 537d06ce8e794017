"""A bounded queue feeding a fixed set of workers: memory stays flat however many files there are."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def run_pool(todo: AsyncIterator[T], handle: Callable[[T], Awaitable[None]], *, workers: int) -> None:
    """Feed every item of `todo` to `handle` on `workers` concurrent workers.

    `handle` records per-item failures itself; an exception that escapes it is fatal and cancels the
    other workers and the producer (raised as an ExceptionGroup by the TaskGroup).
    """
    queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize=2 * workers)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            await handle(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(worker())
        async for item in todo:
            await queue.put(item)  # waits while the workers are busy: backpressure
        for _ in range(workers):
            await queue.put(None)
