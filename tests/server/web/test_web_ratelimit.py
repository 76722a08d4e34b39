"""Rate limits over HTTP (SECURITY.md principle 10): key-auth failures and verify misses.

Each test runs a runtime of its own with small limits and a manual monotonic clock, and
talks to it from chosen client addresses (``httpx.ASGITransport(client=…)``), so sources
are told apart exactly as ASGI reports them. One test keeps the default limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from web_support import SQLITE_ONLY, create_machine
from web_tokens_support import make_pair, mint, verify

from gatepass_server.app import create_app
from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.runtime import Runtime
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from gatepass_server.config import Settings
    from gatepass_server.domain.clock import FixedClock

pytestmark = SQLITE_ONLY  # NOTE: the limiter is in memory; the storage backend is no factor

LIMIT: Final = 4
"""Per minute and burst, both limits: one failure per 15 s after the first four."""
INTERVAL: Final = 15
ATTACKER: Final = "203.0.113.7"
OTHER: Final = "198.51.100.9"


class ManualMonotonic:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        """The current reading."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now += seconds


@pytest.fixture
def monotonic() -> ManualMonotonic:
    """The limiters' clock."""
    return ManualMonotonic()


@pytest.fixture
async def limited(
    settings: Settings, clock: FixedClock, monotonic: ManualMonotonic
) -> AsyncIterator[Runtime]:
    """A started runtime whose limits are :data:`LIMIT`, timed by ``monotonic``."""
    small = dataclasses.replace(settings, auth_failure_limit=LIMIT, verify_miss_limit=LIMIT)
    built = Runtime.build(small, clock=clock, monotonic=monotonic)
    await built.prepare()
    await built.start()
    yield built
    await built.close()


@pytest.fixture
async def clients(
    limited: Runtime,
) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """A client per source address, all talking to the one limited app."""
    app = create_app(limited)
    made: dict[str, httpx.AsyncClient] = {}
    async with contextlib.AsyncExitStack() as stack:

        def client_from(address: str) -> httpx.AsyncClient:
            if address not in made:
                transport = httpx.ASGITransport(app=app, client=(address, 40000))
                made[address] = httpx.AsyncClient(
                    transport=transport, base_url="http://gatepass.test"
                )
                stack.push_async_callback(made[address].aclose)
            return made[address]

        yield client_from


def _bad_key() -> str:
    """A well-formed ``sk_`` key nobody issued: a guess."""
    return generate_secret(SecretKind.INSTANCE_TEST)


async def _assert_limited(
    response: httpx.Response, runtime: Runtime, before: Any, *, retry_after: int
) -> dict[str, Any]:
    """A 429 in the Clerk envelope, with Retry-After, that changed nothing."""
    error = await assert_rejected(
        response, status=429, code="too_many_requests", runtime=runtime, before=before
    )
    assert response.headers["retry-after"] == str(retry_after)
    return error


async def _fail_auth(client: httpx.AsyncClient, times: int, key: str | None = None) -> None:
    """``times`` key-authentication failures, each still answered 401."""
    for _ in range(times):
        response = await client.get("/v1/machines", headers=auth(key or _bad_key()))
        assert response.status_code == 401, response.text


async def test_a_source_over_the_auth_failure_limit_gets_429(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient]
) -> None:
    """LIMIT bad keys are 401s; the next request is 429 + Retry-After, storage untouched."""
    attacker = clients(ATTACKER)
    await _fail_auth(attacker, LIMIT)
    before = await storage_snapshot(limited)
    response = await attacker.get("/v1/machines", headers=auth(_bad_key()))
    await _assert_limited(response, limited, before, retry_after=INTERVAL)
    assert (
        limited.metrics.registry.get_sample_value(
            "gatepass_rate_limited_total", {"reason": "auth_failures"}
        )
        == 1.0
    )


