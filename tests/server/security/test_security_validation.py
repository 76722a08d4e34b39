"""Attack class: body and field validation.

Every input hazard of SECURITY.md principle 5 is a clear 4xx before any arithmetic or SQL,
on both backends, and stores nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from security_support import SQLITE_ONLY, UNKNOWN_MACHINE_ID, create_machine, refused

from helpers import auth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from gatepass_server.runtime import Runtime

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def machine(client: httpx.AsyncClient, sk: str) -> dict[str, Any]:
    """A machine to aim the attacks at."""
    return await create_machine(client, sk)


@pytest.mark.parametrize(
    ("method", "url", "body", "param"),
    [
        ("POST", "/v1/machines", {"name": "a\x00b"}, "name"),
        ("PATCH", "/v1/machines/{id}", {"name": "\x00"}, "name"),
        ("POST", "/v1/machines", {"name": "x", "scoped_machines": ["mch_\x00"]}, "scoped_machines"),
        ("POST", "/v1/machines/{id}/scopes", {"to_machine_id": "mch_\x00"}, "to_machine_id"),
        ("GET", "/v1/machines?query=a%00b", None, "query"),
    ],
)
async def test_nul_characters_never_reach_the_database(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    machine: dict[str, Any],
    method: str,
    url: str,
    body: dict[str, Any] | None,
    param: str,
) -> None:
    """NUL (which PostgreSQL refuses) is a 422 naming the field, never a 500."""
    await refused(
        client,
        runtime,
        method,
        url.format(id=machine["id"]),
        json=body,
        headers=auth(sk),
        status=422,
        code="form_param_value_invalid",
        param_name=param,
    )


async def test_nul_in_path_is_404(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, machine: dict[str, Any]
) -> None:
    """A NUL in a path id is simply not a machine."""
    for method, url in (
        ("GET", f"/v1/machines/{machine['id']}%00"),
        ("DELETE", f"/v1/machines/{machine['id']}/scopes/mch_%00"),
    ):
        await refused(
            client, runtime, method, url, headers=auth(sk), status=404, code="resource_not_found"
        )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "\\ud800"}',
        b'{"name": "\\udfff tail"}',
        b'{"\\ud800": "x"}',
        b'{"name": "\xed\xa0\x80"}',
        b'{"name": "\xc0\x80"}',
    ],
    ids=["high", "low", "in-key", "encoded-surrogate", "overlong-nul"],
)
async def test_lone_surrogates_and_invalid_utf8_are_400(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, raw: bytes
) -> None:
    """Text that cannot be UTF-8 is refused as an invalid body."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        content=raw,
        headers={**auth(sk), **JSON},
        status=400,
        code="request_body_invalid",
    )


@pytest.mark.parametrize("query", ["%ED%A0%80", "%FF", "%C0%80"])
async def test_invalid_utf8_in_query_does_not_fail(
    client: httpx.AsyncClient, sk: str, machine: dict[str, Any], query: str
) -> None:
    """Undecodable bytes in ``query`` are replaced, then matched like any text."""
    del machine
    response = await client.get(f"/v1/machines?query={query}", headers=auth(sk))
    assert response.status_code == 200
    assert response.json() == {"data": [], "total_count": 0}


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "url", "field"),
    [
        ("POST", "/v1/machines", "default_token_ttl"),
        ("PATCH", "/v1/machines/{id}", "default_token_ttl"),
        ("POST", "/v1/machines/{id}/secret_key/rotate", "previous_token_ttl"),
    ],
)
@pytest.mark.parametrize("value", [2**63, 2**64, -(2**63) - 1, 10**30])
async def test_integers_beyond_int64_are_refused(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    machine: dict[str, Any],
    method: str,
    url: str,
    field: str,
    value: int,
) -> None:
    """An integer that does not fit 64 bits (``2**63`` into SQLite) is a 422, not a 500."""
    body: dict[str, Any] = {field: value}
    if url == "/v1/machines":
        body["name"] = "x"
    await refused(
        client,
        runtime,
        method,
        url.format(id=machine["id"]),
        json=body,
        headers=auth(sk),
        status=422,
        code="form_param_format_invalid",
        param_name=field,
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("number", "code"),
    [
        (b"9223372036854775807", "form_param_value_invalid"),
        (b"1e308", "form_param_format_invalid"),
        (b"1e-400", "form_param_value_invalid"),
        (b"-0.0", "form_param_value_invalid"),
        (b"1.0000000000000002", "form_param_format_invalid"),
    ],
    ids=["int64-max", "1e308", "1e-400", "-0.0", "just-above-1"],
)
async def test_absurd_but_finite_numbers_are_422(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, number: bytes, code: str
) -> None:
    """Numbers that decode but are no valid TTL are range or format errors, never arithmetic."""
    _, error = await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        content=b'{"name": "x", "default_token_ttl": ' + number + b"}",
        headers={**auth(sk), **JSON},
        status=422,
        code=code,
        param_name="default_token_ttl",
    )
    assert error["meta"] == {"param_name": "default_token_ttl"}


