"""The bandwidth cap's arithmetic, on an injected clock and sleep: the exact waits it asks for."""

from __future__ import annotations

import pytest

from mirror_engine.bandwidth import TokenBucket
from tests.helpers import FakeTime


def bucket(rate: int, time: FakeTime) -> TokenBucket:
    return TokenBucket(rate, clock=time.clock, sleep=time.sleep)


async def test_one_seconds_worth_goes_at_once_and_the_rest_waits_at_the_rate() -> None:
    time = FakeTime()
    throttle = bucket(1000, time)
    await throttle.take(1000)  # the burst: a full bucket
    assert time.waits == []
    await throttle.take(250)
    await throttle.take(500)
    assert time.waits == [0.25, 0.5]


async def test_time_that_passed_refills_the_bucket_up_to_one_second() -> None:
    time = FakeTime()
    throttle = bucket(1000, time)
    await throttle.take(1000)
    time.now += 0.4  # 400 bytes' worth came back
    await throttle.take(400)
    assert time.waits == []
    time.now += 10  # a long pause refills one second's worth, not ten
    await throttle.take(1500)
    assert time.waits == [0.5]


async def test_a_transfer_at_the_cap_waits_its_size_over_the_rate_less_the_burst() -> None:
    time = FakeTime()
    throttle = bucket(1_000_000, time)
    for _ in range(2_100_000 // 65_536):
        await throttle.take(65_536)
    await throttle.take(2_100_000 % 65_536)
    assert sum(time.waits) == pytest.approx((2_100_000 - 1_000_000) / 1_000_000, abs=1e-9)
    assert all(wait > 0 for wait in time.waits)
