"""Schema versions: apply migrations, report drift, refuse unknown schemas."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text

from gatepass_server.errors import SchemaMismatch
from gatepass_server.storage.tables import metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from gatepass_server.storage.database import Database

__all__ = [
    "SchemaState",
    "SchemaStatus",
    "check_drift",
    "ensure_current",
    "schema_status",
    "upgrade",
]


class SchemaState(Enum):
    """Where a database stands relative to this release's migrations."""

    EMPTY = "empty"
    BEHIND = "behind"
    CURRENT = "current"
    UNKNOWN = "unknown"  # a revision this release does not know: a newer release wrote it


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """The database's revision, this release's head, and what that means."""

    state: SchemaState
    current: str | None
    head: str


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "gatepass_server.storage:migrations")
    return config


def _head() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise SchemaMismatch("no migrations are packaged")
    return head


def _status(connection: Connection) -> SchemaStatus:
    head = _head()
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        return SchemaStatus(SchemaState.EMPTY, None, head)
    if current == head:
        return SchemaStatus(SchemaState.CURRENT, current, head)
    try:
        ScriptDirectory.from_config(_config()).get_revision(current)
    except CommandError:
        return SchemaStatus(SchemaState.UNKNOWN, current, head)
    return SchemaStatus(SchemaState.BEHIND, current, head)


# An arbitrary constant: the advisory lock that queues migrations of one PostgreSQL database.
_MIGRATION_LOCK: Final = 0x6761746570617373  # "gatepass"


def _upgrade(connection: Connection, revision: str = "head") -> SchemaStatus:
    if connection.dialect.name == "postgresql":
        # NOTE: two nodes starting at once on an empty database both ran CREATE TABLE and
        # all but one failed with IntegrityError. The lock is held until this transaction
        # commits, so the others then find the schema current. (SQLite: BEGIN IMMEDIATE.)
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    status = _status(connection)
    if status.state is SchemaState.UNKNOWN:
        raise _newer_schema(status)
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    return _status(connection)


def _newer_schema(status: SchemaStatus) -> SchemaMismatch:
    return SchemaMismatch(
        f"the database schema is at revision {status.current}, which this release does not "
        f"know (its newest is {status.head}); upgrade gatepass-server",
    )


async def schema_status(database: Database) -> SchemaStatus:
    """Report the database's schema state without changing it."""
    async with database.read(deadline=None) as conn:
        return await conn.run_sync(_status)


async def upgrade(database: Database, revision: str = "head") -> SchemaStatus:
    """Migrate up to ``revision`` (default: all); refuse a schema newer than this release."""
    async with database.write(deadline=None) as conn:
        return await conn.run_sync(_upgrade, revision)


async def ensure_current(database: Database) -> None:
    """Raise :class:`SchemaMismatch` unless the schema is exactly this release's."""
    status = await schema_status(database)
    if status.state is SchemaState.UNKNOWN:
        raise _newer_schema(status)
    if status.state is not SchemaState.CURRENT:
        raise SchemaMismatch(
            f"the database schema is {status.state.value} (at {status.current}, need "
            f"{status.head}); run `gatepass-server db upgrade`",
        )


async def check_drift(database: Database) -> list[Any]:
    """Return the differences between the migrated database and ``tables.py``.

    Empty means the migrations produce exactly the schema the code uses.
    """
    await ensure_current(database)

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with database.read(deadline=None) as conn:
        return await conn.run_sync(compare)
