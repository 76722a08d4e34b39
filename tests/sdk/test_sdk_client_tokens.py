"""``client.m2m_tokens`` of ``Gatepass`` and ``AsyncGatepass`` against the real server.

Each scenario runs for both clients on both backends through the ``connect`` and ``api``
fixtures of ``test_sdk_client_machines.py`` (the sync client over TCP, the async one in
process).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import jwt
import pytest
from test_sdk_client_machines import (  # noqa: F401 - fixtures, found by pytest by name
    ASYNC_ONLY,
    SQLITE_ONLY,
    START_MS,
    Api,
    Connect,
    api_fixture,
    assert_error_from,
    connect_fixture,
    served_fixture,
)

import gatepass._client
from gatepass import (
    APIError,
    AuthenticationError,
    AuthReason,
    BadRequestError,
    ConfigurationError,
    Machine,
    NotFoundError,
    PermissionDeniedError,
    Revocation,
    TokenVerificationError,
)
from gatepass_server.domain.keys import SecretKind, generate_secret

if TYPE_CHECKING:
    from gatepass import M2MToken
    from gatepass_server.domain.clock import FixedClock

TOKEN_ID: Final = re.compile(r"mt_[0-9a-f]{32}")
UNKNOWN_TOKEN_ID: Final = "mt_" + "0" * 32


@dataclass
class Pair:
    """``caller`` may call ``receiver``; each has a client holding its own machine key."""

    caller: Machine
    receiver: Machine
    minter: Api
    verifier: Api


async def make_pair(api: Api, connect: Connect) -> Pair:
    """Two machines, the first scoped to the second, and a client for each."""
    receiver = await api.machines.create(name="receiver")
    caller = await api.machines.create(name="caller", scoped_machines=[receiver.id])
    assert caller.secret_key is not None
    assert receiver.secret_key is not None
    return Pair(
        caller=caller,
        receiver=receiver,
        minter=connect(machine_secret_key=caller.secret_key),
        verifier=connect(machine_secret_key=receiver.secret_key),
    )


def without_secret(token: M2MToken) -> M2MToken:
    """The record as read back later: the bearer string only comes with the create."""
    return dataclasses.replace(token, token=None)


# -- create ---------------------------------------------------------------------------------


async def test_create_opaque_token(api: Api, connect: Connect) -> None:
    """The defaults: opaque, the machine's TTL, its scopes; options reach the server."""
    pair = await make_pair(api, connect)
    token = await pair.minter.m2m_tokens.create()
    request = pair.minter.wire.requests[-1]
    assert pair.minter.wire.sent == {}
    assert request.headers["authorization"] == f"Bearer {pair.caller.secret_key}"
    assert TOKEN_ID.fullmatch(token.id)
    assert token.token is not None
    assert token.token.startswith("mt_")
    assert token.token != token.id
    assert (token.subject, token.scopes) == (pair.caller.id, (pair.receiver.id,))
    assert (token.claims, token.revoked, token.revocation_reason) == (None, False, None)
    assert (token.expired, token.expiration) == (False, START_MS + 3_600_000)
    assert (token.last_used_at, token.created_at, token.updated_at) == (None, START_MS, START_MS)

    custom = await pair.minter.m2m_tokens.create(
        seconds_until_expiration=1.5, claims={"role": "reader", "n": [1, 2]}
    )
    assert pair.minter.wire.sent == {
        "seconds_until_expiration": 1.5,
        "claims": {"role": "reader", "n": [1, 2]},
    }
    assert custom.expiration == START_MS + 1500
    assert custom.claims == {"role": "reader", "n": [1, 2]}
    assert custom.id != token.id


