"""Routes 6-7: reading and rotating a machine's secret key, with the rotation grace."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from web_support import (
    PREFIXES,
    SQLITE_ONLY,
    UNKNOWN_MACHINE_ID,
    assert_api_headers,
    create_machine,
)

from gatepass_server.domain.keys import SecretKind, is_well_formed
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


async def _key_works(client: httpx.AsyncClient, key: str) -> bool:
    """Whether an ``ak_`` key authenticates: 403 on an sk-only route if so, 401 if not."""
    response = await client.get("/v1/machines", headers=auth(key))
    if response.status_code == 403:
        await assert_rejected(response, status=403, code="authorization_invalid")
        return True
    await assert_rejected(response, status=401, code="clerk_key_invalid", not_echoed=[key])
    return False


async def _rotate(
    client: httpx.AsyncClient, sk: str, machine_id: str, grace: Any, prefix: str = "/v1"
) -> httpx.Response:
    return await client.post(
        f"{prefix}/machines/{machine_id}/secret_key/rotate",
        json={"previous_token_ttl": grace},
        headers=auth(sk),
    )


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_get_secret_key_returns_current_key(
    client: httpx.AsyncClient, sk: str, prefix: str
) -> None:
    """``GET …/secret_key`` is ``{"object":"machine_secret_key","secret":…}``, the live key."""
    created = await create_machine(client, sk)
    response = await client.get(f"{prefix}/machines/{created['id']}/secret_key", headers=auth(sk))
    assert response.status_code == 200
    assert_api_headers(response)
    assert response.json() == {"object": "machine_secret_key", "secret": created["secret_key"]}


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_rotate_returns_new_key(client: httpx.AsyncClient, sk: str, prefix: str) -> None:
    """Rotate answers 200 with a new well-formed key, which ``GET …/secret_key`` now returns."""
    created = await create_machine(client, sk)
    response = await _rotate(client, sk, created["id"], 0, prefix)
    assert response.status_code == 200
    assert_api_headers(response)
    body = response.json()
    assert set(body) == {"object", "secret"}
    assert body["object"] == "machine_secret_key"
    assert body["secret"] != created["secret_key"]
    assert is_well_formed(body["secret"], SecretKind.MACHINE)
    got = await client.get(f"/v1/machines/{created['id']}/secret_key", headers=auth(sk))
    assert got.json()["secret"] == body["secret"]
    assert await _key_works(client, body["secret"])


async def test_rotate_zero_kills_old_key_at_once(client: httpx.AsyncClient, sk: str) -> None:
    """With ``previous_token_ttl`` 0 the old key stops working immediately."""
    created = await create_machine(client, sk)
    assert await _key_works(client, created["secret_key"])
    await _rotate(client, sk, created["id"], 0)
    assert not await _key_works(client, created["secret_key"])


@pytest.mark.parametrize("grace", [1, 60, 28_800])
async def test_rotate_grace_ends_exactly_at_boundary(
    client: httpx.AsyncClient, sk: str, clock: FixedClock, grace: int
) -> None:
    """The old key works until just before now + grace, and not at that instant."""
    created = await create_machine(client, sk)
    rotated_at = clock.now_ms()
    new_key = (await _rotate(client, sk, created["id"], grace)).json()["secret"]
    assert await _key_works(client, created["secret_key"])
    clock.set(rotated_at + grace * 1000 - 1)
    assert await _key_works(client, created["secret_key"])
    clock.set(rotated_at + grace * 1000)
    assert not await _key_works(client, created["secret_key"])
    assert await _key_works(client, new_key)


async def test_rotate_twice_shortens_earlier_grace(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """A second rotation with less grace ends every older key's grace no later than its own."""
    created = await create_machine(client, sk)
    second = (await _rotate(client, sk, created["id"], 3600)).json()["secret"]
    clock.advance(1000)
    third = (await _rotate(client, sk, created["id"], 0)).json()["secret"]
    assert not await _key_works(client, created["secret_key"])
    assert not await _key_works(client, second)
    assert await _key_works(client, third)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "form_param_missing"),
        ({"previous_token_ttl": None}, "form_param_missing"),
        ({"previous_token_ttl": -1}, "form_param_value_invalid"),
        ({"previous_token_ttl": 28_801}, "form_param_value_invalid"),
        ({"previous_token_ttl": 1.5}, "form_param_format_invalid"),
        ({"previous_token_ttl": "60"}, "form_param_format_invalid"),
        ({"previous_token_ttl": True}, "form_param_format_invalid"),
        ({"previous_token_ttl": 2**63}, "form_param_format_invalid"),
    ],
)
async def test_rotate_rejects_bad_previous_token_ttl(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, body: dict[str, Any], code: str
) -> None:
    """``previous_token_ttl`` is a required integer 0..28800; the key stays as it was."""
    created = await create_machine(client, sk)
    before = await storage_snapshot(runtime)
    response = await client.post(
        f"/v1/machines/{created['id']}/secret_key/rotate", json=body, headers=auth(sk)
    )
    await assert_rejected(
        response,
        status=422,
        code=code,
        param_name="previous_token_ttl",
        runtime=runtime,
        before=before,
        not_echoed=[created["secret_key"]],
    )


async def test_rotate_accepts_float_grace(client: httpx.AsyncClient, sk: str) -> None:
    """An integral float such as ``60.0`` is accepted as the grace."""
    created = await create_machine(client, sk)
    response = await _rotate(client, sk, created["id"], 60.0)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "secret_key", None),
        ("POST", "secret_key/rotate", {"previous_token_ttl": 0}),
    ],
)
async def test_secret_key_routes_unknown_machine_is_404(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
) -> None:
    """Reading or rotating the key of a machine that does not exist is 404."""
    before = await storage_snapshot(runtime)
    response = await client.request(
        method, f"/v1/machines/{UNKNOWN_MACHINE_ID}/{suffix}", json=body, headers=auth(sk)
    )
    await assert_rejected(
        response, status=404, code="resource_not_found", runtime=runtime, before=before
    )
