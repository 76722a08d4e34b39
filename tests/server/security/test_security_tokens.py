"""Attack classes of SECURITY.md aimed at M2M tokens, one named test each.

Every refusal goes through ``refused`` (``assert_rejected`` with a storage snapshot taken
just before the request): status, exact content type, envelope, no echo, nothing changed.
A failed verify must change nothing either: ``last_used_at`` is batched, not written inline.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from security_support import (
    SQLITE_ONLY,
    UNKNOWN_MACHINE_ID,
    create_machine,
    refused,
    without_trace_id,
)

from gatepass_server.domain.keys import SecretKind, generate_secret
from helpers import auth, storage_snapshot

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime

UNKNOWN_TOKEN_ID = "mt_" + "0" * 32


class Setup:
    """A caller scoped to a receiver in the default instance, and a machine elsewhere."""

    def __init__(
        self,
        caller: dict[str, Any],
        receiver: dict[str, Any],
        outsider: dict[str, Any],
        token: dict[str, Any],
    ) -> None:
        self.caller = caller
        self.receiver = receiver
        self.outsider = outsider
        self.token = token


@pytest.fixture
async def setup(client: httpx.AsyncClient, sk: str, other_sk: str) -> Setup:
    """Machines on both sides of the tenant line and one live opaque token of the caller."""
    receiver = await create_machine(client, sk, name="receiver")
    caller = await create_machine(client, sk, name="caller", scoped_machines=[receiver["id"]])
    outsider = await create_machine(client, other_sk, name="outsider")
    minted = await client.post("/v1/m2m_tokens", json={}, headers=auth(caller["secret_key"]))
    assert minted.status_code == 201, minted.text
    return Setup(caller, receiver, outsider, minted.json())


@contextlib.contextmanager
def case(label: object) -> Iterator[None]:
    """Name the table row a failing assertion came from (cases share one test for speed)."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"case {label!r}: {exc}") from exc


def _b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def _verify_refused(
    client: httpx.AsyncClient, runtime: Runtime, key: str, token: str, *, secrets: list[str]
) -> dict[str, Any]:
    response, _ = await refused(
        client,
        runtime,
        "POST",
        "/v1/m2m_tokens/verify",
        json={"token": token},
        headers=auth(key),
        status=404,
        code="token_invalid",
        not_echoed=secrets,
    )
    body: dict[str, Any] = response.json()
    body.pop("clerk_trace_id")
    return body


# -- key type and privilege --------------------------------------------------------------------


async def test_instance_key_cannot_mint_tokens(
    client: httpx.AsyncClient, runtime: Runtime, sk: str, other_sk: str
) -> None:
    """An sk_ key (either instance) minting is 401 machine_secret_key_invalid, nothing stored."""
    for key in (sk, other_sk):
        await refused(
            client,
            runtime,
            "POST",
            "/v1/m2m_tokens",
            json={"token_format": "jwt"},
            headers=auth(key),
            status=401,
            code="machine_secret_key_invalid",
            not_echoed=[key],
        )


