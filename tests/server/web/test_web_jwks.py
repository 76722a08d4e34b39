"""Route 14: ``GET /v1/jwks``, the instance's public signing keys, for ``sk_`` keys only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import jwt
import pytest
from web_support import PREFIXES, SQLITE_ONLY, assert_api_headers, create_machine

from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.services.auth import InstancePrincipal
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.runtime import Runtime

JWK_MEMBERS: Final = frozenset({"kty", "n", "e", "kid", "alg", "use"})
PAYLOAD: Final = {"sub": "mch_" + "j" * 27, "exp": 4_102_444_800}


async def _instance_of(runtime: Runtime, key: str) -> str:
    """The instance an ``sk_`` key administers."""
    principal = await runtime.authenticator.authenticate(key)
    assert isinstance(principal, InstancePrincipal)
    return principal.instance_id


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_jwks_lists_the_public_keys(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, prefix: str
) -> None:
    """200 ``{"keys":[JWK]}`` with exactly the public members; a signed token verifies with it."""
    kid, token = await runtime.signing.sign(await _instance_of(runtime, sk), PAYLOAD)
    response = await client.get(f"{prefix}/jwks", headers=auth(sk))
    assert response.status_code == 200
    assert_api_headers(response)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"keys"}
    (key,) = body["keys"]
    assert set(key) == JWK_MEMBERS
    assert (key["kid"], key["kty"], key["alg"], key["use"]) == (kid, "RSA", "RS256", "sig")
    assert jwt.decode(token, jwt.PyJWK(key), algorithms=["RS256"]) == PAYLOAD


async def test_jwks_of_an_instance_that_never_signed_is_empty(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """Reading the JWKS creates no key: an instance with none answers ``{"keys":[]}``."""
    before = await storage_snapshot(runtime)
    response = await client.get("/v1/jwks", headers=auth(sk))
    assert response.status_code == 200
    assert response.json() == {"keys": []}
    assert await storage_snapshot(runtime) == before


async def test_jwks_shows_the_rotated_key_first(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """After a rotation the new key is listed (the old one, with no live token, is not)."""
    instance_id = await _instance_of(runtime, sk)
    await runtime.signing.sign(instance_id, PAYLOAD)
    new_kid = await runtime.signing.rotate(instance_id)
    response = await client.get("/v1/jwks", headers=auth(sk))
    assert [key["kid"] for key in response.json()["keys"]] == [new_kid]


async def test_jwks_is_per_instance(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, other_sk: str
) -> None:
    """Each instance key sees its own instance's keys and never another's."""
    mine, _ = await runtime.signing.sign(await _instance_of(runtime, sk), PAYLOAD)
    other_response = await client.get("/v1/jwks", headers=auth(other_sk))
    assert other_response.json() == {"keys": []}
    theirs, _ = await runtime.signing.sign(await _instance_of(runtime, other_sk), PAYLOAD)
    assert [k["kid"] for k in (await client.get("/jwks", headers=auth(sk))).json()["keys"]] == [
        mine
    ]
    other_keys = (await client.get("/jwks", headers=auth(other_sk))).json()["keys"]
    assert [k["kid"] for k in other_keys] == [theirs]


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_machine_key_is_forbidden(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, prefix: str
) -> None:
    """An ``ak_`` key gets 403 ``authorization_invalid`` and changes nothing (CONTRACT.md §2)."""
    await runtime.signing.sign(await _instance_of(runtime, sk), PAYLOAD)
    machine = await create_machine(client, sk)
    before = await storage_snapshot(runtime)
    response = await client.get(f"{prefix}/jwks", headers=auth(machine["secret_key"]))
    await assert_rejected(
        response,
        status=403,
        code="authorization_invalid",
        runtime=runtime,
        before=before,
        not_echoed=[machine["secret_key"]],
    )
    assert '"kty"' not in response.text


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_no_key_is_unauthenticated(
    client: httpx.AsyncClient, runtime: Runtime, prefix: str
) -> None:
    """Without an ``Authorization`` header: 401 ``authentication_invalid``, nothing changed."""
    before = await storage_snapshot(runtime)
    response = await client.get(f"{prefix}/jwks")
    await assert_rejected(
        response, status=401, code="authentication_invalid", runtime=runtime, before=before
    )


@SQLITE_ONLY
async def test_unknown_instance_key_is_rejected(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """A well-formed but never issued ``sk_`` key is 401 ``clerk_key_invalid``, not echoed."""
    forged = generate_secret(SecretKind.INSTANCE_TEST)
    assert forged != sk
    before = await storage_snapshot(runtime)
    response = await client.get("/v1/jwks", headers=auth(forged))
    await assert_rejected(
        response,
        status=401,
        code="clerk_key_invalid",
        runtime=runtime,
        before=before,
        not_echoed=[forged],
    )


@SQLITE_ONLY
@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
async def test_other_methods_are_405(client: httpx.AsyncClient, sk: str, method: str) -> None:
    """Only GET (and HEAD) is served on ``/jwks``."""
    response = await client.request(method, "/v1/jwks", headers=auth(sk))
    await assert_rejected(response, status=405, code="method_not_allowed")
    assert "GET" in {m.strip() for m in response.headers["allow"].split(",")}


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_token_jwks_serves_machine_and_instance_keys(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, other_sk: str, prefix: str
) -> None:
    """``GET /m2m_tokens/jwks`` (Gatepass): the same public keys for an ``ak_`` or ``sk_`` key.

    A receiving service holding only its machine key can verify JWTs locally; it sees its
    own instance's keys, never another's.
    """
    kid, _ = await runtime.signing.sign(await _instance_of(runtime, sk), PAYLOAD)
    await runtime.signing.sign(await _instance_of(runtime, other_sk), PAYLOAD)
    machine = await create_machine(client, sk)
    by_machine = await client.get(f"{prefix}/m2m_tokens/jwks", headers=auth(machine["secret_key"]))
    by_instance = await client.get(f"{prefix}/m2m_tokens/jwks", headers=auth(sk))
    assert by_machine.status_code == by_instance.status_code == 200
    assert_api_headers(by_machine)
    assert (
        by_machine.json()
        == by_instance.json()
        == (await client.get("/v1/jwks", headers=auth(sk))).json()
    )
    assert [key["kid"] for key in by_machine.json()["keys"]] == [kid]
    assert machine["secret_key"] not in by_machine.text


async def test_token_jwks_needs_a_valid_key(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """Without a key, or with an unknown one, ``/m2m_tokens/jwks`` is the usual 401."""
    before = await storage_snapshot(runtime)
    missing = await client.get("/v1/m2m_tokens/jwks")
    await assert_rejected(
        missing, status=401, code="authentication_invalid", runtime=runtime, before=before
    )
    forged = generate_secret(SecretKind.MACHINE)
    unknown = await client.get("/v1/m2m_tokens/jwks", headers=auth(forged))
    await assert_rejected(
        unknown,
        status=401,
        code="clerk_key_invalid",
        runtime=runtime,
        before=before,
        not_echoed=[forged],
    )
