"""Route 12 (CONTRACT.md §4): revoking tokens, and the revocation a machine delete makes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from web_support import PREFIXES, SQLITE_ONLY
from web_tokens_support import (
    UNKNOWN_TOKEN_ID,
    assert_token,
    case,
    get_token,
    make_pair,
    mint,
    verify,
)

from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


async def _revoke(
    client: httpx.AsyncClient, key: str, token_id: str, body: Any, prefix: str = "/v1"
) -> httpx.Response:
    return await client.post(f"{prefix}/m2m_tokens/{token_id}/revoke", json=body, headers=auth(key))


async def test_revoke_answers_the_revoked_token(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """200 with the full M2MToken: revoked, the reason (or null), updated_at moved."""
    pair = await make_pair(client, sk)
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"revocation_reason": "leaked"}, "leaked"),
        ({}, None),
        ({"revocation_reason": None}, None),
    ]
    for prefix in PREFIXES:
        for body, reason in cases:
            created = await mint(client, pair.caller_key)
            clock.advance(5)
            response = await _revoke(client, sk, created["id"], body, prefix)
            assert response.status_code == 200, response.text
            revoked = response.json()
            assert_token(revoked)
            assert (revoked["revoked"], revoked["revocation_reason"]) == (True, reason)
            assert revoked["updated_at"] == created["created_at"] + 5
            assert created["token"] not in response.text
            await assert_rejected(
                await verify(client, sk, created["token"]), status=404, code="token_invalid"
            )


async def test_revoke_without_body(client: httpx.AsyncClient, sk: str) -> None:
    """No body at all is the same as ``{}``."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    response = await client.post(f"/m2m_tokens/{created['id']}/revoke", headers=auth(sk))
    assert response.status_code == 200, response.text
    assert response.json()["revoked"] is True


async def test_revoke_twice_keeps_the_first_reason(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """A second revoke is 200 and changes nothing: first reason, first updated_at."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    first = (await _revoke(client, sk, created["id"], {"revocation_reason": "one"})).json()
    clock.advance(10)
    second = await _revoke(client, pair.caller_key, created["id"], {"revocation_reason": "two"})
    assert second.status_code == 200, second.text
    assert second.json() == first
    assert (await get_token(client, sk, created["id"]))["revocation_reason"] == "one"


async def test_machine_revokes_its_own_token(client: httpx.AsyncClient, sk: str) -> None:
    """The subject's ak_ key may revoke its token."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    response = await _revoke(client, pair.caller_key, created["id"], {"revocation_reason": "done"})
    assert response.status_code == 200, response.text
    assert response.json()["revocation_reason"] == "done"


async def test_machine_cannot_revoke_another_machines_token(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """Even the receiver in scopes gets 404 for the caller's token; nothing changes."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    for key in (pair.receiver_key, pair.bystander_key):
        before = await storage_snapshot(runtime)
        response = await _revoke(client, key, created["id"], {})
        await assert_rejected(
            response, status=404, code="resource_not_found", runtime=runtime, before=before
        )
    assert (await verify(client, sk, created["token"])).status_code == 200


async def test_other_instance_cannot_revoke(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, other_sk: str
) -> None:
    """Another instance's sk_ key gets 404 and the token stays valid."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    before = await storage_snapshot(runtime)
    response = await _revoke(client, other_sk, created["id"], {"revocation_reason": "x"})
    await assert_rejected(
        response, status=404, code="resource_not_found", runtime=runtime, before=before
    )
    assert (await verify(client, sk, created["token"])).status_code == 200


async def test_jwt_ids_are_revocable(client: httpx.AsyncClient, sk: str) -> None:
    """A JWT's jti (its id) can be revoked; it then no longer verifies."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key, token_format="jwt")
    assert (await verify(client, pair.receiver_key, created["token"])).status_code == 200
    response = await _revoke(client, sk, created["id"], {"revocation_reason": "rotated"})
    assert response.status_code == 200, response.text
    await assert_rejected(
        await verify(client, pair.receiver_key, created["token"]), status=404, code="token_invalid"
    )


@SQLITE_ONLY
async def test_unknown_or_malformed_id_is_404(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """Ids that do not exist or cannot exist are 404 resource_not_found, nothing changed."""
    labels = ["unknown", "uppercase", "short", "machine-id", "nul"]
    for index, token_id in enumerate(
        [UNKNOWN_TOKEN_ID, "mt_" + "A" * 32, "mt_short", "mch_" + "0" * 27, "%00"]
    ):
        with case(labels[index]):
            before = await storage_snapshot(runtime)
            response = await _revoke(client, sk, token_id, {})
            await assert_rejected(
                response, status=404, code="resource_not_found", runtime=runtime, before=before
            )


@SQLITE_ONLY
async def test_bad_revoke_body_is_400(client: httpx.AsyncClient, runtime: Runtime, sk: str) -> None:
    """A reason that is not a storable string, or another field: 400, token untouched."""
    pair = await make_pair(client, sk)
    for body, code in [
        ({"revocation_reason": 5}, "form_param_format_invalid"),
        ({"revocation_reason": "x" * 1001}, "form_param_max_length_exceeded"),
        ({"revocation_reason": "a\x00b"}, "form_param_value_invalid"),
        ({"reason": "x"}, "form_param_unknown"),
        ({"revoked": False}, "form_param_unknown"),
    ]:
        with case((body, code)):
            created = await mint(client, pair.caller_key)
            before = await storage_snapshot(runtime)
            response = await _revoke(client, sk, created["id"], body)
            await assert_rejected(response, status=400, code=code, runtime=runtime, before=before)


async def test_machine_delete_revokes_its_tokens(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """Deleting a machine revokes its opaque and JWT tokens with reason machine_deleted."""
    pair = await make_pair(client, sk)
    opaque = await mint(client, pair.caller_key)
    signed = await mint(client, pair.caller_key, token_format="jwt")
    already = await mint(client, pair.caller_key)
    await _revoke(client, sk, already["id"], {"revocation_reason": "earlier"})
    clock.advance(1)
    deleted = await client.delete(f"/v1/machines/{pair.caller['id']}", headers=auth(sk))
    assert deleted.status_code == 200, deleted.text
    listed = await client.get(
        "/v1/m2m_tokens",
        params={"subject": pair.caller["id"], "revoked": "true"},
        headers=auth(sk),
    )
    reasons = {t["id"]: t["revocation_reason"] for t in listed.json()["m2m_tokens"]}
    assert reasons == {opaque["id"]: "machine_deleted", already["id"]: "earlier"}
    assert (await get_token(client, sk, signed["id"]))["revocation_reason"] == "machine_deleted"
    assert (
        await client.get("/v1/m2m_tokens", params={"subject": pair.caller["id"]}, headers=auth(sk))
    ).json()["total_count"] == 0
    for token in (opaque["token"], signed["token"]):
        await assert_rejected(await verify(client, sk, token), status=404, code="token_invalid")
