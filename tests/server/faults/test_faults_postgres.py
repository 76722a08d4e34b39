"""PostgreSQL refused, hung, restarted: Gatepass fails closed with 503 and recovers by itself.

Each test runs Gatepass in process on a private PostgreSQL cluster (conftest.py), breaks the
cluster by its PID, and checks what the server answers during the fault (status, code,
``Retry-After``, how long it takes) and that it answers normally again once the fault ends,
without a restart of Gatepass (SECURITY.md, "Faults the test suite must survive").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import pytest
from faults_support import (
    assert_unavailable,
    eventually,
    http_client,
    mint,
    report,
    seed,
    started_runtime,
    timed,
    verify,
)

from gatepass_server.services.cache import STALE_AFTER_SECONDS
from gatepass_server.services.changes import POLL_SECONDS
from gatepass_server.storage.database import READ_DEADLINE_SECONDS, WRITE_DEADLINE_SECONDS
from gatepass_server.storage.notify import PostgresChannel
from helpers import auth

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx
    from faults_support import PrivatePostgres, Seeded

    from gatepass_server.config import Settings
    from gatepass_server.runtime import Runtime

pytestmark = pytest.mark.postgres  # a PostgreSQL cluster of its own (conftest.py)

GRACEFUL_CLOSE_SECONDS: Final = 2.0
"""SQLAlchemy waits this long for a pooled asyncpg connection's graceful close when it
drops one whose pre-ping was cut short by the deadline (once per pooled connection)."""
SLACK_SECONDS: Final = 2.0
"""Scheduling margin on a loaded 2-core machine."""
STALE_WINDOW_SECONDS: Final = STALE_AFTER_SECONDS + POLL_SECONDS + SLACK_SECONDS
"""A warm cache answers for at most STALE_AFTER after its last read of the log, which was at
most one poll before the fault began."""
PROPAGATION_BOUND_SECONDS: Final = 2.0
PROBES: Final = 200


async def _writes_unavailable(client: httpx.AsyncClient, seeded: Seeded) -> None:
    """Mint, revoke and create-machine all answer 503 + Retry-After."""
    assert_unavailable(
        await client.post(
            "/v1/m2m_tokens", json={"token_format": "opaque"}, headers=auth(seeded.caller_key)
        ),
    )
    assert_unavailable(
        await client.post(f"/v1/m2m_tokens/{seeded.token_id}/revoke", headers=auth(seeded.sk)),
    )
    assert_unavailable(
        await client.post("/v1/machines", json={"name": "during"}, headers=auth(seeded.sk)),
    )


async def _warm_cache_until_refusal(
    client: httpx.AsyncClient, seeded: Seeded, fault_began: float
) -> float:
    """Verify a cached token until it answers 503; never a 200 after that. Seconds taken."""
    first_refusal: float | None = None
    for _ in range(PROBES):
        response = await verify(client, seeded.receiver_key, seeded.token)
        now = time.monotonic()
        if response.status_code == 200:
            assert first_refusal is None, "a warm cache answered 200 after it had refused"
            assert now - fault_began < STALE_WINDOW_SECONDS, "the cache vouched past its bound"
        else:
            assert_unavailable(response)
            if first_refusal is None:
                first_refusal = now - fault_began
            elif now - fault_began > first_refusal + 1.0:
                break
        if now - fault_began > STALE_WINDOW_SECONDS + 2 * READ_DEADLINE_SECONDS + SLACK_SECONDS:
            break
        await asyncio.sleep(0.1)
    assert first_refusal is not None, "the warm cache never stopped answering"
    return first_refusal


async def _recovered(client: httpx.AsyncClient, seeded: Seeded, token: str) -> float:
    """Wait until a verify from storage answers 200 again; the seconds it took."""

    async def verified() -> bool:
        response = await verify(client, seeded.receiver_key, token)
        assert response.status_code in {200, 503}, response.text
        return response.status_code == 200

    return await eventually(verified)


async def test_postgres_refused_answers_503_and_recovers_without_restart(
    private_postgres: PrivatePostgres,
    private_postgres_url: str,
    fault_settings: Callable[..., Settings],
    bootstrap_key: str,
) -> None:
    """Stopped PostgreSQL: writes, uncached verifies and /readyz 503; the cache ends in 3 s."""
    async with (
        started_runtime(fault_settings(private_postgres_url)) as runtime,
        http_client(runtime) as client,
    ):
        seeded = await seed(client, bootstrap_key)
        assert (await verify(client, seeded.receiver_key, seeded.token)).status_code == 200
        cold = await mint(client, seeded.caller_key, "opaque")  # never verified: not cached

        private_postgres.stop()
        stopped = time.monotonic()
        response, uncached_seconds = await timed(verify(client, seeded.receiver_key, cold["token"]))
        assert_unavailable(response)
        await _writes_unavailable(client, seeded)
        assert_unavailable(await client.get("/readyz"))
        assert (await client.get("/healthz")).status_code == 200
        warm_seconds = await _warm_cache_until_refusal(client, seeded, stopped)

        private_postgres.start()
        recovery = await _recovered(client, seeded, cold["token"])
        assert (await client.get("/readyz")).status_code == 200
        revoked = await client.post(
            f"/v1/m2m_tokens/{seeded.token_id}/revoke", headers=auth(bootstrap_key)
        )
        assert revoked.status_code == 200, revoked.text
        assert (await verify(client, seeded.receiver_key, seeded.token)).status_code == 404
        await mint(client, seeded.caller_key, "jwt")
    report(
        "postgres refused",
        uncached_verify_503_s=uncached_seconds,
        warm_cache_first_503_s=warm_seconds,
        recovered_s=recovery,
    )


async def test_postgres_hung_answers_503_within_the_deadline_and_recovers(
    private_postgres: PrivatePostgres,
    private_postgres_url: str,
    fault_settings: Callable[..., Settings],
    bootstrap_key: str,
) -> None:
    """SIGSTOPped PostgreSQL: every request answers 503 within its deadline, not after 30 s."""
    async with (
        started_runtime(fault_settings(private_postgres_url)) as runtime,
        http_client(runtime) as client,
    ):
        seeded = await seed(client, bootstrap_key)
        assert (await verify(client, seeded.receiver_key, seeded.token)).status_code == 200
        cold = await mint(client, seeded.caller_key, "opaque")

        stopped_pids = private_postgres.hang()
        hung = time.monotonic()
        assert len(stopped_pids) > 1  # the postmaster and its backends
        warm_seconds = await _warm_cache_until_refusal(client, seeded, hung)
        response, verify_seconds = await timed(verify(client, seeded.receiver_key, cold["token"]))
        assert_unavailable(response)
        # NOTE: the bound is the point of this test: a hung database must not hold a verify
        # for the driver's 30 s command timeout.
        assert verify_seconds < READ_DEADLINE_SECONDS + GRACEFUL_CLOSE_SECONDS + SLACK_SECONDS
        response, second_verify_seconds = await timed(
            verify(client, seeded.receiver_key, cold["token"])
        )
        assert_unavailable(response)
        response, mint_seconds = await timed(
            client.post(
                "/v1/m2m_tokens", json={"token_format": "opaque"}, headers=auth(seeded.caller_key)
            ),
        )
        assert_unavailable(response)
        assert mint_seconds < WRITE_DEADLINE_SECONDS + GRACEFUL_CLOSE_SECONDS + SLACK_SECONDS
        response, readyz_seconds = await timed(client.get("/readyz"))
        assert_unavailable(response)

        private_postgres.resume()
        recovery = await _recovered(client, seeded, cold["token"])
        revoked = await client.post(
            f"/v1/m2m_tokens/{seeded.token_id}/revoke", headers=auth(bootstrap_key)
        )
        assert revoked.status_code == 200, revoked.text
        assert (await verify(client, seeded.receiver_key, seeded.token)).status_code == 404
    report(
        "postgres hung",
        first_verify_503_s=verify_seconds,
        next_verify_503_s=second_verify_seconds,
        mint_503_s=mint_seconds,
        readyz_503_s=readyz_seconds,
        warm_cache_first_503_s=warm_seconds,
        recovered_s=recovery,
    )


async def _refused_within(
    client: httpx.AsyncClient, key: str, token: str, bound: float = PROPAGATION_BOUND_SECONDS
) -> float:
    """Seconds until ``token`` stops verifying with ``key``; fails past ``bound``."""

    async def refused() -> bool:
        response = await verify(client, key, token)
        assert response.status_code in {200, 404}, response.text
        return response.status_code == 404

    return await eventually(refused, timeout=bound, interval=0.005)


async def test_postgres_restart_loses_no_request_and_the_second_node_catches_up(
    private_postgres: PrivatePostgres,
    private_postgres_url: str,
    fault_settings: Callable[..., Settings],
    bootstrap_key: str,
) -> None:
    """Fast shutdown and start on the same port: no 5xx after it, LISTEN reconnects.

    Node A writes, node B has every token cached. After the restart every pooled
    connection is dead: pre-ping replaces them, so the first requests answer normally; a
    revocation made on A right after the restart still reaches B within the bound, and B's
    LISTEN connection comes back (push, not polling, carries the next one).
    """
    async with (
        started_runtime(fault_settings(private_postgres_url, name="a")) as node_a,
        started_runtime(fault_settings(private_postgres_url, name="b")) as node_b,
        http_client(node_a) as a,
        http_client(node_b) as b,
    ):
        seeded = await seed(a, bootstrap_key)
        others = [await mint(a, seeded.caller_key, "opaque") for _ in range(3)]
        for token in [seeded.token, *(t["token"] for t in others[:2])]:
            assert (await verify(b, seeded.receiver_key, token)).status_code == 200
        await eventually(lambda: _true(node_b.changes.push_connected))
        listens = _count_listen_sessions(node_b)

        private_postgres.restart()
        # First requests after the restart, on pooled connections that are all dead.
        response, first_seconds = await timed(verify(b, seeded.receiver_key, others[2]["token"]))
        assert response.status_code == 200, response.text
        minted = await a.post(
            "/v1/m2m_tokens", json={"token_format": "jwt"}, headers=auth(seeded.caller_key)
        )
        assert minted.status_code == 201, minted.text

        revoked = await a.post(
            f"/v1/m2m_tokens/{others[0]['id']}/revoke", headers=auth(bootstrap_key)
        )
        assert revoked.status_code == 200, revoked.text
        after_restart = await _refused_within(b, seeded.receiver_key, others[0]["token"])

        relisten = await eventually(
            lambda: _true(listens.count >= 1 and node_b.changes.push_connected)
        )
        revoked = await a.post(
            f"/v1/m2m_tokens/{others[1]['id']}/revoke", headers=auth(bootstrap_key)
        )
        assert revoked.status_code == 200, revoked.text
        pushed = await _refused_within(b, seeded.receiver_key, others[1]["token"])
        assert (await verify(b, seeded.receiver_key, seeded.token)).status_code == 200
    report(
        "postgres restarted",
        first_verify_s=first_seconds,
        revoke_seen_on_b_s=after_restart,
        listen_back_s=relisten,
        revoke_pushed_to_b_s=pushed,
    )


async def _true(value: bool) -> bool:
    return value


@dataclass
class _Sessions:
    count: int = 0


def _count_listen_sessions(runtime: Runtime) -> _Sessions:
    """Count the LISTEN sessions the node's channel opens from now on (a reconnect is one)."""
    channel = runtime.changes._channel
    assert isinstance(channel, PostgresChannel)
    sessions = _Sessions()
    opened = channel._session

    async def counted(wake: Callable[[], None], up: Callable[[], None]) -> None:
        def connected() -> None:
            sessions.count += 1
            up()

        await opened(wake, connected)

    channel._session = counted  # type: ignore[method-assign]
    return sessions
