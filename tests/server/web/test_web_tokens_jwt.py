"""JWT-format M2M tokens (CONTRACT.md §4): the exact header and payload, JWKS, forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any, Final

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from web_tokens_support import Pair, make_pair, mint, verify

from gatepass_server.domain.jwt import public_jwk
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime

PUBLIC_MEMBERS: Final = frozenset({"kty", "n", "e", "kid", "alg", "use"})
ATTACKER_KEY: Final = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    """A JSON value as a base64url JWS segment."""
    return b64url(json.dumps(value, separators=(",", ":")).encode())


async def jwks(client: httpx.AsyncClient, sk: str) -> list[dict[str, Any]]:
    """GET /v1/jwks with the instance key."""
    response = await client.get("/v1/jwks", headers=auth(sk))
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()["keys"]
    for key in keys:
        assert set(key) == PUBLIC_MEMBERS, key
    return keys


def decode(token: str, keys: list[dict[str, Any]], audience: str) -> dict[str, Any]:
    """Verify with PyJWT against the published JWKS (exp checked by the test, not now)."""
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [k for k in keys if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(key),
        algorithms=["RS256"],
        audience=audience,
        options={"verify_exp": False, "require": ["exp", "iat", "nbf", "jti", "sub"]},
    )
    return claims


async def _jwt(client: httpx.AsyncClient, sk: str, **body: Any) -> tuple[Pair, dict[str, Any]]:
    pair = await make_pair(client, sk, ttl=120)
    return pair, await mint(client, pair.caller_key, token_format="jwt", **body)


async def test_header_is_exactly_alg_typ_kid(client: httpx.AsyncClient, sk: str) -> None:
    """The JOSE header is {"alg":"RS256","typ":"JWT","kid":…} and nothing more."""
    _, created = await _jwt(client, sk)
    keys = await jwks(client, sk)
    header = json.loads(base64.urlsafe_b64decode(created["token"].split(".")[0] + "=="))
    assert header == {"alg": "RS256", "typ": "JWT", "kid": keys[0]["kid"]}


async def test_payload_carries_the_contract_claims(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """Jti sub aud scopes iat nbf exp plus custom claims, verifiable with the JWKS."""
    pair, created = await _jwt(client, sk, claims={"role": "mailer", "tier": 2})
    claims = decode(created["token"], await jwks(client, sk), pair.receiver["id"])
    issued = clock.now_ms() // 1000
    assert claims == {
        "jti": created["id"],
        "sub": pair.caller["id"],
        "aud": [pair.receiver["id"]],
        "scopes": pair.receiver["id"],
        "iat": issued,
        "nbf": issued,
        "exp": created["expiration"] // 1000,
        "role": "mailer",
        "tier": 2,
    }
    assert claims["exp"] - claims["iat"] == 120


async def test_scopes_claim_is_space_separated(client: httpx.AsyncClient, sk: str) -> None:
    """With two scoped machines, aud lists both and scopes joins them with a space."""
    pair = await make_pair(client, sk)
    await client.post(
        f"/v1/machines/{pair.caller['id']}/scopes",
        json={"to_machine_id": pair.bystander["id"]},
        headers=auth(sk),
    )
    created = await mint(client, pair.caller_key, token_format="jwt")
    claims = decode(created["token"], await jwks(client, sk), pair.receiver["id"])
    assert claims["aud"] == created["scopes"]
    assert claims["scopes"] == " ".join(created["scopes"])
    assert len(claims["aud"]) == 2


async def test_jwt_verifies_through_the_api(client: httpx.AsyncClient, sk: str) -> None:
    """The sk and the receiver verify the JWT; the bystander cannot; no secret is echoed."""
    pair, created = await _jwt(client, sk)
    for key in (sk, pair.receiver_key):
        response = await verify(client, key, created["token"], prefix="")
        assert response.status_code == 200, response.text
        assert response.json()["id"] == created["id"]
        assert created["token"] not in response.text
    await assert_rejected(
        await verify(client, pair.bystander_key, created["token"]),
        status=404,
        code="token_invalid",
    )


async def test_jwt_expiry_follows_the_clock(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """A JWT is valid until its record's expiration, then 404 like an opaque token."""
    pair, created = await _jwt(client, sk, seconds_until_expiration=5)
    clock.set(created["expiration"] - 1)
    assert (await verify(client, pair.receiver_key, created["token"])).status_code == 200
    clock.advance(1)
    await assert_rejected(
        await verify(client, pair.receiver_key, created["token"]), status=404, code="token_invalid"
    )


async def test_other_instance_cannot_verify_a_jwt(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, other_sk: str
) -> None:
    """Another instance's sk gets the same 404 for a valid JWT of this instance."""
    _, created = await _jwt(client, sk)
    before = await storage_snapshot(runtime)
    await assert_rejected(
        await verify(client, other_sk, created["token"]),
        status=404,
        code="token_invalid",
        runtime=runtime,
        before=before,
    )


