"""A bandwidth cap shared by every transfer of a run (`max_bandwidth: 50MB/s`): a token bucket.

Time and sleep are parameters, so the arithmetic is tested without waiting.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]I?)?B(?:/S)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]I?)?B?\s*$")


def parse_bytes(text: str, *, rate: bool) -> int:
    """`50MB/s`, `1.5GiB/s`, `10GB`, `512`: a number of bytes (per second when `rate`); ValueError otherwise."""
    match = (_RATE if rate else _SIZE).match(text.upper())
    if not match:
        example = "50MB/s" if rate else "10GB"
        raise ValueError(f"{text!r} is not a {'rate' if rate else 'size'} such as {example}")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


class TokenBucket:
    """Allows `rate` bytes per second on average, bursts up to one second's worth."""

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(rate)
        self._updated = clock()

    def delay_for(self, nbytes: int) -> float:
        """Take `nbytes` now and return how long to wait before they may be sent (pure bookkeeping)."""
        now = self._clock()
        self._tokens = min(float(self.rate), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self, nbytes: int) -> None:
        delay = self.delay_for(nbytes)
        if delay > 0:
            await self._sleep(delay)
