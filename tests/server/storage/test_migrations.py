"""Upgrading a database that holds the previous release's data keeps every row."""

from __future__ import annotations

from sqlalchemy import insert, select

from gatepass_server.storage.database import Database
from gatepass_server.storage.schema import SchemaState, check_drift, schema_status, upgrade
from gatepass_server.storage.tables import (
    instance_keys,
    instances,
    m2m_tokens,
    machine_scopes,
    machine_secret_keys,
    machines,
)

T0 = 1_754_938_436_732


async def _populate_first_release(database: Database) -> None:
    """Rows as release 0001 wrote them: an instance, two machines, a scope, a key."""
    async with database.write() as conn:
        await conn.execute(
            insert(instances).values(id="ins_" + "a" * 27, name="default", created_at=T0)
        )
        await conn.execute(
            insert(instance_keys).values(
                digest=b"\x01" * 32,
                instance_id="ins_" + "a" * 27,
                hint="sk_test_…abcd",
                created_at=T0,
                expires_at=None,
            ),
        )
        for suffix in ("b", "c"):
            await conn.execute(
                insert(machines).values(
                    id="mch_" + suffix * 27,
                    instance_id="ins_" + "a" * 27,
                    name=f"machine {suffix}",
                    name_search=f"machine {suffix}",
                    default_token_ttl=3600,
                    created_at=T0,
                    updated_at=T0,
                ),
            )
        await conn.execute(
            insert(machine_scopes).values(
                from_machine_id="mch_" + "b" * 27,
                to_machine_id="mch_" + "c" * 27,
                created_at=T0,
            ),
        )
        await conn.execute(
            insert(machine_secret_keys).values(
                digest=b"\x02" * 32,
                machine_id="mch_" + "b" * 27,
                sealed=b"sealed",
                created_at=T0,
                expires_at=None,
            ),
        )


async def _rows(database: Database) -> dict[str, list[tuple[object, ...]]]:
    async with database.read() as conn:
        return {
            table.name: sorted(tuple(r) for r in (await conn.execute(select(table))).all())
            for table in (instances, instance_keys, machines, machine_scopes, machine_secret_keys)
        }


async def test_upgrade_from_the_first_release_keeps_data(empty_database_url: str) -> None:
    """0001 with data → head: same rows, no drift, and the new tables start empty."""
    database = Database(empty_database_url)
    try:
        first = await upgrade(database, "0001")
        assert first.current == "0001"
        assert first.state is SchemaState.BEHIND
        await _populate_first_release(database)
        before = await _rows(database)
        assert (await upgrade(database)).state is SchemaState.CURRENT
        assert await _rows(database) == before
        assert await check_drift(database) == []
        assert (await schema_status(database)).state is SchemaState.CURRENT
        async with database.read() as conn:
            assert (await conn.execute(select(m2m_tokens))).all() == []
    finally:
        await database.dispose()
