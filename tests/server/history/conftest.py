"""Options and fixtures of the history runs: the seed to replay, each node's environment.

``pytest tests/server/history --history-seed=N`` (or ``GATEPASS_HISTORY_SEED=N``) replays
the operation and fault schedule of seed ``N``; a failing run prints its seed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

import pytest

from helpers import throwaway_postgres_database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

SEED_VARIABLE: Final = "GATEPASS_HISTORY_SEED"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--history-seed``: replay one schedule."""
    parser.addoption(
        "--history-seed",
        type=int,
        default=None,
        help=f"replay the history run of this seed (or set {SEED_VARIABLE})",
    )


@pytest.fixture(scope="session")
def history_seed(request: pytest.FixtureRequest) -> int | None:
    """The seed asked for on the command line or in the environment, if any."""
    given = request.config.getoption("--history-seed")
    if given is not None:
        return int(given)
    raw = os.environ.get(SEED_VARIABLE, "").strip()
    return int(raw) if raw else None


@pytest.fixture(scope="session")
def history_node_env(
    node_env: Callable[[Mapping[str, str], Path], dict[str, str]],
) -> Callable[[Mapping[str, str], Path], dict[str, str]]:
    """One node's environment (``node_env``) with the rate limiter off.

    The workload verifies revoked and forged tokens on purpose, and a 429 would hide the
    answer the checker needs.
    """

    def build(storage: Mapping[str, str], data_dir: Path) -> dict[str, str]:
        limits_off = {"GATEPASS_AUTH_FAILURE_LIMIT": "0", "GATEPASS_VERIFY_MISS_LIMIT": "0"}
        return node_env({**limits_off, **storage}, data_dir)

    return build


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def history_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(backend, database URL): one SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'history.db'}"
        return
    shared = str(request.getfixturevalue("postgres_server_url"))
    with throwaway_postgres_database(shared, "gatepass_history") as url:
        yield "postgres", url
