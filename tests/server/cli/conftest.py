"""Fixtures for the admin CLI: a configured runner per backend, scratch databases."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import pytest
from cli_support import Cli

from gatepass_server.cli import main
from gatepass_server.domain.sealing import encode_master_key

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CLI_MASTER_KEY = encode_master_key(secrets.token_bytes(32))


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
def scratch_cli(empty_database_url: str, tmp_path: Path) -> Cli:
    """The CLI on the scratch database."""
    return Cli(
        {
            "GATEPASS_DATA_DIR": str(tmp_path / "scratch-data"),
            "GATEPASS_DATABASE_URL": empty_database_url,
            "GATEPASS_MASTER_KEY": CLI_MASTER_KEY,
        },
    )
