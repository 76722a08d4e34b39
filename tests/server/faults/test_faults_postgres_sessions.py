"""PostgreSQL sessions terminated mid-transaction, while writes and verifies run.

An admin connection of its own calls ``pg_terminate_backend`` on every other session of the
database over and over (pooled connections, the one inside a transaction, the LISTEN
connection). Gatepass may answer 503 then, never 500; afterwards storage holds every write
that was acknowledged, and no write half-applied.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import asyncpg
import pytest
from faults_support import eventually, http_client, mint, report, seed, started_runtime, verify
from sqlalchemy import select, text

from gatepass_server.errors import ServiceUnavailable
from gatepass_server.storage.database import Database
from gatepass_server.storage.tables import (
    changes,
    m2m_tokens,
    machine_scopes,
    machine_secret_keys,
    machines,
)
from helpers import auth

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx
    from faults_support import PrivatePostgres, Seeded

    from gatepass_server.config import Settings

pytestmark = pytest.mark.postgres  # a PostgreSQL cluster of its own (conftest.py)

LOAD_SECONDS: Final = 3.0
MAX_OPERATIONS: Final = 400
"""Per worker: the time bound ends the load first."""
KILL_EVERY_SECONDS: Final = 0.15
REVOCABLE_TOKENS: Final = 30
TERMINATE_OTHERS: Final = """
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = $1 AND pid <> pg_backend_pid()
"""


@dataclass
class History:
    """What the load was told: acknowledged writes and every verify's outcome."""

    minted: list[str] = field(default_factory=list)
    revoked_at: dict[str, float] = field(default_factory=dict)
    """Token id → when its revoke was acknowledged (monotonic)."""
    machines: list[str] = field(default_factory=list)
    verifies: list[tuple[float, str, int]] = field(default_factory=list)
    """(when the verify started, token id, status)."""
    statuses: dict[int, int] = field(default_factory=dict)
    terminated: int = 0

    def count(self, response: httpx.Response) -> int:
        """Tally a response (any status but these is a failure); its status."""
        status = response.status_code
        assert status in {200, 201, 404, 503}, (response.request.url, status, response.text)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return status


async def _until(deadline: float, step: Callable[[int], Any]) -> None:
    for index in range(MAX_OPERATIONS):
        if time.monotonic() >= deadline:
            return
        await step(index)


async def _load(
    client: httpx.AsyncClient,
    seeded: Seeded,
    tokens: list[dict[str, Any]],
    history: History,
    deadline: float,
) -> None:
    async def mint_one(_index: int) -> None:
        response = await client.post(
            "/v1/m2m_tokens", json={"token_format": "opaque"}, headers=auth(seeded.caller_key)
        )
        if history.count(response) == 201:
            history.minted.append(response.json()["id"])

    async def revoke_one(index: int) -> None:
        if index >= len(tokens):
            await asyncio.sleep(0.01)
            return
        token_id = tokens[index]["id"]
        response = await client.post(f"/v1/m2m_tokens/{token_id}/revoke", headers=auth(seeded.sk))
        if history.count(response) == 200:
            history.revoked_at.setdefault(token_id, time.monotonic())

    async def create_machine(index: int) -> None:
        response = await client.post(
            "/v1/machines",
            json={"name": f"load-{index}", "scoped_machines": [seeded.receiver_id]},
            headers=auth(seeded.sk),
        )
        if history.count(response) == 200:
            history.machines.append(response.json()["id"])

    async def verify_one(index: int) -> None:
        token = tokens[index % len(tokens)]
        started = time.monotonic()
        response = await verify(client, seeded.receiver_key, token["token"])
        history.verifies.append((started, token["id"], history.count(response)))

    await asyncio.gather(
        *(_until(deadline, step) for step in (mint_one, revoke_one, create_machine, verify_one)),
    )


async def _terminate_sessions(
    admin_url: str, database: str, history: History, deadline: float
) -> None:
    admin = await asyncpg.connect(admin_url, timeout=5)
    try:
        while time.monotonic() < deadline:
            history.terminated += int(await admin.fetchval(TERMINATE_OTHERS, database, timeout=5))
            await asyncio.sleep(KILL_EVERY_SECONDS)
    finally:
        await admin.close()


async def _stored(url: str) -> dict[str, list[Any]]:
    database = Database(url)
    try:
        async with database.read() as conn:
            return {
                "tokens": list(
                    (await conn.execute(select(m2m_tokens.c.id, m2m_tokens.c.revoked_at))).all()
                ),
                "machines": list(
                    (await conn.execute(select(machines.c.id, machines.c.name))).all()
                ),
                "scopes": list(
                    (await conn.execute(select(machine_scopes.c.from_machine_id))).all()
                ),
                "keys": list((await conn.execute(select(machine_secret_keys.c.machine_id))).all()),
                "revocations": list(
                    (
                        await conn.execute(
                            select(changes.c.subject).where(changes.c.kind == "token_revoked")
                        )
                    ).all()
                ),
            }
    finally:
        await database.dispose()