async def test_a_blocked_source_is_refused_even_with_the_right_key(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient], sk: str
) -> None:
    """While blocked, a right key gets the very 429 a wrong one gets, on every route."""
    attacker = clients(ATTACKER)
    await _fail_auth(attacker, LIMIT)
    before = await storage_snapshot(limited)
    wrong = await attacker.get("/v1/machines", headers=auth(_bad_key()))
    right = await attacker.get("/v1/machines", headers=auth(sk))
    for response in (wrong, right):
        await _assert_limited(response, limited, before, retry_after=INTERVAL)
    assert wrong.json()["errors"] == right.json()["errors"], "a right guess must not show"
    assert {k: v for k, v in wrong.headers.items() if k != "x-request-id"} == {
        k: v for k, v in right.headers.items() if k != "x-request-id"
    }
    created = await attacker.post("/v1/machines", json={"name": "x"}, headers=auth(sk))
    await _assert_limited(created, limited, before, retry_after=INTERVAL)
    verified = await attacker.post("/m2m_tokens/verify", json={"token": "x"}, headers=auth(sk))
    await _assert_limited(verified, limited, before, retry_after=INTERVAL)
    minted = await attacker.post("/v1/m2m_tokens", json={}, headers=auth(sk))
    await _assert_limited(minted, limited, before, retry_after=INTERVAL)
    routed = await attacker.get(f"/v1/machines/{'mch_' + '0' * 27}", headers=auth(sk))
    await _assert_limited(routed, limited, before, retry_after=INTERVAL)  # the router's path


async def test_another_source_is_not_affected(
    clients: Callable[[str], httpx.AsyncClient], sk: str
) -> None:
    """A blocked source does not block anybody else: other addresses authenticate."""
    await _fail_auth(clients(ATTACKER), LIMIT)
    response = await clients(OTHER).get("/v1/machines", headers=auth(sk))
    assert response.status_code == 200, response.text
    await _fail_auth(clients(OTHER), 1)


async def test_one_key_failing_from_many_sources_is_blocked_everywhere(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient]
) -> None:
    """The per-key bucket: a key that failed LIMIT times is refused from a new source too."""
    retired = _bad_key()
    for i in range(LIMIT):
        await _fail_auth(clients(f"192.0.2.{i}"), 1, retired)
    fresh = clients(OTHER)
    before = await storage_snapshot(limited)
    response = await fresh.get("/v1/machines", headers=auth(retired))
    await _assert_limited(response, limited, before, retry_after=INTERVAL)
    await _fail_auth(fresh, 1)  # the same new source with another key: counted, not blocked


async def test_missing_and_malformed_credentials_count_as_failures(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient], sk: str
) -> None:
    """Every 401 counts: no header, another scheme, a non-key string, a token as a key."""
    attacker = clients(ATTACKER)
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": f"Basic {sk}"},
        auth("not-a-key"),
        auth("mt_" + "a" * 38),
    ]
    assert len(attempts) == LIMIT
    for headers in attempts:
        response = await attacker.get("/v1/machines", headers=headers)
        assert response.status_code == 401, response.text
    before = await storage_snapshot(limited)
    response = await attacker.get("/v1/machines", headers=auth(sk))
    await _assert_limited(response, limited, before, retry_after=INTERVAL)


async def test_successes_are_never_counted(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient], sk: str
) -> None:
    """Many good requests leave the budget whole: LIMIT failures still come after them."""
    client = clients(ATTACKER)
    for _ in range(10 * LIMIT):
        assert (await client.get("/v1/machines", headers=auth(sk))).status_code == 200
    assert not limited.auth_failures.blocked
    await _fail_auth(client, LIMIT)
    assert (await client.get("/v1/machines", headers=auth(sk))).status_code == 429


async def test_a_block_ends_after_retry_after_on_the_monotonic_clock(
    clients: Callable[[str], httpx.AsyncClient],
    monotonic: ManualMonotonic,
    clock: FixedClock,
    sk: str,
) -> None:
    """Waiting Retry-After buys one more try; the injected wall clock moves nothing."""
    attacker = clients(ATTACKER)
    await _fail_auth(attacker, LIMIT)
    clock.advance(3_600_000)  # the wall clock: no effect on the limiter
    assert (await attacker.get("/v1/machines", headers=auth(sk))).status_code == 429
    monotonic.advance(INTERVAL - 1)
    response = await attacker.get("/v1/machines", headers=auth(sk))
    assert response.headers["retry-after"] == "1"
    monotonic.advance(1)
    assert (await attacker.get("/v1/machines", headers=auth(sk))).status_code == 200
    await _fail_auth(attacker, 1)
    response = await attacker.get("/v1/machines", headers=auth(sk))
    assert (response.status_code, response.headers["retry-after"]) == (429, str(INTERVAL))
    monotonic.advance(60)
    assert (await attacker.get("/v1/machines", headers=auth(sk))).status_code == 200
    await _fail_auth(attacker, LIMIT)