@SQLITE_ONLY
@pytest.mark.parametrize(
    "number",
    [b"1e400", b"-1e400", b"9" * 4301, b"-" + b"9" * 4301, b"NaN", b"Infinity", b"-Infinity"],
    ids=["1e400", "-1e400", "4301-digits", "-4301-digits", "NaN", "Infinity", "-Infinity"],
)
async def test_non_finite_and_huge_numbers_are_400(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, number: bytes
) -> None:
    """Numbers Python cannot handle safely are refused while decoding."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        content=b'{"name": "x", "default_token_ttl": ' + number + b"}",
        headers={**auth(sk), **JSON},
        status=400,
        code="request_body_invalid",
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    "value",
    ["9" * 5000, "1e400", "1e2", "inf", "-inf", "nan", "0x10", "1_0", " 5", "5 ", "٣", "5."],
)
async def test_hazardous_numbers_in_query_are_422(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, value: str
) -> None:
    """``limit`` that is not a plain in-range integer is a 422."""
    await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        params={"limit": value},
        headers=auth(sk),
        status=422,
        code="form_param_format_invalid",
        param_name="limit",
    )


@SQLITE_ONLY
@pytest.mark.parametrize("depth", [1_000, 10_000, 30_000])
async def test_deeply_nested_json_is_400(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, depth: int
) -> None:
    """Deep nesting (a ``RecursionError`` waiting to happen) is refused as an invalid body."""
    content = b'{"name": "x", "scoped_machines": ' + b"[" * depth + b"]" * depth + b"}"
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        content=content,
        headers={**auth(sk), **JSON},
        status=400,
        code="request_body_invalid",
    )


@SQLITE_ONLY
async def test_lying_content_length_is_counted_as_it_streams(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A small declared ``Content-Length`` does not let a large body through."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        content=b'{"name": "x"' + b" " * 100_000 + b"}",
        headers={**auth(sk), **JSON, "Content-Length": "10"},
        status=413,
        code="request_body_too_large",
    )


@SQLITE_ONLY
async def test_streamed_body_without_length_is_capped(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A chunked body with no ``Content-Length`` is cut off at 64 KiB, not buffered whole."""
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"name": "'
        for _ in range(10_000):
            sent += 8192
            yield b"a" * 8192

    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        content=endless(),
        headers={**auth(sk), **JSON},
        status=413,
        code="request_body_too_large",
    )
    assert sent < 10_000 * 8192


@SQLITE_ONLY
@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "10, 10"])
async def test_malformed_content_length_is_400(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, length: str
) -> None:
    """A ``Content-Length`` that is not a number is refused."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        content=b'{"name": "x"}',
        headers={**auth(sk), **JSON, "Content-Length": length},
        status=400,
        code="request_body_invalid",
    )


@pytest.mark.parametrize("name", ["🚀" * 255, "é" * 255, "\u202e" + "a" * 254])
async def test_255_multibyte_characters_fit(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, name: str
) -> None:
    """The name limit counts characters: 255 four-byte characters round-trip; 256 do not."""
    created = await create_machine(client, sk, name=name)
    got = await client.get(f"/v1/machines/{created['id']}", headers=auth(sk))
    assert got.json()["name"] == name
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        json={"name": name + name[-1]},
        headers=auth(sk),
        status=422,
        code="form_param_max_length_exceeded",
        param_name="name",
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    "machine_id", ["m" * 10_000, UNKNOWN_MACHINE_ID + "0", "mch_" + "é" * 27, "mch_../../etc"]
)
async def test_odd_path_ids_are_404(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, machine_id: str
) -> None:
    """Over-long, non-ASCII or path-like ids are not looked up: 404."""
    await refused(
        client,
        runtime,
        "PATCH",
        f"/v1/machines/{machine_id}",
        json={"name": "x"},
        headers=auth(sk),
        status=404,
        code="resource_not_found",
    )


# -- /m2m_tokens bodies: field errors are 400 there (CONTRACT.md §5) ------------------------------


TOKEN_CREATE_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"token_format": 1}, "token_format", "form_param_format_invalid"),
    ({"token_format": "JWT"}, "token_format", "form_param_value_invalid"),
    ({"token_format": "none"}, "token_format", "form_param_value_invalid"),
    ({"seconds_until_expiration": 0}, "seconds_until_expiration", "form_param_value_invalid"),
    ({"seconds_until_expiration": -1}, "seconds_until_expiration", "form_param_value_invalid"),
    ({"seconds_until_expiration": "60"}, "seconds_until_expiration", "form_param_format_invalid"),
    ({"seconds_until_expiration": True}, "seconds_until_expiration", "form_param_format_invalid"),
    (
        {"seconds_until_expiration": 315_360_001},
        "seconds_until_expiration",
        "form_param_value_invalid",
    ),
    ({"claims": []}, "claims", "form_param_format_invalid"),
    ({"claims": "x"}, "claims", "form_param_format_invalid"),
    (
        {"claims": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}},
        "claims",
        "form_param_value_invalid",
    ),
    ({"claims": {"a": "\x00"}}, "claims", "form_param_value_invalid"),
    ({"claims": {"\x00": 1}}, "claims", "form_param_value_invalid"),
    ({"claims": {"a": "x" * 8200}}, "claims", "form_param_value_invalid"),
    ({"min_remaining_ttl_seconds": -1}, "min_remaining_ttl_seconds", "form_param_value_invalid"),
    ({"min_remaining_ttl_seconds": 1.5}, "min_remaining_ttl_seconds", "form_param_format_invalid"),
    ({"min_remaining_ttl_seconds": "1"}, "min_remaining_ttl_seconds", "form_param_format_invalid"),
    ({"min_remaining_ttl_seconds": 3600}, "min_remaining_ttl_seconds", "form_param_value_invalid"),
]


@SQLITE_ONLY
async def test_token_create_field_types_and_ranges_are_400(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Each ill-typed, out-of-range or oversized mint field is a 400 naming it; nothing minted."""
    minter = await create_machine(client, sk)
    for body, field, code in TOKEN_CREATE_CASES:
        try:
            await refused(
                client,
                runtime,
                "POST",
                "/v1/m2m_tokens",
                json=body,
                headers=auth(minter["secret_key"]),
                status=400,
                code=code,
                param_name=field,
            )
        except AssertionError as exc:
            raise AssertionError(f"case {body!r}: {exc}") from exc


