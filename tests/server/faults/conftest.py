"""Fixtures for the fault suite: a PostgreSQL cluster and a Redis of our own, to break.

Both are session-scoped and started from the distribution's binaries; each test gets a
database of its own on the private cluster. A test that breaks a server leaves it broken;
the fixtures bring it back (resume, start) before the next test. Missing binaries skip
with a visible reason, and fail under ``CI=true`` (as the root conftest does).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from faults_support import PrivatePostgres, PrivateRedis, postgres_bin_dir

from gatepass_server.config import Settings
from gatepass_server.domain.sealing import encode_master_key
from helpers import autocommit, throwaway_postgres_database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MASTER_KEY = encode_master_key(bytes(range(32)))


def _require_or_skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def private_postgres_cluster() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this session's own, on 127.0.0.1, removed at the end."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        _require_or_skip("no PostgreSQL binaries (initdb, postgres) in /usr/lib/postgresql/*/bin")
    assert bin_dir is not None
    cluster = PrivatePostgres(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def private_postgres(private_postgres_cluster: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private cluster, running and responsive before and after the test."""
    cluster = private_postgres_cluster
    cluster.resume()
    if cluster.process is None or cluster.process.poll() is not None:
        cluster.start()
    yield cluster
    cluster.resume()
    if cluster.process is None or cluster.process.poll() is not None:
        cluster.start()


@pytest.fixture
def private_postgres_url(private_postgres: PrivatePostgres) -> Iterator[str]:
    """An empty database of this test's own on the private cluster (Gatepass migrates it)."""
    with throwaway_postgres_database(private_postgres.url(), "faults") as url:
        yield url


@pytest.fixture
def admin_sql(private_postgres: PrivatePostgres) -> Callable[[str], None]:
    """Run one statement on the private cluster from an admin connection of its own."""

    def run(statement: str) -> None:
        asyncio.run(autocommit(private_postgres.url(), statement))

    return run


@pytest.fixture(scope="session")
def private_redis_server() -> Iterator[PrivateRedis]:
    """A ``redis-server`` of this session's own, on 127.0.0.1, removed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        _require_or_skip("no redis-server binary on PATH")
    assert binary is not None
    server = PrivateRedis(Path(binary))
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def private_redis(private_redis_server: PrivateRedis) -> Iterator[PrivateRedis]:
    """The private Redis, running before and after the test."""
    if not private_redis_server.running:
        private_redis_server.start()
    yield private_redis_server
    if not private_redis_server.running:
        private_redis_server.start()


@pytest.fixture
def fault_settings(tmp_path: Path, bootstrap_key: str) -> Callable[..., Settings]:
    """Settings for a node on ``database_url`` (and Redis when given)."""

    def build(database_url: str, redis_url: str | None = None, name: str = "node") -> Settings:
        data_dir = tmp_path / name
        data_dir.mkdir(exist_ok=True)
        return Settings(
            data_dir=data_dir,
            database_url=database_url,
            redis_url=redis_url,
            master_key=MASTER_KEY,
            bootstrap_secret_key=bootstrap_key,
        ).validated()

    return build