@SQLITE_ONLY
async def test_token_cannot_be_used_as_a_key(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """A minted mt_ token is not a credential: it cannot mint, list or verify."""
    token = setup.token["token"]
    await refused(
        client,
        runtime,
        "POST",
        "/v1/m2m_tokens",
        json={},
        headers=auth(token),
        status=401,
        code="machine_secret_key_invalid",
        not_echoed=[token],
    )
    await refused(
        client,
        runtime,
        "GET",
        f"/v1/m2m_tokens?subject={setup.caller['id']}",
        headers=auth(token),
        status=401,
        code="clerk_key_invalid",
        not_echoed=[token],
    )


async def test_machine_key_cannot_list_another_machines_tokens(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """The receiver listing the caller's tokens is 403 authorization_invalid."""
    await refused(
        client,
        runtime,
        "GET",
        f"/v1/m2m_tokens?subject={setup.caller['id']}",
        headers=auth(setup.receiver["secret_key"]),
        status=403,
        code="authorization_invalid",
    )


async def test_machine_key_cannot_revoke_another_machines_token(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """The receiver (even though in scopes) cannot revoke the caller's token: 404."""
    await refused(
        client,
        runtime,
        "POST",
        f"/v1/m2m_tokens/{setup.token['id']}/revoke",
        json={"revocation_reason": "sabotage"},
        headers=auth(setup.receiver["secret_key"]),
        status=404,
        code="resource_not_found",
    )


# -- cross-instance --------------------------------------------------------------------------


async def test_cross_instance_verify_is_token_invalid(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, other_sk: str
) -> None:
    """Another tenant's sk and machine key get the same 404 as for an unknown token."""
    token = setup.token["token"]
    bodies = [
        await _verify_refused(client, runtime, other_sk, token, secrets=[token]),
        await _verify_refused(
            client, runtime, setup.outsider["secret_key"], token, secrets=[token]
        ),
        await _verify_refused(
            client, runtime, other_sk, generate_secret(SecretKind.TOKEN), secrets=[token]
        ),
    ]
    assert bodies[0] == bodies[1] == bodies[2]


async def test_cross_instance_revoke_and_get_are_not_found(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, other_sk: str
) -> None:
    """Revoke and get of another tenant's token: the same 404 as an unknown id."""
    bodies = []
    for token_id in (setup.token["id"], UNKNOWN_TOKEN_ID):
        for method, suffix, body in (("POST", "/revoke", {}), ("GET", "", None)):
            response, _ = await refused(
                client,
                runtime,
                method,
                f"/v1/m2m_tokens/{token_id}{suffix}",
                json=body,
                headers=auth(other_sk),
                status=404,
                code="resource_not_found",
            )
            error = response.json()
            error.pop("clerk_trace_id")
            bodies.append(error)
    assert bodies[0] == bodies[2]
    assert bodies[1] == bodies[3]


async def test_cross_instance_list_is_empty(
    client: httpx.AsyncClient, setup: Setup, other_sk: str
) -> None:
    """Another tenant's sk listing our machine's tokens sees nothing."""
    response = await client.get(
        "/v1/m2m_tokens",
        params={"subject": setup.caller["id"], "revoked": "true", "expired": "true"},
        headers=auth(other_sk),
    )
    assert response.json() == {"m2m_tokens": [], "total_count": 0}


async def test_cross_instance_machine_key_cannot_list(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """Another tenant's machine key asking for our subject is 403, like any foreign subject."""
    await refused(
        client,
        runtime,
        "GET",
        f"/v1/m2m_tokens?subject={setup.caller['id']}",
        headers=auth(setup.outsider["secret_key"]),
        status=403,
        code="authorization_invalid",
    )


# -- scope escalation and mass assignment ------------------------------------------------------


@SQLITE_ONLY
async def test_scope_escalation_via_create_body(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """Fields naming who the token is for or what it is are form_param_unknown."""
    ids = {"receiver": setup.receiver["id"], "outsider": setup.outsider["id"]}

    def fill(item: Any) -> Any:
        return item.format(**ids) if isinstance(item, str) else item

    for field, value in [
        ("scopes", ["{receiver}", "{outsider}"]),
        ("subject", "{receiver}"),
        ("id", UNKNOWN_TOKEN_ID),
        ("instance_id", "ins_" + "0" * 27),
        ("aud", ["{outsider}"]),
        ("revoked", False),
        ("expiration", 2**62),
    ]:
        with case((field, value)):
            filled = [fill(v) for v in value] if isinstance(value, list) else fill(value)
            await refused(
                client,
                runtime,
                "POST",
                "/v1/m2m_tokens",
                json={field: filled},
                headers=auth(setup.caller["secret_key"]),
                status=400,
                code="form_param_unknown",
                param_name=field,
            )


async def test_scope_escalation_via_verify_body(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, sk: str
) -> None:
    """An out-of-scope machine cannot widen the check by adding scopes to its verify body."""
    bystander = await create_machine(client, sk, name="bystander")
    await refused(
        client,
        runtime,
        "POST",
        "/v1/m2m_tokens/verify",
        json={"token": setup.token["token"], "scopes": [bystander["id"]]},
        headers=auth(bystander["secret_key"]),
        status=400,
        code="form_param_unknown",
        param_name="scopes",
    )
    await _verify_refused(
        client, runtime, bystander["secret_key"], setup.token["token"], secrets=[]
    )


async def test_scope_escalation_via_reserved_claims(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """Custom claims cannot set aud, scopes or sub of a JWT."""
    for claims in ({"aud": [setup.outsider["id"]]}, {"scopes": "x"}, {"sub": setup.receiver["id"]}):
        await refused(
            client,
            runtime,
            "POST",
            "/v1/m2m_tokens",
            json={"token_format": "jwt", "claims": claims},
            headers=auth(setup.caller["secret_key"]),
            status=400,
            code="machine_token_reserved_claim",
            param_name="claims",
        )


# -- token lifecycle edges -------------------------------------------------------------------


async def test_expiry_boundary_with_injected_clock(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, clock: FixedClock
) -> None:
    """Valid at expiration - 1 ms, refused (storage unchanged) at expiration and after."""
    token = setup.token
    clock.set(token["expiration"] - 1)
    ok = await client.post(
        "/v1/m2m_tokens/verify",
        json={"token": token["token"]},
        headers=auth(setup.receiver["secret_key"]),
    )
    assert ok.status_code == 200, ok.text
    for step in (1, 1):
        clock.advance(step)
        await _verify_refused(
            client, runtime, setup.receiver["secret_key"], token["token"], secrets=[token["token"]]
        )


async def test_deleted_machine_tokens_stop_verifying(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, sk: str
) -> None:
    """After the subject is deleted its token is refused, for sk and for the receiver."""
    await client.delete(f"/v1/machines/{setup.caller['id']}", headers=auth(sk))
    for key in (sk, setup.receiver["secret_key"]):
        await _verify_refused(client, runtime, key, setup.token["token"], secrets=[])


async def test_double_revoke_keeps_first_reason(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, sk: str, clock: FixedClock
) -> None:
    """A second revoke cannot rewrite the audit trail: 200, and storage does not change."""
    url = f"/v1/m2m_tokens/{setup.token['id']}/revoke"
    first = await client.post(
        url, json={"revocation_reason": "leaked"}, headers=auth(setup.caller["secret_key"])
    )
    assert first.status_code == 200, first.text
    clock.advance(5_000)
    before = await storage_snapshot(runtime)
    for key, body in ((sk, {"revocation_reason": "cover-up"}), (sk, {}), (sk, None)):
        again = await client.post(url, json=body, headers=auth(key))
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
    assert await storage_snapshot(runtime) == before


async def test_reuse_never_hands_back_a_revoked_expiring_or_foreign_token(
    client: httpx.AsyncClient, setup: Setup, sk: str, clock: FixedClock
) -> None:
    """Reuse hands back a stored secret: only the caller's own, live, with more time left.

    With ``min_remaining_ttl_seconds`` a token with exactly that much left, a revoked one
    and another machine's are never returned.
    """
    body = {"seconds_until_expiration": 600, "min_remaining_ttl_seconds": 60}

    async def mint(key: str) -> dict[str, Any]:
        created = await client.post("/v1/m2m_tokens", json=body, headers=auth(key))
        assert created.status_code == 201, created.text
        return dict(created.json())

    first = await mint(setup.caller["secret_key"])
    assert (await mint(setup.caller["secret_key"]))["id"] == first["id"]
    other = await mint(setup.receiver["secret_key"])
    assert other["id"] != first["id"]
    clock.set(first["expiration"] - 60_000)  # exactly the minimum left: not enough
    second = await mint(setup.caller["secret_key"])
    assert second["id"] != first["id"]
    await client.post(f"/v1/m2m_tokens/{second['id']}/revoke", json={}, headers=auth(sk))
    third = await mint(setup.caller["secret_key"])
    assert third["id"] not in {first["id"], second["id"]}
    assert third["token"] not in {first["token"], second["token"], other["token"]}


async def test_machine_key_cannot_read_another_machines_token(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """Object level: the receiver gets the same 404 for the caller's token as for none."""
    bodies = []
    for token_id in (setup.token["id"], UNKNOWN_TOKEN_ID):
        response, _ = await refused(
            client,
            runtime,
            "GET",
            f"/v1/m2m_tokens/{token_id}",
            headers=auth(setup.receiver["secret_key"]),
            status=404,
            code="resource_not_found",
        )
        bodies.append(without_trace_id(response))
    assert bodies[0] == bodies[1]
    own = await client.get(
        f"/v1/m2m_tokens/{setup.token['id']}", headers=auth(setup.caller["secret_key"])
    )
    assert own.status_code == 200, own.text


# -- enumeration ---------------------------------------------------------------------------------


async def test_enumeration_verify_failures_are_identical(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, sk: str, clock: FixedClock
) -> None:
    """Unknown, wrong checksum, id instead of secret, revoked, expired: one body."""
    token = setup.token["token"]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    revoked = (
        await client.post("/v1/m2m_tokens", json={}, headers=auth(setup.caller["secret_key"]))
    ).json()
    await client.post(f"/v1/m2m_tokens/{revoked['id']}/revoke", json={}, headers=auth(sk))
    candidates = [generate_secret(SecretKind.TOKEN), flipped, setup.token["id"], revoked["token"]]
    bodies = [
        await _verify_refused(client, runtime, sk, c, secrets=[token, revoked["token"]])
        for c in candidates
    ]
    clock.set(setup.token["expiration"])
    bodies.append(await _verify_refused(client, runtime, sk, token, secrets=[token]))
    assert all(b == bodies[0] for b in bodies)


@SQLITE_ONLY
async def test_enumeration_revoke_of_unknown_and_malformed_ids(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """An impossible id and a well-formed unknown one are the same 404."""
    bodies = []
    for token_id in (UNKNOWN_TOKEN_ID, "mt_zz", "x" * 300):
        response, _ = await refused(
            client,
            runtime,
            "POST",
            f"/v1/m2m_tokens/{token_id}/revoke",
            json={},
            headers=auth(sk),
            status=404,
            code="resource_not_found",
        )
        body = response.json()
        body.pop("clerk_trace_id")
        bodies.append(body)
    assert bodies[0] == bodies[1] == bodies[2]


# -- credentials in the query string -----------------------------------------------------------


@SQLITE_ONLY
async def test_token_in_query_string_is_ignored(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, sk: str
) -> None:
    """A token in the URL is never read: verify still needs it in the body."""
    token = setup.token["token"]
    await refused(
        client,
        runtime,
        "POST",
        f"/v1/m2m_tokens/verify?token={token}&secret={token}",
        json={},
        headers=auth(sk),
        status=400,
        code="form_param_missing",
        param_name="token",
        not_echoed=[token],
    )


@SQLITE_ONLY
async def test_machine_key_in_query_string_is_ignored(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """A key in the URL does not authenticate a mint or a list."""
    key = setup.caller["secret_key"]
    await refused(
        client,
        runtime,
        "POST",
        f"/v1/m2m_tokens?secret_key={key}&authorization=Bearer%20{key}",
        json={},
        status=401,
        code="machine_secret_key_invalid",
        not_echoed=[key],
    )
    await refused(
        client,
        runtime,
        "GET",
        f"/v1/m2m_tokens?subject={setup.caller['id']}&secret_key={key}",
        status=401,
        code="authentication_invalid",
        not_echoed=[key],
    )


# -- JWT attacks -------------------------------------------------------------------------------


async def _jwt_and_pem(client: httpx.AsyncClient, setup: Setup, sk: str) -> tuple[str, bytes]:
    created = await client.post(
        "/v1/m2m_tokens", json={"token_format": "jwt"}, headers=auth(setup.caller["secret_key"])
    )
    token: str = created.json()["token"]
    (key,) = (await client.get("/v1/jwks", headers=auth(sk))).json()["keys"]
    pem = jwt.PyJWK(key).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return token, pem


async def test_jwt_alg_none_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, sk: str
) -> None:
    """An unsigned copy of a genuine JWT (alg none) is token_invalid."""
    token, _ = await _jwt_and_pem(client, setup, sk)
    header = jwt.get_unverified_header(token)
    forged = f"{_b64({**header, 'alg': 'none'})}.{token.split('.')[1]}."
    await _verify_refused(client, runtime, setup.receiver["secret_key"], forged, secrets=[])


async def test_jwt_hmac_with_public_key_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup, sk: str
) -> None:
    """HS256 keyed with the published public key PEM (algorithm confusion) is token_invalid."""
    token, pem = await _jwt_and_pem(client, setup, sk)
    header = {**jwt.get_unverified_header(token), "alg": "HS256"}
    signing_input = f"{_b64(header)}.{token.split('.')[1]}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{_b64(mac)}"
    await _verify_refused(client, runtime, setup.receiver["secret_key"], forged, secrets=[])


# -- validation ------------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_numbers_and_sizes_that_crash_python_are_400(
    client: httpx.AsyncClient, runtime: Runtime, setup: Setup
) -> None:
    """Values that overflow floats, int64 or the claims cap are a 400, never a 500."""
    labels = ["huge-int", "huge-float", "int64-overflow", "huge-key"]
    for index, (body, field, code) in enumerate(
        [
            (
                {"seconds_until_expiration": 10**400},
                "seconds_until_expiration",
                "form_param_value_invalid",
            ),
            (
                {"seconds_until_expiration": 1e308},
                "seconds_until_expiration",
                "form_param_value_invalid",
            ),
            (
                {"min_remaining_ttl_seconds": 2**64},
                "min_remaining_ttl_seconds",
                "form_param_format_invalid",
            ),
            ({"claims": {"k" * 10_000: 1}}, "claims", "form_param_value_invalid"),
        ]
    ):
        with case(labels[index]):
            await refused(
                client,
                runtime,
                "POST",
                "/v1/m2m_tokens",
                json=body,
                headers=auth(setup.caller["secret_key"]),
                status=400,
                code=code,
                param_name=field,
            )


@SQLITE_ONLY
async def test_list_subject_cannot_be_a_wildcard(
    client: httpx.AsyncClient, setup: Setup, sk: str
) -> None:
    """``subject`` is an exact match: SQL wildcards list nothing."""
    for subject in ("%", "mch_%", "_", UNKNOWN_MACHINE_ID):
        response = await client.get("/v1/m2m_tokens", params={"subject": subject}, headers=auth(sk))
        assert response.json() == {"m2m_tokens": [], "total_count": 0}, subject
    assert setup.token["subject"] == setup.caller["id"]
