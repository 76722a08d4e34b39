"""Shared fixtures: real SQLite and PostgreSQL databases, a runtime, an in-process client.

Every storage-backed fixture is parametrized over both backends. PostgreSQL tests skip
with a visible reason when no server answers, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import text

from gatepass_server.app import create_app
from gatepass_server.config import Settings
from gatepass_server.domain.clock import FixedClock
from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.domain.sealing import encode_master_key
from gatepass_server.runtime import Runtime
from gatepass_server.storage.database import Database
from gatepass_server.storage.schema import upgrade
from gatepass_server.storage.tables import metadata
from helpers import throwaway_postgres_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

POSTGRES_ADMIN_URL = os.environ.get(
    "GATEPASS_TEST_POSTGRES_URL",
    "postgresql://postgres@127.0.0.1:5432/test",
)
REDIS_URL = os.environ.get("GATEPASS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_MS = 1_754_938_436_732
# Every test fails if a secret it saw reaches a log line or a later response (hygiene.py).
pytest_plugins = ["hygiene"]
MASTER_KEY = encode_master_key(bytes(range(32)))


def _require_or_skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


async def _postgres_reachable(url: str) -> str | None:
    database = Database(url)
    try:
        await database.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"{type(exc).__name__}: {exc}"
    finally:
        await database.dispose()
    return None


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A migrated PostgreSQL database of our own for this session, dropped at the end."""
    problem = asyncio.run(_postgres_reachable(POSTGRES_ADMIN_URL))
    if problem is not None:
        _require_or_skip(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {problem}")
    with throwaway_postgres_database(POSTGRES_ADMIN_URL, "gatepass_test") as url:

        async def migrate() -> None:
            database = Database(url)
            try:
                await upgrade(database)
            finally:
                await database.dispose()

        asyncio.run(migrate())
        yield url


async def _redis_reachable(url: str) -> str | None:
    import redis.asyncio  # noqa: PLC0415 - only the tests that need Redis import it

    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server for pub/sub tests (skipped when absent, required under CI=true)."""
    problem = asyncio.run(_redis_reachable(REDIS_URL))
    if problem is not None:
        _require_or_skip(f"Redis at {REDIS_URL} is not reachable: {problem}")
    return REDIS_URL


async def _truncate(url: str) -> None:
    database = Database(url)
    try:
        async with database.write() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names}"))
    finally:
        await database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test."""
    return str(request.param)


@pytest.fixture
def backend_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the backend under test lives (resolved outside any event loop)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'gatepass.db'}"
    return str(request.getfixturevalue("postgres_server_url"))


@pytest.fixture
def empty_database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A database of this test's own that no migration has touched, dropped afterwards.

    For tests that damage or race a schema: the session's shared database stays intact.
    """
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server_url = str(request.getfixturevalue("postgres_server_url"))
    with throwaway_postgres_database(server_url, "gatepass_empty") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, migrated once and copied for each test."""
    path = tmp_path_factory.mktemp("template") / "gatepass.db"

    async def migrate() -> None:
        database = Database(f"sqlite:///{path}")
        try:
            await upgrade(database)
        finally:
            await database.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture
async def database_url(backend: str, backend_url: str, sqlite_template: Path) -> str:
    """A clean database at the current schema, on the backend under test."""
    if backend == "sqlite":
        shutil.copyfile(sqlite_template, backend_url.removeprefix("sqlite:///"))
    else:
        await _truncate(backend_url)
    return backend_url


@pytest.fixture
def clock() -> FixedClock:
    """The injected clock: moves only when a test says so."""
    return FixedClock(START_MS)


@pytest.fixture(scope="session")
def bootstrap_key() -> str:
    """The default instance's ``sk_`` key, known in advance."""
    return generate_secret(SecretKind.INSTANCE_TEST)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, bootstrap_key: str) -> Settings:
    """Settings for one test's server."""
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        master_key=MASTER_KEY,
        bootstrap_secret_key=bootstrap_key,
    ).validated()


@pytest.fixture
async def runtime(settings: Settings, clock: FixedClock) -> AsyncIterator[Runtime]:
    """A prepared and started runtime on the injected clock.

    Migrated, with the default instance, and its verification cache following the change
    log, as in a serving process.
    """
    built = Runtime.build(settings, clock=clock)
    await built.prepare()
    await built.start()  # as a serving process does: the verification cache is live
    yield built
    await built.close()


@pytest.fixture
def sk(runtime: Runtime, bootstrap_key: str) -> str:
    """The default instance's secret key."""
    del runtime
    return bootstrap_key


@pytest.fixture
async def other_sk(runtime: Runtime) -> str:
    """The secret key of a second instance, to test isolation."""
    return (await runtime.instances.create("other")).secret_key


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://gatepass.test",
        event_hooks={"response": [_never_500]},
    ) as http:
        yield http


async def _never_500(response: httpx.Response) -> None:
    """A 500 is always a bug: fail the test that provoked it, whatever it asserts."""
    if response.status_code >= 500 and response.status_code != 503:
        await response.aread()
        request = response.request
        pytest.fail(f"{request.method} {request.url} -> {response.status_code}: {response.text}")
