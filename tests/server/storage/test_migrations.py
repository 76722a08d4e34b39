"""Upgrading a database that holds the previous release's data keeps every row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import MetaData, insert, select

from gatepass_server.app import create_app
from gatepass_server.config import Settings
from gatepass_server.domain.clock import FixedClock
from gatepass_server.domain.sealing import encode_master_key
from gatepass_server.runtime import Runtime
from gatepass_server.storage.database import Database
from gatepass_server.storage.schema import SchemaState, check_drift, schema_status, upgrade
from gatepass_server.storage.tables import (
    instance_keys,
    instances,
    m2m_tokens,
    machine_scopes,
    machine_secret_keys,
    machines,
    metadata,
)
from helpers import auth

if TYPE_CHECKING:
    from pathlib import Path

T0 = 1_754_938_436_732
MASTER_KEY = encode_master_key(bytes(range(32)))


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


# -- the previous release (0002: tokens and signing keys, before the change log) -----------


def _runtime(url: str, data_dir: Path, bootstrap_key: str) -> Runtime:
    data_dir.mkdir(exist_ok=True)
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        master_key=MASTER_KEY,
        bootstrap_secret_key=bootstrap_key,
    ).validated()
    return Runtime.build(settings, clock=FixedClock(T0))


def _client(runtime: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://gatepass.test"
    )


async def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text)
    body: dict[str, Any] = response.json()
    return body


async def _release_data(donor_url: str, data_dir: Path, sk: str) -> dict[str, Any]:
    """Data of every kind, made through the API on a database of its own.

    Machines, keys (one rotated), a scope, opaque and JWT tokens (one revoked) and signing
    keys; returns what a client was told.
    """
    runtime = _runtime(donor_url, data_dir, sk)
    await runtime.prepare()
    await runtime.start()
    try:
        async with _client(runtime) as http:
            receiver = await _ok(
                await http.post("/v1/machines", json={"name": "receiver"}, headers=auth(sk))
            )
            caller = await _ok(
                await http.post(
                    "/v1/machines",
                    json={"name": "caller", "scoped_machines": [receiver["id"]]},
                    headers=auth(sk),
                ),
            )
            rotated = await _ok(
                await http.post(
                    f"/v1/machines/{receiver['id']}/secret_key/rotate",
                    json={"previous_token_ttl": 0},
                    headers=auth(sk),
                ),
            )
            mint = {"Authorization": f"Bearer {caller['secret_key']}"}
            opaque = await _ok(
                await http.post("/v1/m2m_tokens", json={"token_format": "opaque"}, headers=mint),
                201,
            )
            jwt = await _ok(
                await http.post("/v1/m2m_tokens", json={"token_format": "jwt"}, headers=mint), 201
            )
            revoked = await _ok(
                await http.post("/v1/m2m_tokens", json={"token_format": "opaque"}, headers=mint),
                201,
            )
            await _ok(await http.post(f"/v1/m2m_tokens/{revoked['id']}/revoke", headers=auth(sk)))
    finally:
        await runtime.close()
    return {
        "receiver_key": rotated["secret"],
        "caller_key": caller["secret_key"],
        "opaque": opaque,
        "jwt": jwt,
        "revoked": revoked,
    }


async def _copy_into_0002(donor_url: str, database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Insert the donor's rows into the 0002 schema with SQL on the tables as they were then.

    The tables are reflected from the database at 0002, so only columns of that release are
    written, whatever the current ``tables.py`` says.
    """
    donor = Database(donor_url)
    old = MetaData()
    try:
        async with database.read(deadline=None) as conn:
            await conn.run_sync(old.reflect)
        names = [t.name for t in old.sorted_tables if t.name != "alembic_version"]
        assert "changes" not in names  # 0002 had no change log
        copied: dict[str, list[tuple[Any, ...]]] = {}
        async with donor.read() as source:
            rows = {
                name: [
                    dict(r._mapping)
                    for r in (
                        await source.execute(
                            select(*(metadata.tables[name].c[c.name] for c in old.tables[name].c))
                        )
                    ).all()
                ]
                for name in names
            }
        async with database.write() as conn:
            for name in names:
                if rows[name]:
                    await conn.execute(insert(old.tables[name]), rows[name])
                copied[name] = sorted(tuple(row.values()) for row in rows[name])
        return copied
    finally:
        await donor.dispose()


async def _rows_of(database: Database, names: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    old = {name: metadata.tables[name] for name in names}
    async with database.read() as conn:
        return {
            name: sorted(tuple(r) for r in (await conn.execute(select(table))).all())
            for name, table in old.items()
        }


async def test_upgrade_from_the_previous_release_keeps_data_and_serves_it(
    empty_database_url: str, tmp_path: Path, bootstrap_key: str
) -> None:
    """0002 with data → head: rows intact, no drift, and the server works on them.

    A token minted before the upgrade still verifies (opaque and JWT, signed by a key
    stored at 0002), the revoked one stays refused, the rotated key still authenticates,
    and a revoke after the upgrade is in effect at once.
    """
    donor_url = f"sqlite:///{tmp_path / 'donor.db'}"
    told = await _release_data(donor_url, tmp_path / "donor", bootstrap_key)
    database = Database(empty_database_url)
    try:
        assert (await upgrade(database, "0002")).current == "0002"
        copied = await _copy_into_0002(donor_url, database)
        assert copied["m2m_tokens"]
        assert copied["signing_keys"]
        assert len(copied["machine_secret_keys"]) == 3  # the receiver's rotated key too
        assert (await upgrade(database)).state is SchemaState.CURRENT
        assert await _rows_of(database, list(copied)) == copied
        assert await check_drift(database) == []
    finally:
        await database.dispose()

    runtime = _runtime(empty_database_url, tmp_path / "upgraded", bootstrap_key)
    await runtime.prepare()
    await runtime.start()
    try:
        async with _client(runtime) as http:

            async def verify(token: str) -> int:
                response = await http.post(
                    "/v1/m2m_tokens/verify",
                    json={"token": token},
                    headers=auth(told["receiver_key"]),
                )
                return response.status_code

            assert await verify(told["opaque"]["token"]) == 200
            assert await verify(told["jwt"]["token"]) == 200
            assert await verify(told["revoked"]["token"]) == 404
            for token in (told["opaque"], told["jwt"]):
                await _ok(
                    await http.post(
                        f"/v1/m2m_tokens/{token['id']}/revoke", headers=auth(bootstrap_key)
                    ),
                )
                assert await verify(token["token"]) == 404
            minted = await _ok(
                await http.post(
                    "/v1/m2m_tokens",
                    json={"token_format": "jwt"},
                    headers=auth(told["caller_key"]),
                ),
                201,
            )
            assert await verify(minted["token"]) == 200
    finally:
        await runtime.close()
