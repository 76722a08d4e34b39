"""Fixtures for multi-process tests: shared databases, node environments, propagation times.

A cluster's nodes share one database; each change seen on another node is timed and the
times are summed up at the end of the run.

Nodes are real ``gatepass-server serve`` processes (``helpers.LiveServer``). PostgreSQL and
Redis come from the root conftest's ``postgres_server_url`` and ``redis_url``, which skip
with a visible reason when the service is absent, and fail under ``CI=true``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest

from helpers import throwaway_postgres_database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from _pytest.terminal import TerminalReporter

_PROPAGATION: dict[str, list[tuple[str, float]]] = defaultdict(list)
"""Path → (scenario, seconds) for every change observed on a second node in this session."""


@pytest.fixture(
    scope="module",
    params=[
        "sqlite-poll",
        pytest.param("postgres-notify", marks=pytest.mark.postgres),
        pytest.param("postgres-redis", marks=pytest.mark.postgres),
    ],
)
def cluster_path(request: pytest.FixtureRequest) -> str:
    """How a change reaches the other node: SQLite polling, LISTEN/NOTIFY, or Redis pub/sub."""
    return str(request.param)


@pytest.fixture(scope="module")
def cluster_storage(
    cluster_path: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Storage variables for one cluster: a fresh, empty database; the first node migrates it.

    PostgreSQL gets a database of its own, not the session's shared one, which other tests
    truncate. The Redis path needs Redis (skipped without it, required under ``CI=true``).
    """
    if cluster_path == "sqlite-poll":
        path = tmp_path_factory.mktemp("cluster-sqlite") / "g.db"
        yield {"GATEPASS_DATABASE_URL": f"sqlite:///{path}"}
        return
    extra = {}
    if cluster_path == "postgres-redis":
        extra["GATEPASS_REDIS_URL"] = str(request.getfixturevalue("redis_url"))
    shared = str(request.getfixturevalue("postgres_server_url"))
    with throwaway_postgres_database(shared, "gatepass_cluster") as url:
        yield {"GATEPASS_DATABASE_URL": url, **extra}


@pytest.fixture(scope="session")
def record_propagation() -> Callable[[str, str, float], None]:
    """Note how long a change took to show on another node; printed at the end of the run."""

    def record(path: str, scenario: str, seconds: float) -> None:
        _PROPAGATION[path].append((scenario, seconds))
        print(f"\npropagation [{path}] {scenario}: {seconds * 1000:.1f} ms")  # noqa: T201

    return record


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    """p50 and max propagation per path, for the measurements this session made."""
    if not _PROPAGATION:
        return
    terminalreporter.section("propagation to a second node (from the writer's acknowledgement)")
    for path, samples in sorted(_PROPAGATION.items()):
        times = sorted(seconds for _, seconds in samples)
        terminalreporter.write_line(
            f"{path:<16} n={len(times):<3} p50={statistics.median(times) * 1000:7.1f} ms"
            f"  max={times[-1] * 1000:7.1f} ms",
        )
        per_scenario: dict[str, list[float]] = defaultdict(list)
        for scenario, seconds in samples:
            per_scenario[scenario].append(seconds)
        for scenario, values in sorted(per_scenario.items()):
            terminalreporter.write_line(
                f"    {scenario:<28} n={len(values):<3}"
                f" p50={statistics.median(values) * 1000:7.1f} ms"
                f"  max={max(values) * 1000:7.1f} ms",
            )
