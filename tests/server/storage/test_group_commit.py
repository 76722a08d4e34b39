"""Group commit: batching, results in order, failures per batch, cancellation."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from gatepass_server.storage.group_commit import GroupCommit

if TYPE_CHECKING:
    from collections.abc import Sequence


class Recorder:
    """A ``write`` that records each batch and can be held open until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_on: int | None = None

    async def write(self, items: Sequence[int]) -> list[int]:
        """Record the batch, wait for release, then answer ten times each item."""
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_on in items:
            raise RuntimeError(f"batch with {self.fail_on} failed")
        return [item * 10 for item in items]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_write_is_its_own_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    assert await commit.submit(7) == 70
    assert recorder.batches == [[7]]


async def test_writes_arriving_during_a_commit_share_the_next_one() -> None:
    """Callers queued while a transaction runs go together, each with its own result."""
    recorder = Recorder()
    recorder.release.clear()
    commit = GroupCommit(recorder.write)
    first = asyncio.create_task(commit.submit(0))
    await _settle()
    rest = [asyncio.create_task(commit.submit(n)) for n in range(1, 11)]
    await _settle()
    recorder.release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [n * 10 for n in range(1, 11)]
    assert recorder.batches == [[0], list(range(1, 11))]


async def test_batches_are_bounded() -> None:
    recorder = Recorder()
    recorder.release.clear()
    commit = GroupCommit(recorder.write, max_batch=4)
    tasks = [asyncio.create_task(commit.submit(n)) for n in range(10)]
    await _settle()
    recorder.release.set()
    assert await asyncio.gather(*tasks) == [n * 10 for n in range(10)]
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    recorder = Recorder()
    recorder.release.clear()
    recorder.fail_on = 2
    commit = GroupCommit(recorder.write, max_batch=3)
    tasks = [asyncio.create_task(commit.submit(n)) for n in range(6)]
    await _settle()
    recorder.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r) for r in results[:3]] == [RuntimeError] * 3
    assert results[3:] == [30, 40, 50]


async def test_a_caller_cancelled_before_its_batch_is_left_out() -> None:
    recorder = Recorder()
    recorder.release.clear()
    commit = GroupCommit(recorder.write)
    first = asyncio.create_task(commit.submit(0))
    await _settle()
    gone = asyncio.create_task(commit.submit(1))
    kept = asyncio.create_task(commit.submit(2))
    await _settle()
    gone.cancel()
    await _settle()
    recorder.release.set()
    assert (await first, await kept) == (0, 20)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert recorder.batches == [[0], [2]]


async def test_the_queue_drains_again_after_going_idle() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    assert await commit.submit(1) == 10
    await _settle()
    assert await commit.submit(2) == 20
    assert recorder.batches == [[1], [2]]