def _forgeries(token: str, public_pem: bytes) -> dict[str, str]:
    """Every JWT attack of SECURITY.md principle 6 built from a genuine token."""
    header_b64, payload_b64, signature = token.split(".")
    header = jwt.get_unverified_header(token)
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    kid = header["kid"]
    attacker_jwk = public_jwk(ATTACKER_KEY.public_key())

    def hs256(head: dict[str, Any]) -> str:
        signing_input = f"{b64url_json(head)}.{b64url_json(payload)}"
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"

    def attacker(extra: dict[str, Any], body: dict[str, Any] | None = None) -> str:
        return jwt.encode(body or payload, ATTACKER_KEY, algorithm="RS256", headers=extra)

    tampered = {**payload, "exp": payload["exp"] + 10_000}
    return {
        "alg-none": f"{b64url_json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{payload_b64}.",
        "alg-none-with-signature": (
            f"{b64url_json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{payload_b64}.{signature}"
        ),
        "hs256-public-key": hs256({"alg": "HS256", "typ": "JWT", "kid": kid}),
        "other-key-same-kid": attacker({"kid": kid}),
        "tampered-payload": f"{header_b64}.{b64url_json(tampered)}.{signature}",
        "tampered-header": f"{b64url_json({**header, 'typ': 'at+jwt'})}.{payload_b64}.{signature}",
        "unknown-kid": attacker({"kid": "not-a-key"}),
        "no-kid": attacker({}),
        "jwk-header": attacker({"kid": attacker_jwk["kid"], "jwk": attacker_jwk}),
        "jwk-header-real-kid": attacker({"kid": kid, "jwk": attacker_jwk}),
        "jku-header": attacker({"kid": kid, "jku": "http://127.0.0.1:1/jwks"}),
        "x5u-header": attacker({"kid": kid, "x5u": "http://127.0.0.1:1/cert"}),
        "no-exp": attacker({"kid": kid}, {k: v for k, v in payload.items() if k != "exp"}),
        "stripped-signature": f"{header_b64}.{payload_b64}.",
        "two-dots-garbage": "a.b.c",
        "four-segments": f"{token}.x",
    }


async def test_forged_jwts_are_all_the_same_404(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """Every forgery of SECURITY.md principle 6 gets one 404 token_invalid, storage unchanged.

    alg none, HS256 with the public key, another key under our kid, tampering, unknown kid,
    jku/x5u/jwk headers, missing exp.
    """
    pair, created = await _jwt(client, sk)
    (key,) = await jwks(client, sk)
    public_pem = jwt.PyJWK(key).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = _forgeries(created["token"], public_pem)
    before = await storage_snapshot(runtime)
    bodies = set()
    for name, token in forged.items():
        for caller in (sk, pair.receiver_key):
            response = await verify(client, caller, token)
            await assert_rejected(response, status=404, code="token_invalid")
            body = response.json()
            body.pop("clerk_trace_id")
            bodies.add(json.dumps(body, sort_keys=True))
            assert response.status_code == 404, name
    assert len(bodies) == 1
    assert await storage_snapshot(runtime) == before
    assert (await verify(client, pair.receiver_key, created["token"])).status_code == 200


async def test_rotation_keeps_old_tokens_valid(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """After rotate, old JWTs still verify (JWKS keeps the old key) and new ones use the new kid."""
    pair, old = await _jwt(client, sk)
    old_kid = jwt.get_unverified_header(old["token"])["kid"]
    instance_id = (await client.get(f"/v1/machines/{pair.caller['id']}", headers=auth(sk))).json()[
        "instance_id"
    ]
    new_kid = await runtime.signing.rotate(instance_id)
    assert new_kid != old_kid
    new = await mint(client, pair.caller_key, token_format="jwt")
    assert jwt.get_unverified_header(new["token"])["kid"] == new_kid
    keys = await jwks(client, sk)
    assert {k["kid"] for k in keys} == {old_kid, new_kid}
    for created in (old, new):
        assert decode(created["token"], keys, pair.receiver["id"])["jti"] == created["id"]
        response = await verify(client, pair.receiver_key, created["token"])
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_reserved_claims_cannot_be_smuggled_into_a_jwt(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """Custom claims shadowing a JWT claim are refused before anything is signed."""
    pair = await make_pair(client, sk)
    for claims in ({"iss": "evil"}, {"aud": ["x"]}, {"jti": "mt_x"}, {"cat": 1}):
        before = await storage_snapshot(runtime)
        response = await client.post(
            "/v1/m2m_tokens",
            json={"token_format": "jwt", "claims": claims},
            headers=auth(pair.caller_key),
        )
        await assert_rejected(
            response,
            status=400,
            code="machine_token_reserved_claim",
            param_name="claims",
            runtime=runtime,
            before=before,
        )