async def test_sessions_terminated_mid_transaction_lose_no_acknowledged_write(
    private_postgres: PrivatePostgres,
    private_postgres_url: str,
    fault_settings: Callable[..., Settings],
    bootstrap_key: str,
) -> None:
    """pg_terminate_backend every 150 ms under load: no 500, nothing acknowledged lost.

    Also: a revoke, once acknowledged, is never followed by a 200 verify of that token on
    this node, and no write is half-applied (a machine without its key or scope, a revoked
    token without its change-log entry).

    Regression: this answered 500 within the first kills. A session killed while a
    statement was being sent surfaced as a bare driver ``Error`` without SQLSTATE (the 57P01
    was further down the cause chain), the connection went back to the pool unusable
    ("another operation is in progress"), and ``Database.write`` read ``conn.info`` of the
    invalidated connection in a ``finally``, checking out a new one whose error hid the first.
    """
    async with (
        started_runtime(fault_settings(private_postgres_url)) as runtime,
        http_client(runtime) as client,
    ):
        seeded = await seed(client, bootstrap_key)
        tokens = [await mint(client, seeded.caller_key, "opaque") for _ in range(REVOCABLE_TOKENS)]
        await eventually(lambda: _true(runtime.changes.push_connected))
        history = History()
        deadline = time.monotonic() + LOAD_SECONDS
        database = private_postgres_url.rsplit("/", 1)[1]
        await asyncio.gather(
            _load(client, seeded, tokens, history, deadline),
            _terminate_sessions(private_postgres.url(), database, history, deadline),
        )

        # Recovery: the node answers from storage again and LISTEN is back.
        async def answers() -> bool:
            response = await client.get("/readyz")
            return response.status_code == 200

        await eventually(answers)
        await eventually(lambda: _true(runtime.changes.push_connected))
        fresh = await mint(client, seeded.caller_key, "opaque")
        assert (await verify(client, seeded.receiver_key, fresh["token"])).status_code == 200
        for token_id in history.revoked_at:
            token = next(t for t in tokens if t["id"] == token_id)
            assert (await verify(client, seeded.receiver_key, token["token"])).status_code == 404

    assert history.terminated > 0
    assert history.statuses.get(503, 0) + history.statuses.get(200, 0) > 0
    for started, token_id, status in history.verifies:
        acknowledged = history.revoked_at.get(token_id)
        if acknowledged is not None and started > acknowledged:
            assert status != 200, f"{token_id} verified after its revoke was acknowledged"

    stored = await _stored(private_postgres_url)
    token_rows = dict(stored["tokens"])
    assert set(history.minted) <= set(token_rows), "an acknowledged mint was lost"
    for token_id in history.revoked_at:
        assert token_rows[token_id] is not None, "an acknowledged revoke was lost"
    revocations = {row[0] for row in stored["revocations"]}
    assert {i for i, at in token_rows.items() if at is not None} == revocations, "half a revoke"
    load_machines = {mid for mid, name in stored["machines"] if name.startswith("load-")}
    assert set(history.machines) <= load_machines, "an acknowledged machine was lost"
    scoped = {row[0] for row in stored["scopes"]}
    keyed = {row[0] for row in stored["keys"]}
    assert load_machines <= scoped, "a machine stored without its scope"
    assert load_machines <= keyed, "a machine stored without its key"
    report(
        "postgres sessions terminated",
        terminated=history.terminated,
        ok=history.statuses.get(200, 0) + history.statuses.get(201, 0),
        refused_404=history.statuses.get(404, 0),
        unavailable_503=history.statuses.get(503, 0),
        minted=len(history.minted),
        revoked=len(history.revoked_at),
        machines=len(history.machines),
    )


async def _write_on_a_killed_session(database: Database, admin: asyncpg.Connection) -> None:
    async with database.write() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid, timeout=5)
        await asyncio.sleep(0.3)  # the server has closed the socket by now
        await conn.execute(text("SELECT 1"))


async def test_a_session_terminated_inside_a_transaction_is_a_503_and_leaves_no_bad_connection(
    private_postgres: PrivatePostgres, private_postgres_url: str
) -> None:
    """A write whose session was killed before its next statement is a 503, three times.

    Every connection of the pool works afterwards: none dead is handed out again. (The load
    test above is the regression for the 500s: a session killed while a statement was being
    sent gave an error without SQLSTATE, and left a connection asyncpg could not use.)
    """
    database = Database(private_postgres_url, pool_size=2)
    admin = await asyncpg.connect(private_postgres.url(), timeout=5)
    try:
        for _ in range(3):
            with pytest.raises(ServiceUnavailable) as raised:
                await _write_on_a_killed_session(database, admin)
            assert raised.value.headers == {"Retry-After": "1"}
        results = []
        for _ in range(5):
            async with database.read() as conn:
                results.append((await conn.execute(text("SELECT 1"))).scalar_one())
        assert results == [1] * 5
    finally:
        await admin.close()
        await database.dispose()


async def _true(value: bool) -> bool:
    return value
