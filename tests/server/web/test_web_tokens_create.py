"""Route 10 (CONTRACT.md §2-4): ``POST /m2m_tokens``, minted by a machine key only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from web_support import PREFIXES, SQLITE_ONLY, assert_api_headers, create_machine
from web_tokens_support import assert_token, case, get_token, make_pair, mint

from gatepass_server.domain.keys import SecretKind, generate_secret, is_well_formed
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


async def _refused_create(
    client: httpx.AsyncClient,
    runtime: Runtime,
    headers: dict[str, str],
    body: Any,
    *,
    status: int,
    code: str,
    param_name: str | None = None,
) -> dict[str, Any]:
    before = await storage_snapshot(runtime)
    response = await client.post("/v1/m2m_tokens", json=body, headers=headers)
    return await assert_rejected(
        response,
        status=status,
        code=code,
        runtime=runtime,
        before=before,
        param_name=param_name,
    )


# -- status, shape, prefixes -----------------------------------------------------------------


async def test_create_is_201_with_the_full_shape(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """201 with every M2MToken key, ``token`` included, on /v1 and without it."""
    pair = await make_pair(client, sk, ttl=60)
    for prefix in PREFIXES:
        response = await client.post(f"{prefix}/m2m_tokens", json={}, headers=auth(pair.caller_key))
        assert response.status_code == 201, response.text
        assert_api_headers(response)
        body = response.json()
        assert_token(body, created=True)
        assert body["subject"] == pair.caller["id"]
        assert body["scopes"] == [pair.receiver["id"]]
        assert body["claims"] is None
        assert (body["revoked"], body["revocation_reason"], body["expired"]) == (
            False,
            None,
            False,
        )
        assert body["last_used_at"] is None
        assert body["created_at"] == body["updated_at"] == clock.now_ms()
        assert body["expiration"] == clock.now_ms() + 60_000
        assert is_well_formed(body["token"], SecretKind.TOKEN)


async def test_token_appears_only_in_the_create_response(
    client: httpx.AsyncClient, sk: str
) -> None:
    """GET, list and verify never carry the bearer string."""
    pair = await make_pair(client, sk)
    created = await mint(client, pair.caller_key)
    token = created["token"]
    shown = await get_token(client, sk, created["id"])
    assert_token(shown)
    assert {k: v for k, v in created.items() if k != "token"} == shown
    listed = await client.get(
        "/v1/m2m_tokens", params={"subject": pair.caller["id"]}, headers=auth(sk)
    )
    verified = await client.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(sk))
    for response in (listed, verified):
        assert response.status_code == 200
        assert token not in response.text


async def test_each_mint_is_a_new_token(client: httpx.AsyncClient, sk: str) -> None:
    """Two mints without reuse give two ids and two secrets."""
    pair = await make_pair(client, sk)
    first, second = await mint(client, pair.caller_key), await mint(client, pair.caller_key)
    assert first["id"] != second["id"]
    assert first["token"] != second["token"]


# -- who may mint --------------------------------------------------------------------------


@SQLITE_ONLY
async def test_create_without_a_working_machine_key_is_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """No key, an unknown or malformed key, a malformed header: machine_secret_key_invalid."""
    labels = ["none", "unknown-ak", "bad-ak", "basic", "empty-bearer", "mt-as-key"]
    for index, headers in enumerate(
        [
            {},
            {"Authorization": "Bearer " + generate_secret(SecretKind.MACHINE)},
            {"Authorization": "Bearer ak_garbage"},
            {"Authorization": "Basic abc"},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer " + generate_secret(SecretKind.TOKEN)},
        ]
    ):
        with case(labels[index]):
            await _refused_create(
                client, runtime, headers, {}, status=401, code="machine_secret_key_invalid"
            )


async def test_create_with_an_instance_key_is_401(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """An sk_ key cannot mint: 401 machine_secret_key_invalid, nothing stored."""
    await _refused_create(
        client, runtime, auth(sk), {}, status=401, code="machine_secret_key_invalid"
    )


async def test_create_with_a_deleted_machines_key_is_401(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """The key of a deleted machine stops minting at once."""
    machine = await create_machine(client, sk)
    await client.delete(f"/v1/machines/{machine['id']}", headers=auth(sk))
    await _refused_create(
        client,
        runtime,
        auth(machine["secret_key"]),
        {},
        status=401,
        code="machine_secret_key_invalid",
    )


# -- token_format ------------------------------------------------------------------------------


async def test_token_format(client: httpx.AsyncClient, sk: str) -> None:
    """Opaque (and null = the default) give an mt_ secret; jwt gives a compact JWS."""
    pair = await make_pair(client, sk)
    for value, jwt_shaped in (("opaque", False), ("jwt", True), (None, False)):
        created = await mint(client, pair.caller_key, token_format=value)
        assert_token(created, created=True)
        assert (created["token"].count(".") == 2) is jwt_shaped, value
        assert created["token"].startswith("mt_") is not jwt_shaped, value


@SQLITE_ONLY
async def test_bad_token_format_is_400(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """Anything but opaque/jwt/null is a 400 naming token_format."""
    pair = await make_pair(client, sk)
    for value, code in [
        ("other", "form_param_value_invalid"),
        ("JWT", "form_param_value_invalid"),
        ("", "form_param_value_invalid"),
        (1, "form_param_format_invalid"),
        (["jwt"], "form_param_format_invalid"),
    ]:
        with case((value, code)):
            await _refused_create(
                client,
                runtime,
                auth(pair.caller_key),
                {"token_format": value},
                status=400,
                code=code,
                param_name="token_format",
            )


# -- seconds_until_expiration --------------------------------------------------------------


async def test_seconds_until_expiration(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """Lifetime = seconds_until_expiration (int or float) or, when null, the machine's TTL."""
    pair = await make_pair(client, sk, ttl=3600)
    cases: list[tuple[float | None, int]] = [
        (120, 120_000),
        (1.5, 1_500),
        (120.0, 120_000),
        (None, 3_600_000),
        (315_360_000, 315_360_000_000),
    ]
    for seconds, lifetime_ms in cases:
        created = await mint(client, pair.caller_key, seconds_until_expiration=seconds)
        assert created["expiration"] == clock.now_ms() + lifetime_ms, seconds


