"""Schema versions on real SQLite and PostgreSQL: upgrade, status, drift, refusal of the unknown.

Tests that change the schema run on a throwaway database of their own (a fresh SQLite file,
or a PostgreSQL database created and dropped here) so the shared one stays intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from gatepass_server.app import create_app
from gatepass_server.config import Settings
from gatepass_server.domain.sealing import encode_master_key
from gatepass_server.errors import SchemaMismatch
from gatepass_server.runtime import Runtime
from gatepass_server.storage.database import Database
from gatepass_server.storage.schema import (
    SchemaState,
    check_drift,
    ensure_current,
    schema_status,
    upgrade,
)
from gatepass_server.storage.tables import instances, metadata

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from starlette.types import ASGIApp, Message

FUTURE = "9999_future"


@pytest.fixture
async def fresh(empty_database_url: str) -> AsyncIterator[Database]:
    """A ``Database`` over the empty throwaway database."""
    database = Database(empty_database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def migrated(fresh: Database) -> Database:
    """The throwaway database at this release's schema."""
    await upgrade(fresh)
    return fresh


async def _raw(database: Database, statement: str) -> None:
    async with database.write() as conn:
        await conn.execute(text(statement))


async def _table_names(database: Database) -> set[str]:
    async with database.read() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _drive_lifespan(app: ASGIApp) -> list[Message]:
    """Run the ASGI lifespan protocol (startup, then shutdown); return what the app sent."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    with contextlib.suppress(SchemaMismatch):  # Starlette sends startup.failed, then re-raises
        await app(scope, receive, send)
    return sent


def _runtime(url: str, tmp_path: Path) -> Runtime:
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        master_key=encode_master_key(secrets.token_bytes(32)),
    ).validated()
    return Runtime.build(settings)


# -- status and upgrade -----------------------------------------------------------------


async def test_empty_database_is_reported_and_refused(
    fresh: Database, empty_database_url: str, tmp_path: Path
) -> None:
    """Never migrated: EMPTY, refused with the command that fixes it, and the app won't start."""
    status = await schema_status(fresh)
    assert status.state is SchemaState.EMPTY
    assert status.current is None
    assert status.head
    with pytest.raises(SchemaMismatch, match="db upgrade"):
        await ensure_current(fresh)
    with pytest.raises(SchemaMismatch):
        await check_drift(fresh)
    runtime = _runtime(empty_database_url, tmp_path)
    try:
        sent = await _drive_lifespan(create_app(runtime))
    finally:
        await runtime.close()
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]


async def test_upgrade_makes_the_schema_current_and_is_idempotent(fresh: Database) -> None:
    """Upgrade creates every table and reports CURRENT; repeating it changes nothing, keeps rows."""
    status = await upgrade(fresh)
    assert status.state is SchemaState.CURRENT
    assert status.current == status.head
    assert await schema_status(fresh) == status
    await ensure_current(fresh)
    tables = await _table_names(fresh)
    assert {t.name for t in metadata.sorted_tables} <= tables

    async with fresh.write() as conn:
        await conn.execute(insert(instances).values(id="ins_keep", name="keep", created_at=1))
    for _ in range(2):
        assert await upgrade(fresh) == status
    assert await _table_names(fresh) == tables
    async with fresh.read() as conn:
        assert (await conn.execute(select(instances.c.name))).scalars().all() == ["keep"]
    assert await check_drift(fresh) == []


_UPGRADE_CHILD = """
import asyncio, sys
from gatepass_server.storage.database import Database
from gatepass_server.storage.schema import upgrade

async def main():
    database = Database(sys.argv[1])
    try:
        print((await upgrade(database)).state.value)
    finally:
        await database.dispose()

asyncio.run(main())
"""


