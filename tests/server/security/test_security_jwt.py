"""Attack class: JWT attacks on the server's verify endpoint and JWKS routes.

SECURITY.md principle 6: RS256 only, ``kid`` resolved only in the instance's own JWKS,
``jku``/``x5u``/``jwk``/``x5c`` ignored, ``exp`` required, no reserved claim through custom
``claims``, public members only in the JWKS. (``alg: none`` and HMAC keyed with the public
key are in ``test_security_tokens.py``; the SDK's local verifier has ``tests/sdk``.)
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import TYPE_CHECKING, Any, Final

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from security_support import SQLITE_ONLY, create_machine, refused

from gatepass_server.domain.jwt import public_jwk
from gatepass_server.domain.tokens import RESERVED_CLAIMS
from helpers import auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime

ATTACKER_KEY: Final = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_MEMBERS: Final = frozenset({"kty", "n", "e", "kid", "alg", "use"})


class Pair:
    """A caller scoped to a receiver, and one genuine JWT of the caller."""

    def __init__(
        self, caller: dict[str, Any], receiver: dict[str, Any], created: dict[str, Any]
    ) -> None:
        self.caller = caller
        self.receiver = receiver
        self.created = created
        self.token: str = created["token"]
        self.header: dict[str, Any] = jwt.get_unverified_header(self.token)
        self.payload: dict[str, Any] = jwt.decode(self.token, options={"verify_signature": False})


@pytest.fixture
async def pair(client: httpx.AsyncClient, sk: str) -> Pair:
    """Machines and a live JWT minted over HTTP."""
    receiver = await create_machine(client, sk, name="receiver")
    caller = await create_machine(client, sk, name="caller", scoped_machines=[receiver["id"]])
    created = await client.post(
        "/v1/m2m_tokens", json={"token_format": "jwt"}, headers=auth(caller["secret_key"])
    )
    assert created.status_code == 201, created.text
    return Pair(caller, receiver, created.json())


async def _verify_refused(
    client: httpx.AsyncClient, runtime: Runtime, keys: list[str], token: str
) -> None:
    """Refused as ``token_invalid`` for an ``sk_`` and for the receiver's ``ak_`` key."""
    for key in keys:
        await refused(
            client,
            runtime,
            "POST",
            "/v1/m2m_tokens/verify",
            json={"token": token},
            headers=auth(key),
            status=404,
            code="token_invalid",
        )


def _attacker_cert() -> str:
    """A self-signed certificate of the attacker's key, base64 DER as ``x5c`` carries it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatepass")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ATTACKER_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ATTACKER_KEY, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


async def test_jwt_kid_not_in_jwks_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, pair: Pair
) -> None:
    """A token signed by another key under a kid the JWKS does not hold is token_invalid."""
    attacker_kid = public_jwk(ATTACKER_KEY.public_key())["kid"]
    for kid in ("not-a-key", attacker_kid, "", "../../jwks", "0" * 1000):
        forged = jwt.encode(pair.payload, ATTACKER_KEY, algorithm="RS256", headers={"kid": kid})
        await _verify_refused(client, runtime, [sk, pair.receiver["secret_key"]], forged)


async def test_jwt_kid_of_another_instance_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, other_sk: str, pair: Pair
) -> None:
    """A genuine JWT of this instance is refused by another instance's keys: no shared JWKS."""
    outsider = await create_machine(client, other_sk, name="outsider")
    await _verify_refused(client, runtime, [other_sk, outsider["secret_key"]], pair.token)
    ok = await client.post("/v1/m2m_tokens/verify", json={"token": pair.token}, headers=auth(sk))
    assert ok.status_code == 200, ok.text


@SQLITE_ONLY
@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
async def test_jwt_key_carrying_headers_are_ignored(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, pair: Pair, header: str
) -> None:
    """A header pointing at the attacker's key (URL, inline JWK or cert) is never followed."""
    value: Any = {
        "jku": "http://127.0.0.1:1/jwks.json",
        "x5u": "http://127.0.0.1:1/cert.pem",
        "jwk": public_jwk(ATTACKER_KEY.public_key()),
        "x5c": [_attacker_cert()],
    }[header]
    for kid in (pair.header["kid"], public_jwk(ATTACKER_KEY.public_key())["kid"]):
        forged = jwt.encode(
            pair.payload, ATTACKER_KEY, algorithm="RS256", headers={"kid": kid, header: value}
        )
        await _verify_refused(client, runtime, [sk, pair.receiver["secret_key"]], forged)