@SQLITE_ONLY
async def test_token_revoke_and_verify_field_types_are_400(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Revoke and verify bodies: wrong types, over-long or NUL reasons are 400s naming the field."""
    minter = await create_machine(client, sk)
    token = (
        await client.post("/v1/m2m_tokens", json={}, headers=auth(minter["secret_key"]))
    ).json()
    revoke = f"/v1/m2m_tokens/{token['id']}/revoke"
    verify = "/v1/m2m_tokens/verify"
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        (revoke, {"revocation_reason": 1}, "revocation_reason", "form_param_format_invalid"),
        (revoke, {"revocation_reason": ["a"]}, "revocation_reason", "form_param_format_invalid"),
        (
            revoke,
            {"revocation_reason": "x" * 1001},
            "revocation_reason",
            "form_param_max_length_exceeded",
        ),
        (revoke, {"revocation_reason": "a\x00"}, "revocation_reason", "form_param_value_invalid"),
        (verify, {"token": 1}, "token", "form_param_format_invalid"),
        (verify, {"token": [token["token"]]}, "token", "form_param_format_invalid"),
        (verify, {"token": None}, "token", "form_param_missing"),
        (verify, {}, "token", "form_param_missing"),
        (verify, {"secret": {"token": token["token"]}}, "secret", "form_param_format_invalid"),
    ]
    for url, body, field, code in cases:
        try:
            await refused(
                client,
                runtime,
                "POST",
                url,
                json=body,
                headers=auth(sk),
                status=400,
                code=code,
                param_name=field,
            )
        except AssertionError as exc:
            raise AssertionError(f"case {url} {body!r}: {exc}") from exc


@SQLITE_ONLY
@pytest.mark.parametrize(
    "raw",
    [
        b'{"claims": {"a": "\\ud800"}}',
        b'{"claims": {"\\udc00": 1}}',
        b'{"claims": {"a": NaN}}',
        b'{"claims": {"a": 1e400}}',
        b'{"seconds_until_expiration": Infinity}',
        b'{"claims": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=["surrogate-value", "surrogate-key", "NaN", "1e400", "Infinity", "deep"],
)
async def test_token_create_undecodable_bodies_are_400(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, raw: bytes
) -> None:
    """Lone surrogates, non-finite numbers and deep nesting in a mint body: 400, never a 500."""
    minter = await create_machine(client, sk)
    await refused(
        client,
        runtime,
        "POST",
        "/v1/m2m_tokens",
        content=raw,
        headers={**auth(minter["secret_key"]), **JSON},
        status=400,
        code="request_body_invalid",
    )


async def test_unicode_claims_and_reasons_round_trip(client: httpx.AsyncClient, sk: str) -> None:
    """Astral, combining, RTL and zero-width text survives both backends byte for byte."""
    text = "🚀 é\u0301 \u202ertl\u202c \u200b 中文 \U0010fffd"
    minter = await create_machine(client, sk, name=text)
    created = await client.post(
        "/v1/m2m_tokens",
        json={"claims": {text: [text, {"k": text}]}},
        headers=auth(minter["secret_key"]),
    )
    assert created.status_code == 201, created.text
    revoked = await client.post(
        f"/v1/m2m_tokens/{created.json()['id']}/revoke",
        json={"revocation_reason": text},
        headers=auth(sk),
    )
    assert revoked.json()["revocation_reason"] == text
    assert revoked.json()["claims"] == {text: [text, {"k": text}]}
    got = await client.get(f"/v1/machines/{minter['id']}", headers=auth(sk))
    assert got.json()["name"] == text
