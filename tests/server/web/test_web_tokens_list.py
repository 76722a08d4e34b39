"""Route 11 and the ``GET /m2m_tokens/{id}`` extension: listing and reading tokens."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from web_support import PREFIXES, SQLITE_ONLY, UNKNOWN_MACHINE_ID, assert_api_headers
from web_tokens_support import UNKNOWN_TOKEN_ID, assert_token, case, make_pair, mint

from helpers import assert_rejected, auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock


async def _list(
    client: httpx.AsyncClient, key: str, prefix: str = "/v1", **params: Any
) -> dict[str, Any]:
    response = await client.get(f"{prefix}/m2m_tokens", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    assert_api_headers(response)
    body: dict[str, Any] = response.json()
    assert set(body) == {"m2m_tokens", "total_count"}
    for token in body["m2m_tokens"]:
        assert_token(token)
    return body


def _ids(body: dict[str, Any]) -> list[str]:
    return [t["id"] for t in body["m2m_tokens"]]


async def test_list_is_newest_first_with_total(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """The envelope is m2m_tokens + total_count; newest first; with and without /v1."""
    pair = await make_pair(client, sk)
    minted = []
    for _ in range(3):
        minted.append((await mint(client, pair.caller_key))["id"])
        clock.advance(10)
    for prefix in PREFIXES:
        body = await _list(client, sk, prefix, subject=pair.caller["id"])
        assert _ids(body) == minted[::-1]
        assert body["total_count"] == 3


async def test_list_pages_with_limit_and_offset(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """Limit and offset page through the newest-first order; total_count stays the total."""
    pair = await make_pair(client, sk)
    minted = []
    for _ in range(5):
        minted.append((await mint(client, pair.caller_key))["id"])
        clock.advance(1)
    newest_first = minted[::-1]
    page = await _list(client, sk, subject=pair.caller["id"], limit=2, offset=1)
    assert _ids(page) == newest_first[1:3]
    assert page["total_count"] == 5
    floats = await _list(client, sk, subject=pair.caller["id"], limit="2.0", offset="4")
    assert _ids(floats) == newest_first[4:]
    beyond = await _list(client, sk, subject=pair.caller["id"], offset=50)
    assert (beyond["m2m_tokens"], beyond["total_count"]) == ([], 5)


async def test_default_limit_is_ten(client: httpx.AsyncClient, sk: str) -> None:
    """Without limit at most 10 tokens come back; limit=100 is allowed."""
    pair = await make_pair(client, sk)
    for _ in range(11):
        await mint(client, pair.caller_key)
    assert len((await _list(client, sk, subject=pair.caller["id"]))["m2m_tokens"]) == 10
    assert len((await _list(client, sk, subject=pair.caller["id"], limit=100))["m2m_tokens"]) == 11


async def test_revoked_and_expired_are_opt_in(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """revoked/expired=true also include those tokens; false or absent leave them out."""
    pair = await make_pair(client, sk)
    expiring = await mint(client, pair.caller_key, seconds_until_expiration=1)
    revoked = await mint(client, pair.caller_key)
    live = await mint(client, pair.caller_key, seconds_until_expiration=100)
    await client.post(f"/v1/m2m_tokens/{revoked['id']}/revoke", json={}, headers=auth(sk))
    clock.advance(1_000)
    subject = pair.caller["id"]
    cases = {
        (None, None): {live["id"]},
        ("false", "false"): {live["id"]},
        ("true", None): {live["id"], revoked["id"]},
        (None, "true"): {live["id"], expiring["id"]},
        ("true", "true"): {live["id"], revoked["id"], expiring["id"]},
        ("1", "0"): {live["id"], revoked["id"]},
    }
    for (rev, exp), expected in cases.items():
        params = {k: v for k, v in (("revoked", rev), ("expired", exp)) if v is not None}
        body = await _list(client, sk, subject=subject, **params)
        assert set(_ids(body)) == expected, (rev, exp)
        assert body["total_count"] == len(expected)
    listed = {
        t["id"]: t
        for t in (await _list(client, sk, subject=subject, revoked="true", expired="true"))[
            "m2m_tokens"
        ]
    }
    assert listed[expiring["id"]]["expired"] is True
    assert listed[revoked["id"]]["revoked"] is True


async def test_jwt_tokens_are_not_listed(client: httpx.AsyncClient, sk: str) -> None:
    """Only opaque tokens are listed (CONTRACT.md §4; the SDK's list_tokens docs)."""
    pair = await make_pair(client, sk)
    opaque = await mint(client, pair.caller_key)
    await mint(client, pair.caller_key, token_format="jwt")
    body = await _list(client, sk, subject=pair.caller["id"], revoked="true", expired="true")
    assert (_ids(body), body["total_count"]) == ([opaque["id"]], 1)


async def test_machine_key_lists_its_own_tokens(client: httpx.AsyncClient, sk: str) -> None:
    """An ak_ key may list its own subject."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    assert _ids(await _list(client, pair.caller_key, subject=pair.caller["id"])) == [created["id"]]


@SQLITE_ONLY
async def test_machine_key_cannot_list_another_subject(client: httpx.AsyncClient, sk: str) -> None:
    """An ak_ key asking for another machine's tokens is 403 authorization_invalid."""
    pair = await make_pair(client, sk)
    await mint(client, pair.caller_key)
    for subject in (pair.caller["id"], UNKNOWN_MACHINE_ID):
        response = await client.get(
            "/v1/m2m_tokens", params={"subject": subject}, headers=auth(pair.receiver_key)
        )
        await assert_rejected(response, status=403, code="authorization_invalid")


async def test_subject_filter_and_other_instance(
    client: httpx.AsyncClient, sk: str, other_sk: str
) -> None:
    """Tokens of one subject only; another instance's sk sees an empty list."""
    pair = await make_pair(client, sk)
    await mint(client, pair.caller_key)
    await mint(client, pair.receiver_key)
    assert (await _list(client, sk, subject=pair.caller["id"]))["total_count"] == 1
    assert await _list(client, other_sk, subject=pair.caller["id"]) == {
        "m2m_tokens": [],
        "total_count": 0,
    }
    assert (await _list(client, sk, subject=UNKNOWN_MACHINE_ID))["total_count"] == 0


@SQLITE_ONLY
async def test_subject_is_required(client: httpx.AsyncClient, sk: str) -> None:
    """A list without subject is 400 missing_query_parameter naming it."""
    for params in [{}, {"subject": ""}, {"limit": "5"}]:
        with case(params):
            response = await client.get("/v1/m2m_tokens", params=params, headers=auth(sk))
            await assert_rejected(
                response, status=400, code="missing_query_parameter", param_name="subject"
            )


@SQLITE_ONLY
async def test_bad_list_parameters_are_400(client: httpx.AsyncClient, sk: str) -> None:
    """Booleans must be true/false, limit 1..100, offset >= 0: else a 400 naming the field."""
    for name, value, code in [
        ("revoked", "maybe", "form_param_format_invalid"),
        ("expired", "yes", "form_param_format_invalid"),
        ("limit", "0", "form_param_value_invalid"),
        ("limit", "101", "form_param_value_invalid"),
        ("limit", "-1", "form_param_value_invalid"),
        ("limit", "ten", "form_param_format_invalid"),
        ("limit", "1.5", "form_param_format_invalid"),
        ("limit", "9" * 30, "form_param_format_invalid"),
        ("offset", "-1", "form_param_value_invalid"),
        ("offset", "1e3", "form_param_format_invalid"),
    ]:
        with case((name, value, code)):
            response = await client.get(
                "/v1/m2m_tokens",
                params={"subject": UNKNOWN_MACHINE_ID, name: value},
                headers=auth(sk),
            )
            await assert_rejected(response, status=400, code=code, param_name=name)


# -- GET /m2m_tokens/{id} ----------------------------------------------------------------------


async def test_get_token_by_id(client: httpx.AsyncClient, sk: str) -> None:
    """The instance key and the owning machine read a token; the shape has no secret."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    for prefix, key in itertools.product(PREFIXES, (sk, pair.caller_key)):
        response = await client.get(f"{prefix}/m2m_tokens/{created['id']}", headers=auth(key))
        assert response.status_code == 200, response.text
        assert_token(response.json())
        assert created["token"] not in response.text


async def test_get_token_others_are_not_found(
    client: httpx.AsyncClient, sk: str, other_sk: str
) -> None:
    """Another machine's token (ak), another instance's, unknown or malformed ids: 404."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    cases = [
        (pair.receiver_key, created["id"]),
        (other_sk, created["id"]),
        (sk, UNKNOWN_TOKEN_ID),
        (sk, created["id"].upper()),
        (sk, "nope"),
    ]
    bodies = []
    for key, token_id in cases:
        response = await client.get(f"/v1/m2m_tokens/{token_id}", headers=auth(key))
        await assert_rejected(response, status=404, code="resource_not_found")
        body = response.json()
        body.pop("clerk_trace_id")
        bodies.append(body)
    assert all(b == bodies[0] for b in bodies)


@SQLITE_ONLY
async def test_list_refuses_a_repeated_query_parameter(client: httpx.AsyncClient, sk: str) -> None:
    """A repeated ``subject`` or ``limit`` is 400, never one of them picked (Schemathesis)."""
    for query in (
        f"subject={UNKNOWN_MACHINE_ID}&subject={UNKNOWN_MACHINE_ID}",
        f"subject={UNKNOWN_MACHINE_ID}&limit=x&limit=5",
        f"subject={UNKNOWN_MACHINE_ID}&revoked=x&revoked=true",
    ):
        response = await client.get(f"/v1/m2m_tokens?{query}", headers=auth(sk))
        name = query.rsplit("&", 1)[1].split("=", 1)[0]
        await assert_rejected(
            response, status=400, code="form_param_format_invalid", param_name=name
        )