async def test_concurrent_upgrades_from_separate_processes(empty_database_url: str) -> None:
    """Three nodes upgrading one empty database at once all start; the schema ends current."""
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _UPGRADE_CHILD,
            empty_database_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = []
    try:
        for child in children:
            output, _ = await asyncio.wait_for(child.communicate(), timeout=60)
            outputs.append((child.returncode, output.decode(errors="replace")))
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert outputs == [(0, "current\n")] * 3, outputs
    database = Database(empty_database_url)
    try:
        assert (await schema_status(database)).state is SchemaState.CURRENT
        assert await check_drift(database) == []
    finally:
        await database.dispose()


# -- drift ------------------------------------------------------------------------------


async def test_no_drift_after_upgrade(database_url: str) -> None:
    """The migrations produce exactly the schema ``tables.py`` describes, on each backend."""
    database = Database(database_url)
    try:
        assert await check_drift(database) == []
    finally:
        await database.dispose()


DRIFTS = [
    ("ALTER TABLE machines ADD COLUMN stray INTEGER", "stray"),
    ("CREATE TABLE stray_table (id INTEGER PRIMARY KEY)", "stray_table"),
    ("DROP INDEX ix_machines_instance_id_name", "ix_machines_instance_id_name"),
    ("CREATE INDEX ix_stray ON machines (name_search)", "ix_stray"),
]


async def test_drift_is_detected(migrated: Database) -> None:
    """A column, table or index that differs from ``tables.py`` shows up in the drift report."""
    for statement, mentions in DRIFTS:
        await _raw(migrated, statement)
        drift = await check_drift(migrated)
        assert mentions in repr(drift), (statement, drift)


# -- a schema from the future -----------------------------------------------------------


async def _stamp_future(database: Database) -> None:
    async with database.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})


async def test_unknown_revision_is_reported_and_refused(migrated: Database) -> None:
    """A newer release's revision is UNKNOWN; ensure_current, upgrade and drift refuse it."""
    await _stamp_future(migrated)
    status = await schema_status(migrated)
    assert status.state is SchemaState.UNKNOWN
    assert status.current == FUTURE
    with pytest.raises(SchemaMismatch, match=FUTURE):
        await ensure_current(migrated)
    with pytest.raises(SchemaMismatch, match="upgrade gatepass-server"):
        await upgrade(migrated)
    with pytest.raises(SchemaMismatch):
        await check_drift(migrated)
    # Refusing changed nothing: the stamp is still the future one.
    assert (await schema_status(migrated)).current == FUTURE


async def test_app_refuses_to_start_on_an_unknown_schema(
    migrated: Database, empty_database_url: str, tmp_path: Path
) -> None:
    """Lifespan reports ``startup.failed`` (never ``complete``); ``prepare`` writes nothing."""
    await _stamp_future(migrated)
    runtime = _runtime(empty_database_url, tmp_path)
    try:
        sent = await _drive_lifespan(create_app(runtime))
        with pytest.raises(SchemaMismatch):
            await runtime.prepare()
    finally:
        await runtime.close()
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert FUTURE in sent[0]["message"]
    async with migrated.read() as conn:
        assert (await conn.execute(select(instances.c.id))).all() == []


async def test_app_starts_on_the_current_schema(
    migrated: Database, empty_database_url: str, tmp_path: Path
) -> None:
    """Control: on the current schema the lifespan completes startup and shutdown."""
    del migrated
    runtime = _runtime(empty_database_url, tmp_path)
    try:
        sent = await _drive_lifespan(create_app(runtime))
    finally:
        await runtime.close()
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- SQLite durability settings -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_pragmas(database_url: str) -> None:
    """Every SQLite connection runs WAL, ``synchronous=FULL``, foreign keys and a busy timeout."""
    database = Database(database_url)
    try:
        for _ in range(2):  # a read and a write connection alike
            async with database.read() as conn:
                assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
                assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
                assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000
            async with database.write() as conn:
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await database.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_enforces_foreign_keys(database_url: str) -> None:
    """A scope row pointing at no machine is refused by the database itself."""
    database = Database(database_url)
    try:
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            async with database.write() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO machine_scopes (from_machine_id, to_machine_id, created_at) "
                        "VALUES ('mch_a', 'mch_b', 1)",
                    ),
                )
    finally:
        await database.dispose()