@ASYNC_ONLY
async def test_min_remaining_ttl_returns_the_same_token(
    api: Api, connect: Connect, clock: FixedClock
) -> None:
    """A live opaque token with the same claims and enough time left is handed back."""
    pair = await make_pair(api, connect)
    tokens = pair.minter.m2m_tokens

    async def reusable(claims: dict[str, str]) -> M2MToken:
        return await tokens.create(
            claims=claims, seconds_until_expiration=120, min_remaining_ttl_seconds=60
        )

    first = await reusable({"job": "sync"})
    assert pair.minter.wire.sent == {
        "seconds_until_expiration": 120,
        "claims": {"job": "sync"},
        "min_remaining_ttl_seconds": 60,
    }
    again = await reusable({"job": "sync"})
    assert again == first
    assert again.token == first.token
    other = await reusable({"job": "other"})
    assert other.id != first.id
    clock.advance(60_001)
    assert (await reusable({"job": "sync"})).id not in {first.id, other.id}

    with pytest.raises(BadRequestError) as raised:
        await tokens.create(seconds_until_expiration=120, min_remaining_ttl_seconds=120)
    assert_error_from(raised.value, pair.minter.wire, status=400, code="form_param_value_invalid")
    assert raised.value.param_name == "min_remaining_ttl_seconds"

    jwt_a = await tokens.create(token_format="jwt", min_remaining_ttl_seconds=60)
    jwt_b = await tokens.create(token_format="jwt", min_remaining_ttl_seconds=60)
    assert jwt_a.id != jwt_b.id


async def test_jwt_token_verifies_with_the_jwks(api: Api, connect: Connect) -> None:
    """A JWT carries the contract's claims and verifies with a key of ``jwks()``."""
    pair = await make_pair(api, connect)
    assert await api.m2m_tokens.jwks() == {"keys": []}  # nothing signed yet

    minted = await pair.minter.m2m_tokens.create(
        token_format="jwt", claims={"tenant": "acme"}, seconds_until_expiration=300
    )
    assert pair.minter.wire.sent == {
        "token_format": "jwt",
        "seconds_until_expiration": 300,
        "claims": {"tenant": "acme"},
    }
    assert minted.token is not None
    assert minted.expiration == START_MS + 300_000
    header = jwt.get_unverified_header(minted.token)
    assert set(header) == {"alg", "typ", "kid"}
    assert (header["alg"], header["typ"]) == ("RS256", "JWT")

    published = await api.m2m_tokens.jwks()
    assert await pair.verifier.m2m_tokens.jwks() == published  # a machine key may read it too
    assert [key["kid"] for key in published["keys"]] == [header["kid"]]
    key = jwt.PyJWK(published["keys"][0], algorithm="RS256")
    payload = jwt.decode(
        minted.token,
        key,
        algorithms=["RS256"],
        audience=pair.receiver.id,
        options={"verify_exp": False},  # the injected clock is in the past
    )
    assert payload == {
        "tenant": "acme",
        "jti": minted.id,
        "sub": pair.caller.id,
        "aud": [pair.receiver.id],
        "scopes": pair.receiver.id,
        "iat": START_MS // 1000,
        "nbf": START_MS // 1000,
        "exp": (START_MS + 300_000) // 1000,
    }

    verified = await pair.verifier.m2m_tokens.verify(minted.token)
    assert verified == without_secret(minted)


# -- list, iterate, get, revoke -------------------------------------------------------------


