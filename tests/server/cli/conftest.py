"""Fixtures for the admin CLI: a configured runner per backend, scratch databases."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

import pytest
from cli_support import Cli
from sqlalchemy import text

from gatepass_server.cli import main
from gatepass_server.domain.sealing import encode_master_key
from gatepass_server.storage.database import Database

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CLI_MASTER_KEY = encode_master_key(secrets.token_bytes(32))


async def _admin(url: str, statement: str) -> None:
    database = Database(url)
    try:
        async with database.engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await database.dispose()


@pytest.fixture(autouse=True)
def wide_console() -> Iterator[None]:
    """Rich tables as wide as ids need: the consoles are built at import, before COLUMNS."""
    saved = [(console, console._width) for console in (main.out, main.err)]
    for console, _ in saved:
        console.width = 250
    yield
    for console, width in saved:
        console._width = width


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    """The CLI on a migrated, empty database of the backend under test."""
    return Cli(
        {
            "GATEPASS_DATA_DIR": str(tmp_path / "data"),
            "GATEPASS_DATABASE_URL": database_url,
            "GATEPASS_MASTER_KEY": CLI_MASTER_KEY,
        },
    )


@pytest.fixture
def bare_cli(tmp_path: Path) -> Cli:
    """The CLI with only a data directory: for commands that must stop before storage."""
    return Cli({"GATEPASS_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
def instance(cli: Cli) -> dict[str, Any]:
    """The default instance (the oldest, which machine commands act on), made by the CLI."""
    created: dict[str, Any] = cli.json("instances", "create", "default")
    return created


@pytest.fixture
def scratch_database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A database of this test's own that no migration has touched yet.

    For the tests that damage a schema (drift, a future revision): the shared PostgreSQL
    database of the session must stay intact for everyone else.
    """
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    shared = str(request.getfixturevalue("postgres_server_url"))
    name = f"gatepass_cli_{secrets.token_hex(4)}"
    asyncio.run(_admin(shared, f'CREATE DATABASE "{name}"'))
    try:
        yield f"{shared.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(shared, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def scratch_cli(scratch_database_url: str, tmp_path: Path) -> Cli:
    """The CLI on the scratch database."""
    return Cli(
        {
            "GATEPASS_DATA_DIR": str(tmp_path / "scratch-data"),
            "GATEPASS_DATABASE_URL": scratch_database_url,
            "GATEPASS_MASTER_KEY": CLI_MASTER_KEY,
        },
    )
