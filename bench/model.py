"""The values the benchmark passes between its parts: workloads, load results, report rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LoadResult", "Row", "Workload"]


@dataclass(frozen=True, slots=True)
class Workload:
    """What one load run sends: the same request line and headers, bodies taken in turn.

    One body means the same request every time; a million bodies mean a million distinct
    requests, cycled if the run outlasts them.
    """

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    bodies: Sequence[bytes] = (b"",)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One bounded closed-loop run at a fixed number of connections."""

    generator: str  # "wrk" or "asyncio"
    connections: int
    duration_s: float  # measured, not requested
    requests: int  # completed responses
    non_2xx: int  # responses with a status outside 200-299
    socket_errors: int  # connect/read/write errors and timeouts
    latency_ms: dict[str, float]  # "p50", "p90", "p99", "max", "mean"

    @property
    def rps(self) -> float:
        """Completed responses per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, ``rps`` included."""
        return {
            "generator": self.generator,
            "connections": self.connections,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "rps": self.rps,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "latency_ms": dict(self.latency_ms),
        }


@dataclass(slots=True)
class Row:
    """One line of the report: a DESIGN.md target and what this run measured against it."""

    key: str  # stable identifier, e.g. "verify_sk_sqlite"
    what: str  # the DESIGN.md row, in words
    target: str  # e.g. "≥ 0.5 × hello-world req/s; p99 ≤ 10 ms"
    measured: str  # e.g. "24,100 req/s (0.52 ×); p99 4.1 ms"
    ratio: float | None = None  # the number the target bounds, where there is one
    passed: bool | None = None  # None: not measured in this run (e.g. the soak in quick mode)
    note: str = ""  # why a row fails or was skipped, with the measurement that shows it
    details: dict[str, Any] = field(default_factory=dict)  # raw numbers for the JSON report
