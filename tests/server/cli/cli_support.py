"""Helpers for the CLI tests: run a command, ask the HTTP API the same question in-process."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx
from sqlalchemy import text
from typer.testing import CliRunner

from gatepass_server.app import create_app
from gatepass_server.cli.main import app
from gatepass_server.config import Settings
from gatepass_server.runtime import Runtime
from gatepass_server.storage.database import Database
from helpers import auth

if TYPE_CHECKING:
    from collections.abc import Mapping

    from click.testing import Result

GATEPASS_VARIABLES: Final = (
    "GATEPASS_DATABASE_URL",
    "GATEPASS_DATA_DIR",
    "GATEPASS_MASTER_KEY",
    "GATEPASS_BOOTSTRAP_SECRET_KEY",
    "GATEPASS_HOST",
    "GATEPASS_PORT",
    "GATEPASS_WORKERS",
    "GATEPASS_LOG_LEVEL",
    "GATEPASS_MAX_BODY_BYTES",
    "GATEPASS_REDIS_URL",
)

SUMMARY_KEYS: Final = frozenset(
    {"object", "id", "name", "instance_id", "created_at", "updated_at", "default_token_ttl"},
)
MACHINE_KEYS: Final = SUMMARY_KEYS | {"scoped_machines"}
"""A Machine's keys on the wire (CONTRACT.md §3)."""

UNKNOWN_MACHINE_ID: Final = "mch_" + "0" * 27


@dataclass(frozen=True)
class Cli:
    """Runs ``gatepass-server`` in-process with exactly the ``GATEPASS_*`` variables given."""

    env: Mapping[str, str]

    def __call__(self, *args: str, **extra_env: str) -> Result:
        """Run one command; nothing from the outer environment's ``GATEPASS_*`` leaks in."""
        env: dict[str, str | None] = dict.fromkeys(GATEPASS_VARIABLES)
        env.update(self.env)
        env.update(extra_env)
        return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)

    def ok(self, *args: str, **extra_env: str) -> Result:
        """Run one command that must succeed."""
        result = self(*args, **extra_env)
        assert result.exit_code == 0, (args, result.exit_code, result.output)
        return result

    def json(self, *args: str) -> Any:
        """Run one command with ``--json``; its stdout must be one JSON document."""
        return json.loads(self.ok(*args, "--json").stdout)

    def settings(self) -> Settings:
        """The settings these commands run with."""
        return Settings.from_env(env=self.env)


def http(cli: Cli, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    """One request to the HTTP API over the same database, in-process."""

    async def go() -> tuple[int, Any]:
        runtime = Runtime.build(cli.settings())
        try:
            transport = httpx.ASGITransport(app=create_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://cli.test") as client:
                response = await client.request(method, path, json=body, headers=auth(key))
            return response.status_code, response.json()
        finally:
            await runtime.close()

    return asyncio.run(go())


def authenticates(cli: Cli, key: str) -> bool:
    """Whether the server would accept ``key``, asked through the runtime's authenticator."""

    async def go() -> bool:
        runtime = Runtime.build(cli.settings())
        try:
            return await runtime.authenticator.authenticate(key) is not None
        finally:
            await runtime.close()

    return asyncio.run(go())


def execute(url: str, *statements: str) -> None:
    """Run raw SQL in one write transaction (to damage a schema on purpose)."""

    async def go() -> None:
        database = Database(url)
        try:
            async with database.write() as conn:
                for statement in statements:
                    await conn.execute(text(statement))
        finally:
            await database.dispose()

    asyncio.run(go())
