"""Redis down, flapping, or its pub/sub connection killed, with ``GATEPASS_REDIS_URL`` set.

Two nodes share a private PostgreSQL and a private Redis. Redis carries wake-ups only, so
while it is gone a change still reaches the other node by polling the change log within
the documented bound ("within 1 s plus the time to read the log"); once it is back, the
nodes subscribe again and changes travel through pub/sub. Nothing answers 500, and a
failed key authentication is still a 401 (the rate limiter counts in process meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

import pytest
import redis.asyncio
from faults_support import eventually, http_client, mint, report, seed, started_runtime, verify

from gatepass_server.storage.changes import NOTIFY_CHANNEL
from helpers import auth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import httpx
    from faults_support import PrivateRedis, Seeded

    from gatepass_server.config import Settings
    from gatepass_server.runtime import Runtime

pytestmark = pytest.mark.postgres  # a PostgreSQL cluster of its own (conftest.py)

PROPAGATION_BOUND_SECONDS: Final = 2.0
"""README: one poll period (1 s) plus the read; margin for a loaded machine."""
RESUBSCRIBE_TIMEOUT_SECONDS: Final = 20.0
"""The channel reconnects with backoff up to 5 s; the health check notices a dead socket."""
PUBLISH_RESUMES_SECONDS: Final = 15.0
"""A writer pauses publishing for 5 s after a failure; then its wake-ups flow again."""
FLAPS: Final = 5
BAD_KEY: Final = "sk_test_" + "A" * 38


async def _refused_within(client: httpx.AsyncClient, key: str, token: str) -> float:
    async def refused() -> bool:
        response = await verify(client, key, token)
        assert response.status_code in {200, 404}, response.text
        return response.status_code == 404

    return await eventually(refused, timeout=PROPAGATION_BOUND_SECONDS, interval=0.005)


async def _revoke(client: httpx.AsyncClient, sk: str, token_id: str) -> None:
    response = await client.post(f"/v1/m2m_tokens/{token_id}/revoke", headers=auth(sk))
    assert response.status_code == 200, response.text


async def _push(runtime: Runtime, *, connected: bool) -> float:
    async def state() -> bool:
        return runtime.changes.push_connected is connected

    return await eventually(state, timeout=RESUBSCRIBE_TIMEOUT_SECONDS)


async def _failed_auth_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/machines", headers=auth(BAD_KEY))
    assert response.status_code == 401, response.text


@contextlib.asynccontextmanager
async def _two_nodes(
    settings: Callable[..., Settings], database_url: str, redis_url: str, bootstrap_key: str
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient, Runtime, httpx.AsyncClient, Seeded]]:
    async with (
        started_runtime(settings(database_url, redis_url, name="a")) as node_a,
        started_runtime(settings(database_url, redis_url, name="b")) as node_b,
        http_client(node_a) as a,
        http_client(node_b) as b,
    ):
        await _push(node_a, connected=True)
        await _push(node_b, connected=True)
        yield node_a, a, node_b, b, await seed(a, bootstrap_key)


async def _warm(b: httpx.AsyncClient, seeded: Seeded, tokens: list[dict[str, Any]]) -> None:
    for token in tokens:
        assert (await verify(b, seeded.receiver_key, token["token"])).status_code == 200


async def _pushed_within(
    redis_url: str, a: httpx.AsyncClient, seeded: Seeded, tokens: list[dict[str, Any]]
) -> float:
    """Revoke tokens on A until a wake-up is seen on the channel; seconds until it was."""
    listener = redis.asyncio.Redis.from_url(redis_url, socket_connect_timeout=2)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    started = time.monotonic()
    try:
        await pubsub.subscribe(NOTIFY_CHANNEL)
        deadline = started + PUBLISH_RESUMES_SECONDS
        for token in tokens:
            await _revoke(a, seeded.sk, token["id"])
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                break
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
    pytest.fail("no wake-up was published after Redis came back")


async def test_redis_down_changes_reach_the_other_node_by_polling_then_by_pubsub(
    private_postgres_url: str,
    private_redis: PrivateRedis,
    fault_settings: Callable[..., Settings],
    bootstrap_key: str,
) -> None:
    """Redis killed: writes succeed, B refuses a revoked token within 2 s; then it resumes.

    Once Redis is back, B subscribes again and the writer's wake-ups are published again.
    """
    async with _two_nodes(
        fault_settings, private_postgres_url, private_redis.url, bootstrap_key
    ) as (_node_a, a, node_b, b, seeded):
        tokens = [await mint(a, seeded.caller_key, "opaque") for _ in range(20)]
        await _warm(b, seeded, tokens[:2])

        private_redis.kill()
        await _failed_auth_is_401(a)
        await _revoke(a, seeded.sk, tokens[0]["id"])  # its publish fails: not a 500
        polled = await _refused_within(b, seeded.receiver_key, tokens[0]["token"])
        lost = await _push(node_b, connected=False)
        await mint(a, seeded.caller_key, "jwt")
        await _revoke(a, seeded.sk, tokens[1]["id"])
        polled_fast = await _refused_within(b, seeded.receiver_key, tokens[1]["token"])
        await _failed_auth_is_401(b)

        private_redis.start()
        back = await _push(node_b, connected=True)
        await _warm(b, seeded, tokens[2:3])
        pushed = await _pushed_within(private_redis.url, a, seeded, tokens[2:])
        assert (await verify(b, seeded.receiver_key, tokens[2]["token"])).status_code == 404
    report(
        "redis down",
        revoke_seen_on_b_s=polled,
        b_noticed_loss_s=lost,
        revoke_seen_on_b_polling_fast_s=polled_fast,
        b_resubscribed_s=back,
        publish_resumed_s=pushed,
    )


async def test_redis_pubsub_connection_killed_resubscribes(
    private_postgres_url: str,
    private_redis: PrivateRedis,
    fault_settings: Callable[..., Settings],
    bootstrap_key: str,
) -> None:
    """``CLIENT KILL TYPE pubsub``: changes keep arriving, and both nodes subscribe again."""
    async with _two_nodes(
        fault_settings, private_postgres_url, private_redis.url, bootstrap_key
    ) as (node_a, a, node_b, b, seeded):
        tokens = [await mint(a, seeded.caller_key, "opaque") for _ in range(3)]
        await _warm(b, seeded, tokens)
        admin = redis.asyncio.Redis.from_url(private_redis.url, socket_connect_timeout=2)
        try:
            killed = await admin.client_kill_filter(_type="pubsub")
            assert killed >= 2  # one subscription per node
            await _revoke(a, seeded.sk, tokens[0]["id"])
            during = await _refused_within(b, seeded.receiver_key, tokens[0]["token"])

            async def resubscribed() -> bool:
                numsub = dict(await admin.pubsub_numsub(NOTIFY_CHANNEL))
                return int(numsub.get(NOTIFY_CHANNEL.encode(), 0)) >= 2

            back = await eventually(resubscribed, timeout=RESUBSCRIBE_TIMEOUT_SECONDS)
        finally:
            await admin.aclose()
        await _push(node_a, connected=True)
        await _push(node_b, connected=True)
        await _revoke(a, seeded.sk, tokens[1]["id"])
        after = await _refused_within(b, seeded.receiver_key, tokens[1]["token"])
        assert (await verify(b, seeded.receiver_key, tokens[2]["token"])).status_code == 200
    report(
        "redis pubsub killed",
        revoke_seen_on_b_s=during,
        resubscribed_s=back,
        revoke_seen_on_b_after_s=after,
    )


@pytest.mark.long
async def test_redis_flapping_never_delays_a_change_past_the_bound(
    private_postgres_url: str,
    private_redis: PrivateRedis,
    fault_settings: Callable[..., Settings],
    bootstrap_key: str,
) -> None:
    """Redis stopped and started five times: every revoke reaches B within 2 s, no 500."""
    async with _two_nodes(
        fault_settings, private_postgres_url, private_redis.url, bootstrap_key
    ) as (_node_a, a, node_b, b, seeded):
        tokens = [await mint(a, seeded.caller_key, "opaque") for _ in range(2 * FLAPS)]
        await _warm(b, seeded, tokens)
        seen: list[float] = []
        for flap in range(FLAPS):
            private_redis.stop()
            await _revoke(a, seeded.sk, tokens[2 * flap]["id"])
            seen.append(await _refused_within(b, seeded.receiver_key, tokens[2 * flap]["token"]))
            await _failed_auth_is_401(a)
            private_redis.start()
            await asyncio.sleep(0.2 * flap)  # sometimes before B resubscribed, sometimes after
            await _revoke(a, seeded.sk, tokens[2 * flap + 1]["id"])
            seen.append(
                await _refused_within(b, seeded.receiver_key, tokens[2 * flap + 1]["token"])
            )
        await _push(node_b, connected=True)
    report("redis flapping", worst_s=max(seen), flaps=FLAPS)
