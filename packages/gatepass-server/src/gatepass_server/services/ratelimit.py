"""Rate limits on what accepts a secret: key-authentication failures and verify misses.

SECURITY.md principle 10. Each limit counts **failures only**, per source (the client
address) and per key, with GCRA (the generic cell rate algorithm, a token bucket kept as
one number per bucket): a bucket of ``limit`` holds ``limit`` failures and drains at
``limit`` per minute, so a source may fail ``limit`` times in a row, then once every
``60 / limit`` seconds.

Once a bucket is full its source or key is *blocked* on this node until the bucket has
room again: every request it makes is refused with 429 before anything is looked up, so
a right guess cannot be told apart from a wrong one while blocked (fail2ban semantics).
Successful requests of unblocked callers cost one truthiness test of an empty dict
(:attr:`FailureLimiter.blocked`): no lock, no store, no clock.

The counters live in a :class:`CounterStore`: :class:`LocalCounters` in process memory,
or a shared one (Redis, ``storage.ratelimit``) behind :class:`SharedCounters`, which
falls back to process memory while the shared store cannot answer. A shared store holds
hints only (SECURITY.md principle 1): losing it loses counts, never a revocation.

Times are ``time.monotonic()`` seconds (injectable): a wall-clock jump neither blocks
nor unblocks anyone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from gatepass_server.errors import TooManyRequests
from gatepass_server.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_BUCKETS",
    "MAX_SOURCE_LENGTH",
    "SHARED_RETRY_SECONDS",
    "Count",
    "CounterStore",
    "Counters",
    "FailureLimiter",
    "LocalCounters",
    "Rate",
    "SharedCounters",
]

MAX_BUCKETS: Final = 20_000
"""Buckets kept in process memory per store (and blocks per limiter); the least recently
counted one makes room for a new one, so a million distinct bad keys cost bounded memory."""

MAX_SOURCE_LENGTH: Final = 64
"""A source longer than any IP address (a proxy's odd ``X-Forwarded-For``) is cut here."""

SHARED_RETRY_SECONDS: Final = 5.0
"""After the shared store failed, count in process memory this long before asking again."""

_PRUNE_PER_COUNT: Final = 4


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` failures per minute, with a burst of ``limit``; times in microseconds."""

    limit: int

    def __post_init__(self) -> None:
        if self.limit < 1:
            msg = "a rate needs a limit of at least 1"
            raise ValueError(msg)

    @property
    def interval(self) -> int:
        """Microseconds one failure occupies the bucket: the drain rate's inverse."""
        # NOTE: integer microseconds, here and in Redis: a float sum of intervals drifts
        # from the product and would refuse the last failure of a burst.
        return round(60_000_000 / self.limit)

    @property
    def tolerance(self) -> int:
        """How far (µs) ahead of now a bucket's arrival time may be and still accept."""
        return self.interval * (self.limit - 1)


class Count(NamedTuple):
    """What one counted failure did to its bucket."""

    accepted: bool
    """Whether the bucket had room for it (``False``: it was already over the limit)."""
    wait: float
    """Seconds until the bucket has room for another failure (0.0: it has now)."""


class CounterStore(Protocol):
    """A shared place to count failures, which may fail to answer (Redis)."""

    async def hit(self, bucket: str, rate: Rate) -> Count | None:
        """Count one failure in ``bucket``, or ``None`` if the store cannot answer now."""
        ...

    async def close(self) -> None:
        """Release connections; the store may be used again afterwards."""
        ...


class Counters(Protocol):
    """Where a limiter counts failures: always answers."""

    async def hit(self, bucket: str, rate: Rate) -> Count:
        """Count one failure in ``bucket``."""
        ...

    async def close(self) -> None:
        """Release connections; the counters may be used again afterwards."""
        ...


class LocalCounters:
    """GCRA in process memory: one theoretical arrival time per bucket, bounded in number.

    A bucket whose arrival time has passed is as good as absent; such buckets are pruned
    from the front of the (least recently counted first) map as new ones are counted, and
    when the map is full the least recently counted bucket goes.
    """

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self._monotonic = monotonic
        self._max_buckets = max_buckets
        self._arrivals: dict[str, int] = {}

    def __len__(self) -> int:
        """How many buckets are held."""
        return len(self._arrivals)

    def count(self, bucket: str, rate: Rate) -> Count:
        """Count one failure in ``bucket`` (synchronously)."""
        now = round(self._monotonic() * 1_000_000)
        arrivals = self._arrivals
        arrival = max(arrivals.pop(bucket, now), now)
        if arrival - rate.tolerance > now:  # over the limit: not counted, the bucket stays
            arrivals[bucket] = arrival
            return Count(accepted=False, wait=(arrival - rate.tolerance - now) / 1_000_000)
        arrival += rate.interval
        self._prune(now)
        arrivals[bucket] = arrival
        return Count(accepted=True, wait=max(0, arrival - rate.tolerance - now) / 1_000_000)

    def _prune(self, now: int) -> None:
        arrivals = self._arrivals
        for _ in range(_PRUNE_PER_COUNT):
            oldest = next(iter(arrivals), None)
            if oldest is None or arrivals[oldest] > now:
                break
            del arrivals[oldest]
        while len(arrivals) >= self._max_buckets:
            del arrivals[next(iter(arrivals))]

    async def hit(self, bucket: str, rate: Rate) -> Count:
        """Count one failure in ``bucket``; process memory always answers."""
        return self.count(bucket, rate)

    async def close(self) -> None:
        """Nothing to release."""


class SharedCounters:
    """A shared store (several nodes, one budget) that degrades to process memory.

    When the shared store cannot answer (down, slow, its connection killed), the failure
    is counted in process memory instead, and so is every failure of the next
    :data:`SHARED_RETRY_SECONDS`; then the shared store is asked again. One warning is
    logged per outage, not per request.
    """

    def __init__(
        self,
        shared: CounterStore,
        local: LocalCounters,
        monotonic: Callable[[], float] = time.monotonic,
        retry_seconds: float = SHARED_RETRY_SECONDS,
    ) -> None:
        self._shared = shared
        self._local = local
        self._monotonic = monotonic
        self._retry_seconds = retry_seconds
        self._retry_at = -math.inf
        self.degraded = False
        """Whether the last attempt to reach the shared store failed."""

    async def hit(self, bucket: str, rate: Rate) -> Count:
        """Count in the shared store if it answers, else in process memory."""
        if self._monotonic() >= self._retry_at:
            counted = await self._shared.hit(bucket, rate)
            if counted is not None:
                if self.degraded:
                    self.degraded = False
                    logger.info("ratelimit_shared_store_restored")
                return counted
            self._retry_at = self._monotonic() + self._retry_seconds
            if not self.degraded:
                self.degraded = True
                logger.warning(
                    "ratelimit_shared_store_unavailable",
                    fallback="process memory",
                    retry_seconds=self._retry_seconds,
                )
        return self._local.count(bucket, rate)

    async def close(self) -> None:
        """Close the shared store's connections."""
        await self._shared.close()


class FailureLimiter:
    """One limit (key-authentication failures, or verify misses) per source and per key.

    ``limit`` is failures per minute and the burst; 0 turns the limiter off. ``refused``
    is called once per 429 (a metric).
    """

    def __init__(
        self,
        name: str,
        limit: int,
        store: Counters,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        max_blocked: int = MAX_BUCKETS,
        refused: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.rate = Rate(limit) if limit > 0 else None
        self._store = store
        self._monotonic = monotonic
        self._max_blocked = max_blocked
        self._refused = refused
        self.blocked: dict[str, float] = {}
        """Bucket → monotonic time it has room again; empty in normal operation, which is
        what the hot path tests before anything else."""
        self._all_free_at = -math.inf

    def check(self, source: str, key: str | None = None) -> None:
        """Refuse (429) a source or key that is blocked on this node.

        Cheap enough for every request, but callers test :attr:`blocked` first.
        """
        if not self.blocked:
            return
        now = self._monotonic()
        if now >= self._all_free_at:
            self.blocked.clear()
            return
        wait = self._blocked_for(self.source_bucket(source), now)
        if key is not None:
            wait = max(wait, self._blocked_for(self.key_bucket(key), now))
        if wait > 0.0:
            self._refuse(wait)

    async def failed(self, source: str, key: str | None = None) -> None:
        """Count one failure of ``source`` (and ``key``, if one was presented).

        Raises 429 if this failure was already over a limit (a node learns of a block
        kept in a shared store on its first failure); otherwise returns, and the caller
        answers the failure as usual.
        """
        if self.rate is None:
            return
        waits = [await self._count(self.source_bucket(source))]
        if key is not None:
            waits.append(await self._count(self.key_bucket(key)))
        over = [wait for accepted, wait in waits if not accepted]
        if over:
            self._refuse(max(over))

    def source_bucket(self, source: str) -> str:
        """The bucket name of a source."""
        # NOTE: uvicorn puts the X-Forwarded-For address of a trusted proxy here; cut to a
        # bounded length so that an odd header cannot make a bucket name large.
        return f"{self.name}:source:{source[:MAX_SOURCE_LENGTH]}"

    def key_bucket(self, key: str) -> str:
        """The bucket name of a key (a digest or a principal id: never a plaintext)."""
        return f"{self.name}:key:{key}"

    async def _count(self, bucket: str) -> Count:
        assert self.rate is not None  # noqa: S101 - checked by the only caller  # nosec B101
        counted = await self._store.hit(bucket, self.rate)
        if counted.wait > 0.0:
            self._block(bucket, self._monotonic() + counted.wait)
        return counted

    def _blocked_for(self, bucket: str, now: float) -> float:
        until = self.blocked.get(bucket)
        if until is None:
            return 0.0
        if until <= now:
            del self.blocked[bucket]
            return 0.0
        return until - now

    def _block(self, bucket: str, until: float) -> None:
        blocked = self.blocked
        blocked.pop(bucket, None)
        while len(blocked) >= self._max_blocked:
            del blocked[next(iter(blocked))]
        blocked[bucket] = until
        self._all_free_at = max(self._all_free_at, until)

    def _refuse(self, wait: float) -> None:
        if self._refused is not None:
            self._refused()
        # NOTE: Retry-After is whole seconds (RFC 9110 §10.2.3), rounded up: a client that
        # waits exactly that long finds room in the bucket.
        raise TooManyRequests(headers={"Retry-After": str(max(1, math.ceil(wait)))})