async def test_absent_seconds_uses_the_machine_default_ttl(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """Without the field the machine's default_token_ttl applies, also after it changes."""
    pair = await make_pair(client, sk, ttl=77)
    assert (await mint(client, pair.caller_key))["expiration"] == clock.now_ms() + 77_000
    await client.patch(
        f"/v1/machines/{pair.caller['id']}", json={"default_token_ttl": 5}, headers=auth(sk)
    )
    assert (await mint(client, pair.caller_key))["expiration"] == clock.now_ms() + 5_000


@SQLITE_ONLY
async def test_bad_seconds_until_expiration_is_400(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """Zero, negative, too large, or not a number: 400 naming the field, nothing stored."""
    pair = await make_pair(client, sk)
    labels = [
        "zero",
        "zero-float",
        "negative",
        "too-big",
        "huge",
        "string",
        "bool",
        "array",
        "object",
    ]
    for index, (value, code) in enumerate(
        [
            (0, "form_param_value_invalid"),
            (0.0, "form_param_value_invalid"),
            (-1, "form_param_value_invalid"),
            (315_360_001, "form_param_value_invalid"),
            (10**400, "form_param_value_invalid"),
            ("10", "form_param_format_invalid"),
            (True, "form_param_format_invalid"),
            ([10], "form_param_format_invalid"),
            ({"s": 1}, "form_param_format_invalid"),
        ]
    ):
        with case(labels[index]):
            await _refused_create(
                client,
                runtime,
                auth(pair.caller_key),
                {"seconds_until_expiration": value},
                status=400,
                code=code,
                param_name="seconds_until_expiration",
            )


@SQLITE_ONLY
async def test_non_finite_seconds_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """NaN and 1e400 never become a lifetime: a 400, never a 500."""
    pair = await make_pair(client, sk)
    for raw in [b'{"seconds_until_expiration": NaN}', b'{"seconds_until_expiration": 1e400}']:
        with case(raw):
            before = await storage_snapshot(runtime)
            response = await client.post(
                "/v1/m2m_tokens",
                content=raw,
                headers={**auth(pair.caller_key), "Content-Type": "application/json"},
            )
            assert response.status_code == 400, response.text
            assert response.json()["errors"][0]["code"] in {
                "request_body_invalid",
                "form_param_value_invalid",
            }
            assert await storage_snapshot(runtime) == before


# -- claims --------------------------------------------------------------------------------


async def test_claims_are_stored_as_sent(client: httpx.AsyncClient, sk: str) -> None:
    """A JSON object (or null) comes back unchanged in create and GET."""
    pair = await make_pair(client, sk)
    nested = {"role": "mailer", "n": 1, "nested": {"list": [1, "two", None, True]}}
    for claims in (nested, {}, None):
        created = await mint(client, pair.caller_key, claims=claims)
        assert created["claims"] == claims
        assert (await get_token(client, sk, created["id"]))["claims"] == claims


@SQLITE_ONLY
async def test_bad_claims_are_400(client: httpx.AsyncClient, runtime: Runtime, sk: str) -> None:
    """Not an object, a reserved name, too big, NUL or too deep: 400 naming claims."""
    pair = await make_pair(client, sk)
    labels = ["array", "string", "number", "sub", "scopes", "too-big", "nul", "too-deep"]
    for index, (claims, code) in enumerate(
        [
            ([1, 2], "form_param_format_invalid"),
            ("role", "form_param_format_invalid"),
            (7, "form_param_format_invalid"),
            ({"sub": "mch_x"}, "machine_token_reserved_claim"),
            ({"scopes": "all"}, "machine_token_reserved_claim"),
            ({"a": "x" * 9000}, "form_param_value_invalid"),
            ({"a": "\x00"}, "form_param_value_invalid"),
            ({"a": [[[[[[[[1]]]]]]]]}, "form_param_value_invalid"),
        ]
    ):
        with case(labels[index]):
            await _refused_create(
                client,
                runtime,
                auth(pair.caller_key),
                {"claims": claims},
                status=400,
                code=code,
                param_name="claims",
            )


# -- min_remaining_ttl_seconds ---------------------------------------------------------------


async def test_reuse_returns_the_same_token(client: httpx.AsyncClient, sk: str) -> None:
    """Same claims and scopes with enough life left: the same id and the same secret."""
    pair = await make_pair(client, sk)
    first = await mint(
        client, pair.caller_key, claims={"b": 1, "a": 2}, min_remaining_ttl_seconds=60
    )
    again = await mint(
        client, pair.caller_key, claims={"a": 2, "b": 1}, min_remaining_ttl_seconds=60
    )
    assert_token(again, created=True)
    assert (again["id"], again["token"]) == (first["id"], first["token"])
    listed = await client.get(
        "/v1/m2m_tokens", params={"subject": pair.caller["id"]}, headers=auth(sk)
    )
    assert listed.json()["total_count"] == 1


async def test_reuse_needs_identical_claims(client: httpx.AsyncClient, sk: str) -> None:
    """Different claims (or none) mint a new token."""
    pair = await make_pair(client, sk)
    first = await mint(client, pair.caller_key, claims={"a": 1}, min_remaining_ttl_seconds=60)
    other = await mint(client, pair.caller_key, claims={"a": 2}, min_remaining_ttl_seconds=60)
    bare = await mint(client, pair.caller_key, min_remaining_ttl_seconds=60)
    assert len({first["id"], other["id"], bare["id"]}) == 3


async def test_reuse_needs_identical_scopes(client: httpx.AsyncClient, sk: str) -> None:
    """Once the caller's scopes change, a new token with the new snapshot is minted."""
    pair = await make_pair(client, sk)
    first = await mint(client, pair.caller_key, min_remaining_ttl_seconds=60)
    await client.post(
        f"/v1/machines/{pair.caller['id']}/scopes",
        json={"to_machine_id": pair.bystander["id"]},
        headers=auth(sk),
    )
    second = await mint(client, pair.caller_key, min_remaining_ttl_seconds=60)
    assert second["id"] != first["id"]
    assert sorted(second["scopes"]) == sorted([pair.receiver["id"], pair.bystander["id"]])


async def test_reuse_needs_enough_life_left(
    client: httpx.AsyncClient, sk: str, clock: FixedClock
) -> None:
    """A token with less than min_remaining_ttl_seconds left is not handed out again."""
    pair = await make_pair(client, sk, ttl=100)
    first = await mint(client, pair.caller_key, min_remaining_ttl_seconds=50)
    clock.advance(49_000)
    assert (await mint(client, pair.caller_key, min_remaining_ttl_seconds=50))["id"] == first["id"]
    clock.advance(1_000)
    fresh = await mint(client, pair.caller_key, min_remaining_ttl_seconds=50)
    assert fresh["id"] != first["id"]


async def test_reuse_skips_revoked_tokens(client: httpx.AsyncClient, sk: str) -> None:
    """A revoked token is never handed out again."""
    pair = await make_pair(client, sk)
    first = await mint(client, pair.caller_key, min_remaining_ttl_seconds=60)
    await client.post(f"/v1/m2m_tokens/{first['id']}/revoke", json={}, headers=auth(sk))
    assert (await mint(client, pair.caller_key, min_remaining_ttl_seconds=60))["id"] != first["id"]


async def test_reuse_is_ignored_for_jwt(client: httpx.AsyncClient, sk: str) -> None:
    """JWTs are never deduplicated: each create signs a new one."""
    pair = await make_pair(client, sk)
    first = await mint(client, pair.caller_key, token_format="jwt", min_remaining_ttl_seconds=60)
    second = await mint(client, pair.caller_key, token_format="jwt", min_remaining_ttl_seconds=60)
    assert first["id"] != second["id"]
    assert first["token"] != second["token"]


async def test_reuse_never_hands_out_a_token_minted_without_it(
    client: httpx.AsyncClient, sk: str
) -> None:
    """A token minted without min_remaining_ttl_seconds has no stored secret to hand out."""
    pair = await make_pair(client, sk)
    plain = await mint(client, pair.caller_key)
    reused = await mint(client, pair.caller_key, min_remaining_ttl_seconds=60)
    assert reused["id"] != plain["id"]


@SQLITE_ONLY
async def test_bad_min_remaining_ttl_is_400(
    client: httpx.AsyncClient, runtime: Runtime, sk: str
) -> None:
    """At or above the lifetime, negative or not an integer: 400 naming the field."""
    pair = await make_pair(client, sk, ttl=3600)
    labels = [
        "equal-default",
        "above-default",
        "equal-seconds",
        "negative",
        "fraction",
        "string",
        "bool",
    ]
    for index, (body, code) in enumerate(
        [
            ({"min_remaining_ttl_seconds": 3600}, "form_param_value_invalid"),
            ({"min_remaining_ttl_seconds": 4000}, "form_param_value_invalid"),
            (
                {"seconds_until_expiration": 10, "min_remaining_ttl_seconds": 10},
                "form_param_value_invalid",
            ),
            ({"min_remaining_ttl_seconds": -1}, "form_param_value_invalid"),
            ({"min_remaining_ttl_seconds": 1.5}, "form_param_format_invalid"),
            ({"min_remaining_ttl_seconds": "5"}, "form_param_format_invalid"),
            ({"min_remaining_ttl_seconds": True}, "form_param_format_invalid"),
        ]
    ):
        with case(labels[index]):
            await _refused_create(
                client,
                runtime,
                auth(pair.caller_key),
                body,
                status=400,
                code=code,
                param_name="min_remaining_ttl_seconds",
            )


async def test_min_remaining_ttl_integral_float_is_accepted(
    client: httpx.AsyncClient, sk: str
) -> None:
    """``60.0`` counts as the integer 60 (the SDKs may send floats)."""
    pair = await make_pair(client, sk)
    first = await mint(client, pair.caller_key, min_remaining_ttl_seconds=60.0)
    assert (await mint(client, pair.caller_key, min_remaining_ttl_seconds=60))["id"] == first["id"]


# -- mass assignment and scopes snapshot -------------------------------------------------------


@SQLITE_ONLY
async def test_unknown_fields_are_400(client: httpx.AsyncClient, runtime: Runtime, sk: str) -> None:
    """No mass assignment: any field outside the four inputs is form_param_unknown."""
    pair = await make_pair(client, sk)
    for field in ["subject", "scopes", "id", "instance_id", "token", "expiration", "revoked"]:
        with case(field):
            await _refused_create(
                client,
                runtime,
                auth(pair.caller_key),
                {field: pair.bystander["id"]},
                status=400,
                code="form_param_unknown",
                param_name=field,
            )


async def test_scopes_are_a_snapshot_at_mint_time(client: httpx.AsyncClient, sk: str) -> None:
    """Scopes added or removed later do not change a minted token's scopes."""
    pair = await make_pair(client, sk)
    before = await mint(client, pair.caller_key)
    await client.delete(
        f"/v1/machines/{pair.caller['id']}/scopes/{pair.receiver['id']}", headers=auth(sk)
    )
    after = await mint(client, pair.caller_key)
    assert after["scopes"] == []
    assert (await get_token(client, sk, before["id"]))["scopes"] == [pair.receiver["id"]]


async def test_machine_without_scopes_mints_an_empty_scope_list(
    client: httpx.AsyncClient, sk: str
) -> None:
    """A machine scoped to nobody still mints; its token names no one."""
    lone = await create_machine(client, sk, name="lone")
    assert (await mint(client, lone["secret_key"]))["scopes"] == []


@SQLITE_ONLY
async def test_unreadable_body_is_400(client: httpx.AsyncClient, runtime: Runtime, sk: str) -> None:
    """A body that is not a JSON object is request_body_invalid, nothing stored."""
    pair = await make_pair(client, sk)
    labels = ["array", "truncated", "wrong-type"]
    for index, (content, content_type) in enumerate(
        [(b"[]", "application/json"), (b"{", "application/json"), (b"{}", "text/plain")]
    ):
        with case(labels[index]):
            before = await storage_snapshot(runtime)
            response = await client.post(
                "/v1/m2m_tokens",
                content=content,
                headers={**auth(pair.caller_key), "Content-Type": content_type},
            )
            await assert_rejected(
                response, status=400, code="request_body_invalid", runtime=runtime, before=before
            )


async def test_empty_body_mints_with_defaults(client: httpx.AsyncClient, sk: str) -> None:
    """No body at all is ``{}``: an opaque token with the machine's default TTL."""
    pair = await make_pair(client, sk)
    response = await client.post("/m2m_tokens", headers=auth(pair.caller_key))
    assert response.status_code == 201, response.text
    assert response.json()["token"].startswith("mt_")
