"""The token lifecycle end to end through the app: mint, verify, revoke, on both backends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jwt

from helpers import assert_rejected, auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


async def _machines(client: httpx.AsyncClient, sk: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A receiver ``api`` and a caller ``email`` scoped to it."""
    api = (await client.post("/v1/machines", json={"name": "API"}, headers=auth(sk))).json()
    email = (
        await client.post(
            "/v1/machines",
            json={"name": "Email", "scoped_machines": [api["id"]], "default_token_ttl": 60},
            headers=auth(sk),
        )
    ).json()
    return api, email


async def test_opaque_token_lifecycle(
    client: httpx.AsyncClient,
    sk: str,
    clock: FixedClock,
) -> None:
    """Minted by the caller, verified by the receiver and the admin, dead once revoked."""
    api, email = await _machines(client, sk)
    created = await client.post("/m2m_tokens", json={}, headers=auth(email["secret_key"]))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["subject"] == email["id"]
    assert body["scopes"] == [api["id"]]
    assert body["expiration"] == body["created_at"] + 60_000
    assert body["token"].startswith("mt_")
    assert body["token"] != body["id"]
    token = body["token"]
    for key, field in ((api["secret_key"], "token"), (sk, "secret")):
        verified = await client.post(
            "/v1/m2m_tokens/verify", json={field: token}, headers=auth(key)
        )
        assert verified.status_code == 200, verified.text
        assert "token" not in verified.json()
        assert token not in verified.text
    clock.advance(1)
    revoked = await client.post(
        f"/v1/m2m_tokens/{body['id']}/revoke",
        json={"revocation_reason": "leaked"},
        headers=auth(sk),
    )
    assert revoked.json()["revoked"] is True
    again = await client.post(
        f"/v1/m2m_tokens/{body['id']}/revoke",
        json={"revocation_reason": "other"},
        headers=auth(sk),
    )
    assert again.json()["revocation_reason"] == "leaked"
    dead = await client.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(sk))
    await assert_rejected(dead, status=404, code="token_invalid", not_echoed=[token])


async def test_jwt_token_verifies_locally_and_through_the_api(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
) -> None:
    """A JWT carries the contract's claims, verifies with the JWKS and via the API."""
    api, email = await _machines(client, sk)
    created = await client.post(
        "/v1/m2m_tokens",
        json={"token_format": "jwt", "claims": {"role": "mailer"}},
        headers=auth(email["secret_key"]),
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    keys = (await client.get("/v1/jwks", headers=auth(sk))).json()["keys"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": keys[0]["kid"]}
    claims = jwt.decode(
        token,
        jwt.PyJWK(keys[0]),
        algorithms=["RS256"],
        audience=api["id"],
        options={"verify_exp": False},
    )
    assert claims["sub"] == email["id"]
    assert claims["jti"] == created.json()["id"]
    assert claims["scopes"] == api["id"]
    assert claims["role"] == "mailer"
    verified = await client.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(sk))
    assert verified.status_code == 200, verified.text
    await client.post(f"/v1/m2m_tokens/{claims['jti']}/revoke", json={}, headers=auth(sk))
    dead = await client.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(sk))
    await assert_rejected(dead, status=404, code="token_invalid")
    del runtime


async def test_removed_scope_stops_machine_verification(client: httpx.AsyncClient, sk: str) -> None:
    """Stricter than Clerk: once the scope is removed the receiver's verify fails."""
    api, email = await _machines(client, sk)
    token = (await client.post("/m2m_tokens", json={}, headers=auth(email["secret_key"]))).json()[
        "token"
    ]
    await client.delete(f"/v1/machines/{email['id']}/scopes/{api['id']}", headers=auth(sk))
    response = await client.post(
        "/m2m_tokens/verify",
        json={"token": token},
        headers=auth(api["secret_key"]),
    )
    await assert_rejected(response, status=404, code="token_invalid")
