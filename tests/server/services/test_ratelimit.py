"""The rate limiter on its own: GCRA buckets, blocks, Retry-After, bounded memory, time.

In process memory only (the Redis counters are tests/server/storage/test_ratelimit_redis.py);
time is a manual monotonic clock, so every refill edge is exact.
"""

from __future__ import annotations

import time
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatepass_server.errors import TooManyRequests
from gatepass_server.services.ratelimit import (
    MAX_BUCKETS,
    MAX_SOURCE_LENGTH,
    Count,
    FailureLimiter,
    LocalCounters,
    Rate,
)

START: Final = 1000.0


class ManualMonotonic:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        """The current reading."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now += seconds


def _limiter(limit: int, monotonic: ManualMonotonic, **options: int) -> FailureLimiter:
    return FailureLimiter(
        "auth",
        limit,
        LocalCounters(monotonic, max_buckets=options.get("max_buckets", MAX_BUCKETS)),
        monotonic=monotonic,
        max_blocked=options.get("max_blocked", MAX_BUCKETS),
    )


def _retry_after(limiter: FailureLimiter, source: str, key: str | None = None) -> int:
    """The Retry-After of the 429 that ``check`` must raise."""
    with pytest.raises(TooManyRequests) as raised:
        limiter.check(source, key)
    assert raised.value.status_for() == 429
    assert raised.value.code_for() == "too_many_requests"
    return int(raised.value.headers["Retry-After"])


def test_a_rate_drains_its_limit_per_minute() -> None:
    """Rate(limit): one failure occupies 60/limit seconds; the burst is the limit."""
    rate = Rate(60)
    assert rate.interval == 1_000_000
    assert rate.tolerance == 59_000_000
    assert Rate(1).tolerance == 0
    assert Rate(7).interval == 8_571_429
    with pytest.raises(ValueError, match="at least 1"):
        Rate(0)


def test_a_bucket_takes_a_burst_of_limit_then_refuses() -> None:
    """Five failures fit a bucket of five; the sixth is refused and not counted."""
    monotonic = ManualMonotonic()
    counters = LocalCounters(monotonic)
    rate = Rate(5)  # one every 12 s
    counts = [counters.count("b", rate) for _ in range(5)]
    assert [c.accepted for c in counts] == [True] * 5
    assert [c.wait for c in counts] == [0.0, 0.0, 0.0, 0.0, 12.0]
    assert counters.count("b", rate) == Count(accepted=False, wait=12.0)
    assert counters.count("b", rate) == Count(accepted=False, wait=12.0), "refusals add nothing"


def test_a_full_bucket_refills_one_failure_per_interval() -> None:
    """After the burst, one more failure fits every 60/limit seconds, and no sooner."""
    monotonic = ManualMonotonic()
    counters = LocalCounters(monotonic)
    rate = Rate(5)
    for _ in range(5):
        counters.count("b", rate)
    monotonic.advance(11.5)
    assert counters.count("b", rate) == Count(accepted=False, wait=0.5)
    monotonic.advance(0.5)
    assert counters.count("b", rate) == Count(accepted=True, wait=12.0)
    assert not counters.count("b", rate).accepted


def test_an_idle_minute_refills_the_whole_burst() -> None:
    """A minute without failures gives the whole burst back, and not more than it."""
    monotonic = ManualMonotonic()
    counters = LocalCounters(monotonic)
    rate = Rate(5)
    for _ in range(5):
        counters.count("b", rate)
    monotonic.advance(3600.0)
    assert [counters.count("b", rate).accepted for _ in range(6)] == [True] * 5 + [False]


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 30.0, allow_nan=False), min_size=1, max_size=120),
)
async def test_no_window_of_a_minute_accepts_more_than_twice_the_limit(
    limit: int, gaps: list[float]
) -> None:
    """Whatever the timing: at most limit + elapsed/interval failures fit in any window."""
    monotonic = ManualMonotonic()
    counters = LocalCounters(monotonic)
    rate = Rate(limit)
    accepted: list[float] = []
    for gap in gaps:
        monotonic.advance(gap)
        if counters.count("b", rate).accepted:
            accepted.append(monotonic.now)
    for i, start in enumerate(accepted):
        within = [t for t in accepted[i:] if t - start < 60.0]
        elapsed = within[-1] - start
        assert len(within) <= limit + elapsed * 1_000_000 / rate.interval + 1e-6


async def _count(limiter: FailureLimiter, source: str, key: str | None = None) -> int | None:
    """Count one failure; the Retry-After of the 429 if it was already over the limit."""
    try:
        await limiter.failed(source, key)
    except TooManyRequests as exc:
        return int(exc.headers["Retry-After"])
    return None


async def test_a_limiter_blocks_once_the_limit_is_reached() -> None:
    """``limit`` failures are the caller's to answer; then check refuses before any lookup."""
    monotonic = ManualMonotonic()
    limiter = _limiter(3, monotonic)  # one every 20 s
    limiter.check("10.0.0.1")
    assert not limiter.blocked, "nothing counted yet: the hot path sees an empty dict"
    for _ in range(3):
        limiter.check("10.0.0.1")
        assert await _count(limiter, "10.0.0.1") is None
    assert _retry_after(limiter, "10.0.0.1") == 20
    limiter.check("10.0.0.2")  # another source: unaffected


