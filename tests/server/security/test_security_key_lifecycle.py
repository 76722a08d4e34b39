"""Attack class: key lifecycle edges with the injected clock.

A rotated-out key dies exactly when its grace ends, a deleted machine's keys die at once, a
retired instance key is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from security_support import create_machine, refused

from helpers import auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


async def _assert_alive(client: httpx.AsyncClient, runtime: Runtime, key: str) -> None:
    """A live ``ak_`` key authenticates, so an sk-only route answers 403, not 401."""
    await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        headers=auth(key),
        status=403,
        code="authorization_invalid",
        not_echoed=[key],
    )


async def _assert_dead(client: httpx.AsyncClient, runtime: Runtime, key: str) -> None:
    await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        headers=auth(key),
        status=401,
        code="clerk_key_invalid",
        not_echoed=[key],
    )


async def test_rotated_machine_key_dies_exactly_at_grace_end(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, clock: FixedClock
) -> None:
    """The old key works at grace end minus 1 ms and is refused from grace end on."""
    machine = await create_machine(client, sk)
    start = clock.now_ms()
    await client.post(
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 30},
        headers=auth(sk),
    )
    clock.set(start + 29_999)
    await _assert_alive(client, runtime, machine["secret_key"])
    clock.set(start + 30_000)
    await _assert_dead(client, runtime, machine["secret_key"])


async def test_deleted_machine_keys_die_at_once_even_in_grace(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Deleting a machine kills its current key and any key still in rotation grace."""
    machine = await create_machine(client, sk)
    rotated = await client.post(
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 28_800},
        headers=auth(sk),
    )
    keys = [machine["secret_key"], rotated.json()["secret"]]
    await client.delete(f"/v1/machines/{machine['id']}", headers=auth(sk))
    for key in keys:
        await _assert_dead(client, runtime, key)


async def test_deleted_machine_key_is_not_revived_by_a_namesake(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A new machine with the same name gets a new id and key; the old key stays dead."""
    old = await create_machine(client, sk, name="worker")
    await client.delete(f"/v1/machines/{old['id']}", headers=auth(sk))
    new = await create_machine(client, sk, name="worker")
    assert new["id"] != old["id"]
    assert new["secret_key"] != old["secret_key"]
    await _assert_dead(client, runtime, old["secret_key"])
    await _assert_alive(client, runtime, new["secret_key"])


async def test_retired_instance_key_dies_at_grace_end(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, clock: FixedClock
) -> None:
    """After an instance key rotation the old ``sk_`` works until its grace ends, then 401."""
    instance = await runtime.instances.default()
    start = clock.now_ms()
    new_sk = await runtime.instances.rotate_key(instance.id, grace_seconds=10)
    clock.set(start + 9_999)
    assert (await client.get("/v1/machines", headers=auth(sk))).status_code == 200
    clock.set(start + 10_000)
    await _assert_dead(client, runtime, sk)
    assert (await client.get("/v1/machines", headers=auth(new_sk))).status_code == 200


async def test_rotation_grace_old_key_mints_until_grace_end(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, clock: FixedClock
) -> None:
    """In its grace the old key still mints; from grace end on, minting with it is 401.

    The tokens it minted live on to their own expiry: a rotation is not a revocation.
    """
    receiver = await create_machine(client, sk, name="receiver")
    machine = await create_machine(client, sk, scoped_machines=[receiver["id"]])
    old = machine["secret_key"]
    start = clock.now_ms()
    rotated = await client.post(
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 60},
        headers=auth(sk),
    )
    new = rotated.json()["secret"]
    clock.set(start + 59_999)
    in_grace = await client.post(
        "/v1/m2m_tokens", json={"seconds_until_expiration": 600}, headers=auth(old)
    )
    assert in_grace.status_code == 201, in_grace.text
    clock.set(start + 60_000)
    await refused(
        client,
        runtime,
        "POST",
        "/v1/m2m_tokens",
        json={},
        headers=auth(old),
        status=401,
        code="machine_secret_key_invalid",
        not_echoed=[new],
    )
    assert (await client.post("/v1/m2m_tokens", json={}, headers=auth(new))).status_code == 201
    verified = await client.post(
        "/v1/m2m_tokens/verify",
        json={"token": in_grace.json()["token"]},
        headers=auth(receiver["secret_key"]),
    )
    assert verified.status_code == 200, verified.text


async def test_rotation_with_zero_grace_kills_the_cached_old_key_at_once(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A key just used (so cached) stops at once when rotated with ``previous_token_ttl`` 0."""
    machine = await create_machine(client, sk)
    await _assert_alive(client, runtime, machine["secret_key"])  # now in the key cache
    await client.post(
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 0},
        headers=auth(sk),
    )
    await _assert_dead(client, runtime, machine["secret_key"])
