"""The one clock: integer Unix milliseconds, injectable for tests."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FixedClock", "SystemClock"]


class Clock(Protocol):
    """Tells the current time in Unix milliseconds."""

    def now_ms(self) -> int:
        """Return the current time in integer Unix milliseconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """Return the wall-clock time in Unix milliseconds."""
        return time.time_ns() // 1_000_000


class FixedClock:
    """A clock that moves only when told to (tests, expiry edges)."""

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms

    def now_ms(self) -> int:
        """Return the set time."""
        return self._now

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` milliseconds."""
        self._now += ms

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms``."""
        self._now = now_ms