async def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    """Retry-After is the wait to the next room in the bucket, rounded up, never 0."""
    monotonic = ManualMonotonic()
    fast = _limiter(600, monotonic)  # one every 0.1 s
    for _ in range(600):
        assert await _count(fast, "s") is None
    assert _retry_after(fast, "s") == 1
    slow = _limiter(7, monotonic)  # one every 8.57 s
    for _ in range(7):
        assert await _count(slow, "s") is None
    assert _retry_after(slow, "s") == 9
    monotonic.advance(4.0)
    assert _retry_after(slow, "s") == 5
    monotonic.advance(4.5)
    assert _retry_after(slow, "s") == 1
    monotonic.advance(0.1)
    slow.check("s")  # room again: not refused
    assert await _count(slow, "s") is None
    assert _retry_after(slow, "s") == 9


async def test_sources_and_keys_have_buckets_of_their_own() -> None:
    """A key's failures from many sources block the key, not those sources; and back."""
    monotonic = ManualMonotonic()
    limiter = _limiter(2, monotonic)
    assert await _count(limiter, "10.0.0.1", "k1") is None
    assert await _count(limiter, "10.0.0.2", "k1") is None
    limiter.check("10.0.0.1")
    limiter.check("10.0.0.1", "k2")
    assert _retry_after(limiter, "10.0.0.3", "k1") == 30
    assert await _count(limiter, "10.0.0.1", "k3") is None  # the source's second failure
    assert _retry_after(limiter, "10.0.0.1", "k4") == 30
    limiter.check("10.0.0.3", "k4")


async def test_a_failure_already_over_the_limit_is_refused_at_once() -> None:
    """A failure counted while its bucket is full (a block this node did not know of) is 429."""
    monotonic = ManualMonotonic()
    counters = LocalCounters(monotonic)
    rate = Rate(2)
    first = FailureLimiter("auth", 2, counters, monotonic=monotonic)
    second = FailureLimiter("auth", 2, counters, monotonic=monotonic)
    assert await _count(first, "s") is None
    assert await _count(first, "s") is None
    assert counters.count("auth:source:s", rate).accepted is False
    second.check("s")  # this one has not seen the block yet...
    assert await _count(second, "s") == 30  # ...and learns it from its first failure
    assert _retry_after(second, "s") == 30


