"""Following the change log: how every node learns of revocations, deletions and rotations.

Each node keeps a cursor into the log and applies new entries to its
:class:`~gatepass_server.services.cache.VerifyCache`:

- **on its own writes**, after the commit and before the write is acknowledged (the
  database calls :meth:`ChangeFollower.written`), so the node that revoked never again
  answers "valid" for that token;
- **when woken** by a push channel: PostgreSQL ``LISTEN/NOTIFY`` (the ``NOTIFY`` is part
  of the writing transaction), or Redis pub/sub when ``GATEPASS_REDIS_URL`` is set;
- **by polling**, every :data:`POLL_SECONDS` while a push channel is connected and every
  :data:`FAST_POLL_SECONDS` otherwise (SQLite, or the channel is down). A lost notification
  therefore delays a change by one poll at most.

Redis carries wake-ups only; what changed is always read from the database
(SECURITY.md principle 1). If the log cannot be read for
:data:`~gatepass_server.services.cache.STALE_AFTER_SECONDS`, the cache stops answering and
every verify asks storage itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Final, Protocol

from gatepass_server.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from gatepass_server.domain.changes import Change, RevocationPage
    from gatepass_server.domain.clock import Clock
    from gatepass_server.services.cache import VerifyCache

__all__ = [
    "FAST_POLL_SECONDS",
    "POLL_SECONDS",
    "ChangeFollower",
    "ChangeLog",
    "PushChannel",
]

POLL_SECONDS: Final = 1.0
FAST_POLL_SECONDS: Final = 0.05
SYNC_TIMEOUT_SECONDS: Final = 2.0
PRUNE_EVERY_SECONDS: Final = 600.0
_BATCH: Final = 1000


class ChangeLog(Protocol):
    """Reads of the change log (``storage.changes`` implements it)."""

    async def last_id(self) -> int:
        """The newest entry's id (0 for an empty log)."""
        ...

    async def changes_after(self, cursor: int, limit: int) -> list[Change]:
        """Up to ``limit`` entries after ``cursor``, oldest first."""
        ...

    async def revocations_after(
        self,
        instance_id: str,
        cursor: int,
        *,
        limit: int,
        now_ms: int,
    ) -> RevocationPage:
        """An instance's revocations of unexpired tokens after ``cursor``, oldest first."""
        ...

    async def prune(self, now_ms: int) -> int:
        """Drop entries nobody needs any more; return how many."""
        ...


class PushChannel(Protocol):
    """Something that wakes followers on other nodes when this one writes."""

    async def listen(self, wake: Callable[[], None], connected: Callable[[bool], None]) -> None:
        """Call ``wake`` on every notification until cancelled, reconnecting as needed.

        ``connected`` is told whether notifications can currently arrive.
        """
        ...

    async def publish(self) -> None:
        """Tell other nodes that this one has just committed a change."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class ChangeFollower:
    """Keeps one node's cache in step with the change log."""

    def __init__(
        self,
        log: ChangeLog,
        cache: VerifyCache,
        clock: Clock,
        channel: PushChannel | None,
        *,
        also_apply: Sequence[Callable[[Sequence[Change]], None]] = (),
        poll_seconds: float = POLL_SECONDS,
        fast_poll_seconds: float = FAST_POLL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._also_apply = also_apply
        self._poll_seconds = poll_seconds
        self._fast_poll_seconds = fast_poll_seconds
        self._cache = cache
        self._clock = clock
        self._channel = channel
        self._monotonic = monotonic
        self._cursor: int | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._push_connected = False
        self._failing = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def push_connected(self) -> bool:
        """Whether a push channel is connected (else the log is polled fast)."""
        return self._push_connected

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has run (and :meth:`stop` has not)."""
        return bool(self._tasks)

    async def start(self) -> None:
        """Start following from the log's current end (nothing is cached yet)."""
        since = self._cache.now()
        self._cursor = await self._log.last_id()
        self._cache.mark_synced(since)
        self._tasks = [asyncio.create_task(self._poll())]
        if self._channel is not None:
            self._tasks.append(asyncio.create_task(self._channel.listen(self.wake, self._on_push)))

    async def stop(self) -> None:
        """Stop following; the cache stops answering."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._channel is not None:
            await self._channel.close()
        self._cursor = None  # no sync, not even after a local write, may trust it again
        self._cache.mark_unsynced()

    def wake(self) -> None:
        """Read the log now (a push channel says something changed)."""
        self._wake.set()

    def changed(self) -> asyncio.Event:
        """An event set the next time new entries are applied (for long polls)."""
        return self._changed

    async def written(self) -> None:
        """Apply a change this node has just committed, then tell the other nodes.

        NOTE: runs before the write is acknowledged. If the log cannot be read right now,
        the whole cache goes: the acknowledged change must never be contradicted here.
        """
        if self._cursor is not None:
            try:
                async with asyncio.timeout(SYNC_TIMEOUT_SECONDS):
                    await self.sync()
            except Exception:  # noqa: BLE001 - any failure: forget everything instead
                self._cache.mark_unsynced()
        if self._channel is not None:
            try:
                await self._channel.publish()
            except Exception:  # noqa: BLE001 - a wake-up is a hint; polling still delivers
                logger.warning("change_publish_failed", exc_info=True)

    async def sync(self) -> None:
        """Apply every entry after the cursor, then trust the cache again."""
        async with self._lock:
            if self._cursor is None:
                return
            since = self._cache.now()  # the cache is as new as the read's start, no newer
            applied = False
            while True:
                batch = await self._log.changes_after(self._cursor, _BATCH)
                if batch:
                    self._cache.apply(batch)
                    for apply in self._also_apply:
                        apply(batch)
                    self._cursor = batch[-1].id
                    applied = True
                if len(batch) < _BATCH:
                    break
            self._cache.mark_synced(since)
        if applied:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    # -- internals -------------------------------------------------------------------------

    def _on_push(self, connected: bool) -> None:  # noqa: FBT001 - a callback's signature
        self._push_connected = connected
        self._wake.set()  # notifications may have been missed: catch up now

    async def _poll(self) -> None:
        pruned_at = self._monotonic()
        while True:
            interval = self._poll_seconds if self._push_connected else self._fast_poll_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with asyncio.timeout(SYNC_TIMEOUT_SECONDS):
                    await self.sync()
                if self._monotonic() - pruned_at >= PRUNE_EVERY_SECONDS:
                    pruned_at = self._monotonic()
                    await self._log.prune(self._clock.now_ms())
            except Exception:  # noqa: BLE001 - storage trouble: the cache goes stale, we retry
                if not self._failing:
                    logger.warning("change_log_unreadable", exc_info=True)
                self._failing = True
            else:
                if self._failing:
                    logger.info("change_log_readable")
                self._failing = False
