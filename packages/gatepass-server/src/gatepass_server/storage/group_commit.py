"""Group commit: concurrent writes share one transaction, so one disk flush serves them all.

Minting is one durable insert per request. Committed one by one, the rate is bounded by
the disk's flushes per second (a few hundred on SQLite with ``synchronous=FULL``). Here the
writes that arrive while a transaction commits wait for it and then go together in the
next one. A lone write waits for nothing: its transaction starts at once. Each caller is
answered only after the transaction holding its write has committed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 256
"""Writes per transaction at most (also bounds how long the first of a batch waits)."""


class GroupCommit(Generic[T, R]):
    """Queue items for ``write``, which stores a batch in one transaction.

    ``write(items)`` returns one result per item, in order, once committed; if it raises,
    every caller of that batch gets the exception. A caller cancelled before its batch
    started is left out of it.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Store ``item``; return its result once the transaction holding it committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        writer = self._writer
        if writer is None or writer.done() or writer.get_loop() is not loop:
            self._writer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = [entry for entry in self._queue[: self._max_batch] if not entry[1].done()]
                del self._queue[: self._max_batch]
                if batch:
                    await self._commit(batch)
        finally:
            self._writer = None

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