async def test_a_valid_sk_key_on_the_mint_route_is_not_an_auth_failure(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient], sk: str
) -> None:
    """An sk_ key where a machine key is needed is 401 by contract, but no guess: not counted."""
    client = clients(ATTACKER)
    for _ in range(2 * LIMIT):
        response = await client.post("/v1/m2m_tokens", json={}, headers=auth(sk))
        assert response.status_code == 401, response.text
    assert not limited.auth_failures.blocked


@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_a_caller_over_the_verify_miss_limit_gets_429_before_any_lookup(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient], sk: str, prefix: str
) -> None:
    """LIMIT misses are 404s; then a valid token is 429 too; the caller's other routes work."""
    client = clients(ATTACKER)
    pair = await make_pair(client, sk)
    token = (await mint(client, pair.caller_key))["token"]
    for _ in range(LIMIT):
        response = await verify(client, pair.receiver_key, "mt_" + "b" * 38, prefix=prefix)
        assert response.status_code == 404, response.text
    before = await storage_snapshot(limited)
    response = await verify(client, pair.receiver_key, token, prefix=prefix)
    await _assert_limited(response, limited, before, retry_after=INTERVAL)
    assert (
        limited.metrics.registry.get_sample_value(
            "gatepass_rate_limited_total", {"reason": "verify_misses"}
        )
        == 1.0
    )
    listed = await client.get(
        "/v1/m2m_tokens", params={"subject": pair.caller["id"]}, headers=auth(sk)
    )
    assert listed.status_code == 200, "a verify-miss block is for verify only"


async def test_verify_misses_are_counted_per_source_and_per_caller(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient], sk: str
) -> None:
    """The missing caller is refused from anywhere, its source for anyone; others verify."""
    setup = clients("192.0.2.1")
    pair = await make_pair(setup, sk)
    token = (await mint(setup, pair.caller_key))["token"]
    for _ in range(LIMIT):
        assert (await verify(clients(ATTACKER), pair.receiver_key, "junk")).status_code == 404
    before = await storage_snapshot(limited)
    for address, key in ((OTHER, pair.receiver_key), (ATTACKER, sk)):
        response = await verify(clients(address), key, token)
        await _assert_limited(response, limited, before, retry_after=INTERVAL)
    response = await verify(clients(OTHER), sk, token)
    assert response.status_code == 200, response.text


async def test_malformed_tokens_are_misses_and_hits_are_not(
    limited: Runtime, clients: Callable[[str], httpx.AsyncClient], sk: str
) -> None:
    """Hits leave the budget whole; a too-long or non-ASCII token is a miss like any other."""
    client = clients(ATTACKER)
    pair = await make_pair(client, sk)
    token = (await mint(client, pair.caller_key))["token"]
    for _ in range(10 * LIMIT):
        assert (await verify(client, pair.receiver_key, token)).status_code == 200
    assert not limited.verify_misses.blocked
    for presented in ("x" * 10_000, "mt_é", "mt_\x00", "a.b.c"):
        assert (await verify(client, pair.receiver_key, presented)).status_code == 404
    assert (await verify(client, pair.receiver_key, token)).status_code == 429
    assert (await client.get("/v1/machines", headers=auth(sk))).status_code == 200


async def test_limits_of_zero_turn_limiting_off(
    settings: Settings, clock: FixedClock, sk: str
) -> None:
    """With both limits at 0 (the benchmark's and the fuzzers' setting) nothing is refused."""
    off = dataclasses.replace(settings, auth_failure_limit=0, verify_miss_limit=0)
    runtime = Runtime.build(off, clock=clock)
    await runtime.prepare()
    try:
        transport = httpx.ASGITransport(app=create_app(runtime), client=(ATTACKER, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            machine = await create_machine(client, sk, name="m")
            await _fail_auth(client, 3 * LIMIT)
            for _ in range(3 * LIMIT):
                response = await verify(client, machine["secret_key"], "junk")
                assert response.status_code == 404
            assert (await client.get("/v1/machines", headers=auth(sk))).status_code == 200
    finally:
        await runtime.close()


async def test_the_default_limit_is_sixty_failures_per_source(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """The shared fixtures keep the defaults: the 61st failure from one address is 429."""
    assert runtime.settings.auth_failure_limit == 60
    assert runtime.settings.verify_miss_limit == 600
    await _fail_auth(client, 60)
    before = await storage_snapshot(runtime)
    response = await client.get("/v1/machines", headers=auth(sk))
    await _assert_limited(response, runtime, before, retry_after=1)
