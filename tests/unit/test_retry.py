"""Retry: full-jitter backoff, Retry-After, and the loop that decides what gets another try."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror_engine.errors import (
    BadRepodata,
    ChecksumMismatch,
    ConnectionFailed,
    HttpStatusError,
    MirrorError,
    ShortBody,
)
from mirror_engine.retry import MAX_RETRY_AFTER, RetryPolicy, backoff_delay, parse_retry_after, with_retries

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


class FakeSleep:
    """Records every delay instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Flaky:
    """Raises the given errors in turn, then returns "ok"; counts calls."""

    def __init__(self, *errors: MirrorError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


# --- backoff ----------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.0, max_value=100.0),
    cap=st.floats(min_value=0.0, max_value=3600.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_delay_stays_within_full_jitter_bounds(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(attempt, RetryPolicy(retries=5, base=base, cap=cap), random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0**attempt)


def test_backoff_delay_is_jittered_and_grows() -> None:
    policy = RetryPolicy(base=1.0, cap=1000.0)
    rng = random.Random(7)
    first = [backoff_delay(0, policy, rng) for _ in range(200)]
    fifth = [backoff_delay(5, policy, rng) for _ in range(200)]
    assert len(set(first)) > 100  # jitter, not a fixed delay
    assert max(first) <= 1.0
    assert max(fifth) > 1.0  # the window doubles with each attempt
    assert max(fifth) <= 32.0


@pytest.mark.parametrize("seed", [0, 3, 2024])
def test_each_delay_is_one_draw_across_a_window_that_doubles_up_to_the_cap(seed: int) -> None:
    policy = RetryPolicy(base=0.5, cap=10.0)
    windows = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]  # base * 2**attempt, capped
    draws = random.Random(seed)
    expected = [window * draws.random() for window in windows]  # uniform(0, w) is w times one draw
    rng = random.Random(seed)
    assert [backoff_delay(attempt, policy, rng) for attempt in range(len(windows))] == pytest.approx(expected)


# --- Retry-After ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        ("120", 120.0),
        (" 30 ", 30.0),
        ("600", 600.0),
        ("601", MAX_RETRY_AFTER),
        ("86400", MAX_RETRY_AFTER),
        (format_datetime(NOW + timedelta(seconds=45), usegmt=True), 45.0),
        (format_datetime(NOW - timedelta(seconds=45), usegmt=True), 0.0),
        (format_datetime(NOW + timedelta(hours=2), usegmt=True), MAX_RETRY_AFTER),
        ("Sat, 01 Jun 2024 12:01:00 GMT", 60.0),
        ("soon", None),
        ("-5", None),
        ("Fri, 99 Foo 2024 99:99:99 GMT", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_a_server_asking_for_more_than_ten_minutes_is_waited_ten() -> None:
    assert parse_retry_after("599", NOW) == 599.0
    assert parse_retry_after("600", NOW) == 600.0
    assert parse_retry_after(str(3 * 3600), NOW) == 600.0
    assert parse_retry_after(format_datetime(NOW + timedelta(days=1), usegmt=True), NOW) == 600.0


# --- with_retries -----------------------------------------------------------------------------------------


async def test_retries_retryable_errors_then_succeeds() -> None:
    call = Flaky(ConnectionFailed("refused"), ShortBody("short"), ChecksumMismatch("bad"), HttpStatusError("u", 503))
    sleep = FakeSleep()
    policy = RetryPolicy(retries=5, base=1.0, cap=60.0)
    assert await with_retries(call, policy, sleep=sleep, rng=random.Random(1)) == "ok"
    assert call.calls == 5
    assert len(sleep.delays) == 4
    for attempt, delay in enumerate(sleep.delays):
        assert 0.0 <= delay <= min(policy.cap, policy.base * 2**attempt)


async def test_gives_up_after_policy_retries_with_the_last_error() -> None:
    errors = [ShortBody(f"attempt {n}") for n in range(10)]
    call = Flaky(*errors)
    sleep = FakeSleep()
    with pytest.raises(ShortBody) as info:
        await with_retries(call, RetryPolicy(retries=3), sleep=sleep, rng=random.Random(1))
    assert info.value is errors[3]
    assert call.calls == 4  # the first try and three retries
    assert len(sleep.delays) == 3


async def test_zero_retries_means_one_try() -> None:
    call = Flaky(ConnectionFailed("refused"))
    sleep = FakeSleep()
    with pytest.raises(ConnectionFailed):
        await with_retries(call, RetryPolicy(retries=0), sleep=sleep, rng=random.Random(1))
    assert call.calls == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    "error",
    [
        BadRepodata("https://x/linux-64/repodata.json: not valid JSON"),
        HttpStatusError("https://x/a.conda", 404, "Not Found"),
        HttpStatusError("https://x/a.conda", 403, "Forbidden", retry_after=1.0),
    ],
)
async def test_does_not_retry_non_retryable_errors(error: MirrorError) -> None:
    call = Flaky(error)
    sleep = FakeSleep()
    with pytest.raises(type(error)) as info:
        await with_retries(call, RetryPolicy(retries=5), sleep=sleep, rng=random.Random(1))
    assert info.value is error
    assert call.calls == 1
    assert sleep.delays == []


async def test_other_exceptions_are_not_retried() -> None:
    calls = 0

    async def broken() -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug")

    sleep = FakeSleep()
    with pytest.raises(RuntimeError):
        await with_retries(broken, RetryPolicy(retries=5), sleep=sleep, rng=random.Random(1))
    assert calls == 1
    assert sleep.delays == []


async def test_retry_after_from_a_429_is_the_sleep() -> None:
    call = Flaky(HttpStatusError("https://x/a.conda", 429, "Too Many Requests", retry_after=7))
    sleep = FakeSleep()
    seen: list[tuple[MirrorError, float]] = []
    result = await with_retries(
        call,
        RetryPolicy(retries=3, base=1.0, cap=2.0),
        sleep=sleep,
        rng=random.Random(1),
        on_retry=lambda error, delay: seen.append((error, delay)),
    )
    assert result == "ok"
    assert sleep.delays == [7]  # the server's wish, even above the backoff cap
    assert len(seen) == 1
    assert isinstance(seen[0][0], HttpStatusError)
    assert seen[0][0].status == 429
    assert seen[0][1] == 7


async def test_retry_after_on_a_503_is_honoured_and_backoff_resumes_without_it() -> None:
    call = Flaky(HttpStatusError("u", 503, retry_after=3.5), HttpStatusError("u", 503))
    sleep = FakeSleep()
    assert await with_retries(call, RetryPolicy(retries=3, base=0.5, cap=60), sleep=sleep, rng=random.Random(1)) == "ok"
    assert sleep.delays[0] == 3.5
    assert 0.0 <= sleep.delays[1] <= 1.0  # attempt 1: min(cap, 0.5 * 2)


async def test_on_retry_sees_each_error_and_its_delay() -> None:
    errors = [ConnectionFailed("a"), ConnectionFailed("b")]
    call = Flaky(*errors)
    sleep = FakeSleep()
    seen: list[tuple[MirrorError, float]] = []
    await with_retries(
        call, RetryPolicy(retries=5), sleep=sleep, rng=random.Random(1), on_retry=lambda e, d: seen.append((e, d))
    )
    assert [e for e, _ in seen] == errors
    assert [d for _, d in seen] == sleep.delays


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (503, True), (504, True), (408, True), (429, True), (404, False), (401, False)],
)
def test_http_status_retryable(status: int, retryable: bool) -> None:
    assert HttpStatusError("u", status).retryable is retryable