async def test_list_and_iterate_tokens_with_flags(
    api: Api, connect: Connect, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revoked and expired tokens appear only when asked for; newest first; paged."""
    pair = await make_pair(api, connect)
    tokens = pair.minter.m2m_tokens
    live = await tokens.create()
    clock.advance(1)
    revoked = await tokens.create()
    clock.advance(1)
    short = await tokens.create(seconds_until_expiration=1)
    clock.advance(1)
    newest = await tokens.create()
    await api.m2m_tokens.revoke(revoked.id, revocation_reason="compromised")
    clock.advance(1_000)
    subject = pair.caller.id

    async def ids(client: Api, **flags: bool | int) -> tuple[list[str], int]:
        page = await client.m2m_tokens.list(subject=subject, **flags)
        return [t.id for t in page.m2m_tokens], page.total_count

    assert await ids(api) == ([newest.id, live.id], 2)
    assert dict(api.wire.requests[-1].url.params) == {
        "subject": subject,
        "revoked": "false",
        "expired": "false",
        "limit": "10",
        "offset": "0",
    }
    assert await ids(api, revoked=True) == ([newest.id, revoked.id, live.id], 3)
    assert await ids(api, expired=True) == ([newest.id, short.id, live.id], 3)
    everything = [newest.id, short.id, revoked.id, live.id]
    assert await ids(api, revoked=True, expired=True) == (everything, 4)
    assert await ids(pair.minter, revoked=True, expired=True, limit=2, offset=1) == (
        everything[1:3],
        4,
    )
    assert dict(pair.minter.wire.requests[-1].url.params) == {
        "subject": subject,
        "revoked": "true",
        "expired": "true",
        "limit": "2",
        "offset": "1",
    }
    page = await api.m2m_tokens.list(subject=subject, revoked=True, expired=True)
    flags = {t.id: (t.revoked, t.revocation_reason, t.expired) for t in page.m2m_tokens}
    assert flags == {
        newest.id: (False, None, False),
        short.id: (False, None, True),
        revoked.id: (True, "compromised", False),
        live.id: (False, None, False),
    }

    monkeypatch.setattr(gatepass._client, "_PAGE", 2)
    api.wire.reset()
    walked = await api.m2m_tokens.iterate(subject=subject, revoked=True, expired=True)
    assert [t.id for t in walked] == everything
    assert [r.url.params["offset"] for r in api.wire.requests] == ["0", "2"]
    assert [t.id for t in await tokens.iterate(subject=subject)] == [newest.id, live.id]
    assert await api.m2m_tokens.iterate(subject=pair.receiver.id) == []

    with pytest.raises(PermissionDeniedError) as raised:
        await pair.verifier.m2m_tokens.list(subject=subject)
    assert_error_from(raised.value, pair.verifier.wire, status=403, code="authorization_invalid")


async def test_get_and_revoke_token(api: Api, connect: Connect, clock: FixedClock) -> None:
    """``get`` reads one record; ``revoke`` keeps the first reason when repeated."""
    pair = await make_pair(api, connect)
    token = await pair.minter.m2m_tokens.create()
    assert await api.m2m_tokens.get(token.id) == without_secret(token)
    assert await pair.minter.m2m_tokens.get(token.id) == without_secret(token)
    with pytest.raises(NotFoundError):  # another machine's token, to a machine key
        await pair.verifier.m2m_tokens.get(token.id)

    clock.advance(10)
    revoked = await api.m2m_tokens.revoke(token.id, revocation_reason="leaked")
    assert api.wire.requests[-1].url.path == f"/v1/m2m_tokens/{token.id}/revoke"
    assert api.wire.sent == {"revocation_reason": "leaked"}
    assert revoked == dataclasses.replace(
        without_secret(token),
        revoked=True,
        revocation_reason="leaked",
        updated_at=START_MS + 10,
    )
    again = await pair.minter.m2m_tokens.revoke(token.id, revocation_reason="other")
    assert again.revocation_reason == "leaked"
    assert await api.m2m_tokens.get(token.id) == revoked

    second = await pair.minter.m2m_tokens.create()
    unexplained = await pair.minter.m2m_tokens.revoke(second.id)
    assert pair.minter.wire.sent == {"revocation_reason": None}
    assert (unexplained.revoked, unexplained.revocation_reason) == (True, None)

    with pytest.raises(NotFoundError) as raised:
        await api.m2m_tokens.revoke(UNKNOWN_TOKEN_ID)
    assert_error_from(raised.value, api.wire, status=404, code="resource_not_found")
    with pytest.raises(NotFoundError):
        await api.m2m_tokens.get(UNKNOWN_TOKEN_ID)


# -- verify ---------------------------------------------------------------------------------


async def test_verify_valid_then_revoked_token(api: Api, connect: Connect) -> None:
    """A valid token's record, for the receiver and the instance key; once revoked, a "no"."""
    pair = await make_pair(api, connect)
    token = await pair.minter.m2m_tokens.create(claims={"k": "v"})
    assert token.token is not None
    verified = await pair.verifier.m2m_tokens.verify(token.token)
    request = pair.verifier.wire.requests[-1]
    assert pair.verifier.wire.sent == {"token": token.token}
    assert request.headers["authorization"] == f"Bearer {pair.receiver.secret_key}"
    assert verified.token is None
    assert (verified.id, verified.subject, verified.scopes, verified.claims) == (
        token.id,
        pair.caller.id,
        (pair.receiver.id,),
        {"k": "v"},
    )
    assert (await api.m2m_tokens.verify(token.token)).id == token.id

    await api.m2m_tokens.revoke(token.id)
    with pytest.raises(TokenVerificationError) as raised:
        await pair.verifier.m2m_tokens.verify(token.token)
    assert_token_invalid(raised, pair.verifier)


def assert_token_invalid(raised: pytest.ExceptionInfo[TokenVerificationError], api: Api) -> None:
    """The one ``token-invalid`` refusal, with the trace id of the 404 it came from."""
    error = raised.value
    assert not isinstance(error, APIError)
    assert error.reason is AuthReason.TOKEN_INVALID
    assert error.message == "the token is not valid"
    assert str(error) == "token-invalid: the token is not valid"
    response = api.wire.last
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "token_invalid"
    assert error.trace_id == response.json()["clerk_trace_id"]
    assert error.trace_id is not None
    assert len(error.trace_id) == 32


@ASYNC_ONLY
async def test_verify_every_no_is_token_invalid(
    api: Api, connect: Connect, clock: FixedClock
) -> None:
    """Malformed, unknown, revoked, expired, out of scope, unscoped or orphaned: one error."""
    pair = await make_pair(api, connect)
    outsider = await api.machines.create(name="outsider")
    assert outsider.secret_key is not None
    stranger = connect(machine_secret_key=outsider.secret_key)
    minter = pair.minter.m2m_tokens

    revoked = await minter.create()
    await api.m2m_tokens.revoke(revoked.id)
    revoked_jwt = await minter.create(token_format="jwt")
    await api.m2m_tokens.revoke(revoked_jwt.id)
    expiring = await minter.create(seconds_until_expiration=1)
    live = await minter.create()
    clock.advance(1_001)
    cases: list[tuple[Api, str | None]] = [
        (api, "garbage"),
        (api, ""),
        (api, "mt_" + "A" * 40),
        (api, generate_secret(SecretKind.TOKEN)),  # well formed, never issued
        (api, revoked.token),
        (api, revoked_jwt.token),
        (api, expiring.token),
        (stranger, live.token),  # not in the token's scopes
    ]
    for client, presented in cases:
        assert presented is not None
        client.wire.reset()
        with pytest.raises(TokenVerificationError) as raised:
            await client.m2m_tokens.verify(presented)
        assert_token_invalid(raised, client)
        assert len(client.wire.requests) == 1  # a 404 is an answer: not retried

    assert live.token is not None
    await api.machines.delete_scope(pair.caller.id, to_machine_id=pair.receiver.id)
    with pytest.raises(TokenVerificationError) as unscoped:
        await pair.verifier.m2m_tokens.verify(live.token)
    assert_token_invalid(unscoped, pair.verifier)
    assert (await api.m2m_tokens.verify(live.token)).id == live.id  # the instance key may

    await api.machines.delete(pair.caller.id)
    with pytest.raises(TokenVerificationError) as orphaned:
        await api.m2m_tokens.verify(live.token)
    assert_token_invalid(orphaned, api)


@ASYNC_ONLY
async def test_verify_refuses_another_instances_token(
    api: Api, connect: Connect, other_sk: str
) -> None:
    """A token of another instance is invalid here, not ours to describe."""
    other = connect(secret_key=other_sk)
    machine = await other.machines.create(name="elsewhere")
    assert machine.secret_key is not None
    token = await connect(machine_secret_key=machine.secret_key).m2m_tokens.create()
    assert token.token is not None
    assert (await other.m2m_tokens.verify(token.token)).id == token.id
    with pytest.raises(TokenVerificationError) as raised:
        await api.m2m_tokens.verify(token.token)
    assert_token_invalid(raised, api)


# -- revocation feed and keys ---------------------------------------------------------------


async def test_revocations_feed_follows_a_cursor(
    api: Api, connect: Connect, clock: FixedClock
) -> None:
    """Revoked ids come after the cursor, in order, paged by ``limit``, to either key."""
    pair = await make_pair(api, connect)
    opaque = await pair.minter.m2m_tokens.create()
    signed = await pair.minter.m2m_tokens.create(token_format="jwt")
    await pair.minter.m2m_tokens.create()
    outsider = await api.machines.create(name="outsider")
    assert outsider.secret_key is not None
    stranger = connect(machine_secret_key=outsider.secret_key)

    start = await api.m2m_tokens.revocations()
    assert dict(api.wire.requests[-1].url.params) == {"after": "0"}
    assert (start.data, start.has_more) == ((), False)
    clock.advance(5)
    await api.m2m_tokens.revoke(opaque.id)
    clock.advance(5)
    await api.m2m_tokens.revoke(signed.id)

    expected = (
        Revocation(
            id=opaque.id,
            subject=pair.caller.id,
            revoked_at=START_MS + 5,
            expiration=START_MS + 3_600_000,
        ),
        Revocation(
            id=signed.id,
            subject=pair.caller.id,
            revoked_at=START_MS + 10,
            expiration=START_MS + 3_600_000,
        ),
    )
    page = await api.m2m_tokens.revocations(after=start.cursor, wait=5)
    assert dict(api.wire.requests[-1].url.params) == {"after": start.cursor, "wait": "5"}
    assert (page.data, page.has_more) == (expected, False)
    assert page.cursor != start.cursor
    end = await api.m2m_tokens.revocations(after=page.cursor)
    assert (end.data, end.has_more) == ((), False)

    first = await pair.verifier.m2m_tokens.revocations(after=start.cursor, limit=1)
    assert dict(pair.verifier.wire.requests[-1].url.params) == {
        "after": start.cursor,
        "limit": "1",
    }
    assert pair.verifier.wire.requests[-1].headers["authorization"] == (
        f"Bearer {pair.receiver.secret_key}"
    )
    assert (first.data, first.has_more) == (expected[:1], True)
    rest = await pair.verifier.m2m_tokens.revocations(after=first.cursor)
    assert (rest.data, rest.has_more) == (expected[1:], False)
    assert (await stranger.m2m_tokens.revocations(after=start.cursor)).data == ()


# -- keys -----------------------------------------------------------------------------------


@SQLITE_ONLY
@ASYNC_ONLY
async def test_token_calls_need_a_key_of_the_right_kind(api: Api, connect: Connect) -> None:
    """Minting needs the machine key; the rest need either; without one nothing is sent."""
    pair = await make_pair(api, connect)
    with pytest.raises(ConfigurationError, match="needs a machine secret key"):
        await api.m2m_tokens.create()
    assert [r.url.path for r in api.wire.requests] == ["/v1/machines"] * 2

    keyless = connect()
    calls = {
        "create": {},
        "list": {"subject": pair.caller.id},
        "iterate": {"subject": pair.caller.id},
        "get": {"token_id": UNKNOWN_TOKEN_ID},
        "revoke": {"token_id": UNKNOWN_TOKEN_ID},
        "verify": {"token": "mt_x"},
        "revocations": {},
        "jwks": {},
    }
    for name, kwargs in calls.items():
        with pytest.raises(ConfigurationError, match="needs"):
            await getattr(keyless.m2m_tokens, name)(**kwargs)
    assert keyless.wire.requests == []

    with pytest.raises(AuthenticationError) as raised:
        await connect(machine_secret_key=generate_secret(SecretKind.MACHINE)).m2m_tokens.create()
    assert raised.value.code == "machine_secret_key_invalid"


@SQLITE_ONLY
async def test_token_field_errors_are_400(api: Api, connect: Connect) -> None:
    """Field errors on ``/m2m_tokens`` are 400 and name the field (CONTRACT.md §5)."""
    pair = await make_pair(api, connect)
    minter = pair.minter
    with pytest.raises(BadRequestError) as reserved:
        await minter.m2m_tokens.create(claims={"sub": "someone-else"})
    assert_error_from(reserved.value, minter.wire, status=400, code="machine_token_reserved_claim")
    assert reserved.value.param_name == "claims"

    with pytest.raises(BadRequestError) as zero:
        await minter.m2m_tokens.create(seconds_until_expiration=0)
    assert_error_from(zero.value, minter.wire, status=400, code="form_param_value_invalid")
    assert zero.value.param_name == "seconds_until_expiration"

    with pytest.raises(BadRequestError) as too_large:
        await minter.m2m_tokens.create(claims={"blob": "x" * 70_000})
    assert_error_from(too_large.value, minter.wire, status=413, code="request_body_too_large")