async def test_a_zero_limit_turns_the_limiter_off() -> None:
    """Limit 0: nothing is counted, nothing blocked, however many failures."""
    monotonic = ManualMonotonic()
    counters = LocalCounters(monotonic)
    limiter = FailureLimiter("auth", 0, counters, monotonic=monotonic)
    assert limiter.rate is None
    for i in range(1000):
        assert await _count(limiter, "s", f"k{i}") is None
    limiter.check("s", "k0")
    assert not limiter.blocked
    assert len(counters) == 0


def test_distinct_keys_cost_bounded_memory() -> None:
    """Distinct bad keys, faster than buckets drain, fill the counters only up to the bound.

    The clock stands still, so nothing drains: the least recently counted bucket goes.
    """
    monotonic = ManualMonotonic()
    counters = LocalCounters(monotonic)  # the default bound
    rate = Rate(60)
    for i in range(2 * MAX_BUCKETS + 1):
        counters.count(f"key:{i}", rate)
        assert len(counters) <= MAX_BUCKETS
    assert len(counters) == MAX_BUCKETS
    newest = f"key:{2 * MAX_BUCKETS}"
    assert counters.count(newest, rate).wait == 0.0, "the newest kept its count (now 2)"
    for _ in range(58):
        counters.count(newest, rate)
    assert counters.count(newest, rate).wait == 1.0, "its sixtieth failure fills it"
    assert len(counters) == MAX_BUCKETS


def test_empty_buckets_are_pruned_as_new_ones_are_counted() -> None:
    """Buckets whose failures have drained go away without waiting for the bound."""
    monotonic = ManualMonotonic()
    counters = LocalCounters(monotonic)
    rate = Rate(60)
    for i in range(100):
        counters.count(f"old:{i}", rate)
    monotonic.advance(2.0)  # each old bucket held one failure: 1 s
    for i in range(100):
        counters.count(f"new:{i}", rate)
    assert len(counters) == 100


async def test_blocks_are_bounded_too() -> None:
    """Many blocked sources keep at most ``max_blocked`` blocks; the newest stay."""
    monotonic = ManualMonotonic()
    limiter = _limiter(1, monotonic, max_blocked=100)
    for i in range(1000):
        assert await _count(limiter, f"10.0.{i // 256}.{i % 256}") is None
        assert len(limiter.blocked) <= 100
    assert _retry_after(limiter, "10.0.3.231") == 60


async def test_blocks_vanish_once_all_have_ended() -> None:
    """When every block has ended the dict is emptied: the hot path is free again."""
    monotonic = ManualMonotonic()
    limiter = _limiter(1, monotonic)
    for source in ("a", "b", "c"):
        await _count(limiter, source)
    assert len(limiter.blocked) == 3
    monotonic.advance(60.0)
    limiter.check("z")
    assert limiter.blocked == {}


def test_a_long_source_is_cut_to_a_bounded_bucket_name() -> None:
    """An odd forwarded address cannot make a bucket name (or a Redis key) large."""
    limiter = _limiter(1, ManualMonotonic())
    bucket = limiter.source_bucket("x" * 10_000)
    assert len(bucket) == len("auth:source:") + MAX_SOURCE_LENGTH


async def test_a_wall_clock_jump_neither_blocks_nor_unblocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the real monotonic clock, moving ``time.time`` a day either way changes nothing."""
    limiter = FailureLimiter("auth", 2, LocalCounters())  # time.monotonic, one every 30 s
    assert await _count(limiter, "blocked") is None
    assert await _count(limiter, "blocked") is None
    assert await _count(limiter, "free") is None
    real_time, real_time_ns = time.time, time.time_ns
    for jump in (86_400.0, -86_400.0):
        monkeypatch.setattr(time, "time", lambda jump=jump: real_time() + jump)
        monkeypatch.setattr(time, "time_ns", lambda jump=jump: real_time_ns() + int(jump * 1e9))
        assert 1 <= _retry_after(limiter, "blocked") <= 30, "a jump forward did not unblock"
        limiter.check("free")  # a jump back did not block a source with room left
    assert await _count(limiter, "free") is None
    assert _retry_after(limiter, "free") >= 1
