from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.buckets import ConcurrencyLimit, TokenBucket


def take_all(bucket: TokenBucket, now: float) -> int:
    taken = 0
    while bucket.ready(now):
        bucket.take(now)
        taken += 1
    return taken


def test_bucket_starts_full_and_holds_burst() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=5.0)
    assert take_all(bucket, 10.0) == 5
    assert not bucket.ready(10.0)


def test_bucket_refills_at_its_rate_up_to_capacity() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=5.0, start=0.0)
    take_all(bucket, 0.0)
    assert bucket.tokens(0.25) == pytest.approx(0.5)
    assert not bucket.ready(0.25)
    assert bucket.ready(0.5)
    assert bucket.tokens(100.0) == 5.0
    assert take_all(bucket, 100.0) == 5


def test_clock_starts_at_first_use_so_idle_time_before_it_adds_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=2.0)
    assert take_all(bucket, 1000.0) == 2
    assert bucket.tokens(1000.5) == pytest.approx(0.5)


def test_wait_s_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate_per_s=4.0, burst=1.0, start=0.0)
    assert bucket.wait_s(0.0) == 0.0
    bucket.take(0.0)
    assert bucket.wait_s(0.0) == pytest.approx(0.25)
    assert bucket.wait_s(0.1) == pytest.approx(0.15)
    at = 0.1 + bucket.wait_s(0.1)
    assert bucket.ready(at)  # exactly at the promised time, despite rounding


def test_zero_rate_never_refills() -> None:
    bucket = TokenBucket(rate_per_s=0.0, burst=2.0, start=0.0)
    assert take_all(bucket, 0.0) == 2
    assert bucket.wait_s(1e6) == math.inf
    assert not bucket.ready(1e6)


def test_burst_below_one_still_holds_one_token() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=0.0, start=0.0)
    assert bucket.capacity == 1.0
    assert take_all(bucket, 0.0) == 1
    assert take_all(bucket, 1.0) == 1


def test_clock_stepping_back_neither_drains_nor_fills() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3.0, start=10.0)
    bucket.take(10.0)
    assert bucket.tokens(5.0) == pytest.approx(2.0)
    assert bucket.tokens(10.5) == pytest.approx(2.5)


def test_take_from_an_empty_bucket_is_a_bug() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1.0, start=0.0)
    bucket.take(0.0)
    with pytest.raises(RuntimeError):
        bucket.take(0.0)


def test_configure_keeps_tokens_within_the_new_capacity_and_uses_the_new_rate() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=10.0, start=0.0)
    bucket.configure(rate_per_s=10.0, burst=3.0)
    assert bucket.rate_per_s == 10.0
    assert bucket.capacity == 3.0
    assert take_all(bucket, 0.0) == 3
    assert bucket.tokens(0.2) == pytest.approx(2.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.0, 50.0),
    burst=st.floats(0.0, 20.0),
    gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=120),
)
def test_no_window_sees_more_than_rate_times_length_plus_capacity(rate: float, burst: float, gaps: list[float]) -> None:
    bucket = TokenBucket(rate, burst)
    now = 0.0
    taken: list[float] = []
    for gap in gaps:
        now += gap
        if bucket.ready(now):
            bucket.take(now)
            taken.append(now)
    for first in range(len(taken)):
        for last in range(first, len(taken)):
            count = last - first + 1
            assert count <= rate * (taken[last] - taken[first]) + bucket.capacity + 1e-6


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(0.1, 50.0), burst=st.floats(1.0, 20.0), start=st.floats(0.0, 1e9))
def test_a_waiting_caller_that_sleeps_wait_s_always_finds_a_token(rate: float, burst: float, start: float) -> None:
    bucket = TokenBucket(rate, burst)
    now = start
    for _ in range(int(burst) + 5):
        now += bucket.wait_s(now)
        assert bucket.ready(now)
        bucket.take(now)


def test_concurrency_limit() -> None:
    limit = ConcurrencyLimit(2)
    limit.acquire()
    limit.acquire()
    assert not limit.available
    with pytest.raises(RuntimeError):
        limit.acquire()
    limit.limit = 1  # lowering evicts nobody ...
    assert limit.in_flight == 2
    limit.release()
    assert not limit.available  # ... but no new slot opens until below the new limit
    limit.release()
    assert limit.available
    with pytest.raises(RuntimeError):
        limit.release()
