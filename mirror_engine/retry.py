"""Pure: whether a failure is worth another try, and how long to wait first (full jitter, Retry-After)."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from mirror_engine.errors import HttpStatusError, MirrorError

T = TypeVar("T")
MAX_RETRY_AFTER = 600.0  # a server asking for more than ten minutes is treated as asking for ten


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 5  # attempts after the first
    base: float = 1.0
    cap: float = 60.0


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return rng.uniform(0.0, min(policy.cap, policy.base * (2.0 ** min(attempt, 30))))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None if unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER)


def delay_before_retry(error: MirrorError, attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """How long to wait after `error` on attempt `attempt`; the server's Retry-After wins when it gave one."""
    if isinstance(error, HttpStatusError) and error.retry_after is not None:
        return error.retry_after
    return backoff_delay(attempt, policy, rng)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[object]],
    rng: random.Random,
    on_retry: Callable[[MirrorError, float], None] | None = None,
) -> T:
    """Run `call` until it succeeds, fails for good, or runs out of retries; the last error is raised."""
    attempt = 0
    while True:
        try:
            return await call()
        except MirrorError as error:
            if not error.retryable or attempt >= policy.retries:
                raise
            delay = delay_before_retry(error, attempt, policy, rng)
            if on_retry is not None:
                on_retry(error, delay)
            await sleep(delay)
            attempt += 1