async def test_jwt_exp_is_required_even_when_signed_by_our_key(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, pair: Pair
) -> None:
    """Signed by the instance's real key for a real record, but ``exp`` absent or no number."""
    payload = {k: v for k, v in pair.payload.items() if k != "exp"}
    _, unbounded = await runtime.signing.sign(pair.caller["instance_id"], payload)
    await _verify_refused(client, runtime, [sk, pair.receiver["secret_key"]], unbounded)
    for ill_typed in ("never", None, True, [pair.payload["exp"]], {"n": 1}):
        _, token = await runtime.signing.sign(
            pair.caller["instance_id"], {**pair.payload, "exp": ill_typed}
        )
        await _verify_refused(client, runtime, [sk], token)


async def test_jwt_expiry_boundary_with_injected_clock(
    client: httpx.AsyncClient, runtime: Runtime, pair: Pair, clock: FixedClock
) -> None:
    """Valid at its record's expiration - 1 ms, refused at expiration and 1 ms after."""
    key = pair.receiver["secret_key"]
    clock.set(pair.created["expiration"] - 1)
    ok = await client.post("/v1/m2m_tokens/verify", json={"token": pair.token}, headers=auth(key))
    assert ok.status_code == 200, ok.text
    await runtime.tokens.flush_last_used()  # the one write a success causes, done now
    for _ in range(2):
        clock.advance(1)
        await _verify_refused(client, runtime, [key], pair.token)


async def test_jwt_of_deleted_machine_stops_verifying(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, pair: Pair
) -> None:
    """Deleting the subject ends its JWTs too, although their signature stays valid."""
    await client.delete(f"/v1/machines/{pair.caller['id']}", headers=auth(sk))
    await _verify_refused(client, runtime, [sk, pair.receiver["secret_key"]], pair.token)


async def test_jwt_revoked_stops_verifying(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, pair: Pair
) -> None:
    """A revoked JWT (by its ``jti``) is refused although its signature and exp are fine."""
    revoked = await client.post(
        f"/v1/m2m_tokens/{pair.created['id']}/revoke", json={}, headers=auth(sk)
    )
    assert revoked.status_code == 200, revoked.text
    await _verify_refused(client, runtime, [sk, pair.receiver["secret_key"]], pair.token)


@SQLITE_ONLY
@pytest.mark.parametrize("name", sorted(RESERVED_CLAIMS))
async def test_jwt_reserved_claims_cannot_be_smuggled(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, name: str
) -> None:
    """Each reserved name in custom ``claims`` is refused for both formats, nothing signed."""
    caller = await create_machine(client, sk)
    for token_format in ("jwt", "opaque"):
        await refused(
            client,
            runtime,
            "POST",
            "/v1/m2m_tokens",
            json={"token_format": token_format, "claims": {"role": "x", name: "smuggled"}},
            headers=auth(caller["secret_key"]),
            status=400,
            code="machine_token_reserved_claim",
            param_name="claims",
        )


async def test_jwks_exposes_public_members_only(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, pair: Pair
) -> None:
    """Both JWKS routes, for every key (active and retired): ``kty n e kid alg use`` only."""
    await runtime.signing.rotate(pair.caller["instance_id"])
    answers = [
        await client.get("/v1/jwks", headers=auth(sk)),
        await client.get("/jwks", headers=auth(sk)),
        await client.get("/v1/m2m_tokens/jwks", headers=auth(sk)),
        await client.get("/v1/m2m_tokens/jwks", headers=auth(pair.receiver["secret_key"])),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"keys"}
        assert len(body["keys"]) == 2  # the active and the retired key
        for key in body["keys"]:
            assert set(key) == PUBLIC_MEMBERS, key
            assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
            public = jwt.PyJWK(key).key
            assert isinstance(public, rsa.RSAPublicKey)
        assert answers[0].json() == body
    # The published key verifies the genuine token: it is the signer's public half.
    keys = {k["kid"]: jwt.PyJWK(k) for k in answers[0].json()["keys"]}
    decoded = jwt.decode(
        pair.token,
        keys[pair.header["kid"]],
        algorithms=["RS256"],
        audience=pair.receiver["id"],
        options={"verify_exp": False},  # the injected clock is in the past of this one
    )
    assert decoded["jti"] == pair.created["id"]


async def test_jwks_refuses_machine_key_on_the_clerk_route(
    client: httpx.AsyncClient, runtime: Runtime, pair: Pair
) -> None:
    """``GET /v1/jwks`` is sk-only, as Clerk's: an ``ak_`` key is 403 (the extension serves it)."""
    await refused(
        client,
        runtime,
        "GET",
        "/v1/jwks",
        headers=auth(pair.receiver["secret_key"]),
        status=403,
        code="authorization_invalid",
    )
