"""Test-only failpoints: kill the process at a named point of a write.

Off unless ``GATEPASS_TEST_FAILPOINTS`` names points (comma-separated), which only the
crash-safety tests set. A hit point sends the process ``SIGKILL``, so nothing after it
runs: no commit, no response, no cleanup; exactly what a power cut or ``kill -9`` does.
"""

from __future__ import annotations

import os
import signal
from typing import Final

__all__ = ["hit"]

_ACTIVE: Final = frozenset(
    name.strip()
    for name in os.environ.get("GATEPASS_TEST_FAILPOINTS", "").split(",")
    if name.strip()
)


def hit(name: str) -> None:
    """Die here if the failpoint ``name`` is switched on."""
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
