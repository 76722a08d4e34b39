"""Attack class: credentials in the header and where the server must not look for them.

Missing, malformed, other-scheme, duplicated, non-ASCII and oversized headers are refused;
keys in the query string, cookies or look-alike headers are ignored; every bad key gets the
same 401.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import structlog
from security_support import SQLITE_ONLY, create_machine, refused, without_trace_id

from gatepass_server.domain.keys import SecretKind, checksum, generate_secret
from helpers import auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.runtime import Runtime


async def test_missing_authorization_header_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """No ``Authorization`` header at all is 401 ``authentication_invalid``."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        json={"name": "x"},
        status=401,
        code="authentication_invalid",
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    "template",
    [
        "Basic {key}",
        "Token {key}",
        "Digest {key}",
        "{key}",
        "Bearer",
        "Bearer ",
        "Bearer  {key}",
        "Bearer\t{key}",
        "Bearer {key} {key}",
        "Bearer {key} extra",
        "Bearer {key}\x7f",
        "Bearer: {key}",
        "Bearer={key}",
        " Bearer {key}",
    ],
)
async def test_malformed_authorization_header_is_refused(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, template: str
) -> None:
    """Anything but ``Bearer <key>`` is 401 ``authorization_header_format_invalid``."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        json={"name": "x"},
        headers={"Authorization": template.format(key=sk)},
        status=401,
        code="authorization_header_format_invalid",
        not_echoed=[sk],
    )


@SQLITE_ONLY
@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, sk: str, scheme: str
) -> None:
    """The auth scheme is case-insensitive (RFC 7235 §2.1): lowercase ``bearer`` works."""
    response = await client.get("/v1/machines", headers={"Authorization": f"{scheme} {sk}"})
    assert response.status_code == 200


@SQLITE_ONLY
async def test_duplicated_authorization_header_is_refused(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Two ``Authorization`` headers are refused, even if both carry the valid key."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        json={"name": "x"},
        headers=[("Authorization", f"Bearer {sk}"), ("Authorization", f"Bearer {sk}")],
        status=401,
        code="authorization_header_format_invalid",
        not_echoed=[sk],
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    "value",
    [
        "Bearer sk_test_é".encode(),
        "Bearer sk_test_é".encode("latin-1"),
        "Bearer sk_test_\uff21\uff22\uff23".encode(),
        "Bearer é".encode(),
        b"Bearer \xff\xfe",
    ],
)
async def test_non_ascii_authorization_header_is_refused(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, value: bytes
) -> None:
    """Non-ASCII credentials are refused before any comparison or lookup."""
    await create_machine(client, sk)
    await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        headers={"Authorization": value},
        status=401,
        code="authorization_header_format_invalid",
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("length", "code"),
    [
        (1024, "clerk_key_invalid"),
        (1025, "authorization_header_format_invalid"),
        (2048, "authorization_header_format_invalid"),
        (60_000, "authorization_header_format_invalid"),
    ],
)
async def test_oversized_authorization_header_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, length: int, code: str
) -> None:
    """A header over 1 KiB is refused as malformed; at 1 KiB it is merely an unknown key."""
    value = "Bearer sk_test_" + "a" * (length - len("Bearer sk_test_"))
    assert len(value) == length
    await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        headers={"Authorization": value},
        status=401,
        code=code,
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    "query",
    ["api_key", "key", "secret_key", "token", "authorization", "Authorization", "__session"],
)
async def test_credentials_in_query_string_are_ignored(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, query: str
) -> None:
    """A key in the query string does not authenticate, and is not logged."""
    with structlog.testing.capture_logs() as logs:
        await refused(
            client,
            runtime,
            "POST",
            "/v1/machines",
            params={query: sk if query != "authorization" else f"Bearer {sk}"},
            json={"name": "x"},
            status=401,
            code="authentication_invalid",
            not_echoed=[sk],
        )
    assert sk not in repr(logs)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Cookie", "__session={key}"),
        ("X-API-Key", "{key}"),
        ("Clerk-Secret-Key", "{key}"),
        ("Proxy-Authorization", "Bearer {key}"),
        ("X-Forwarded-Authorization", "Bearer {key}"),
    ],
)
async def test_credentials_in_other_headers_are_ignored(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, name: str, value: str
) -> None:
    """Only ``Authorization`` is read: cookies and look-alike headers do not authenticate."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        json={"name": "x"},
        headers={name: value.format(key=sk)},
        status=401,
        code="authentication_invalid",
        not_echoed=[sk],
    )


def _tampered(key: str) -> str:
    """``key`` with one body character changed (its checksum no longer matches)."""
    index = len(key) - 10
    return key[:index] + ("b" if key[index] != "b" else "c") + key[index + 1 :]


MALFORMED_KEYS = {
    "tampered": _tampered,
    "token_shaped": lambda _: generate_secret(SecretKind.TOKEN),
    "garbage": lambda _: "hunter2",
    "prefix_only": lambda _: "sk_test_",
    "uppercase_prefix": lambda sk: "SK_TEST_" + sk.removeprefix("sk_test_"),
    "long": lambda _: "sk_test_" + "A" * 500,
    "suffixed": lambda sk: sk + "%0A",
}


async def _dead_key(kind: str, client: httpx.AsyncClient, sk: str, runtime: Runtime) -> str:
    if kind == "retired_instance_key":
        instance = await runtime.instances.default()
        await runtime.instances.rotate_key(instance.id, grace_seconds=0)
        return sk
    if kind in {"unknown_test", "unknown_live", "unknown_machine"}:
        kinds = {
            "unknown_test": SecretKind.INSTANCE_TEST,
            "unknown_live": SecretKind.INSTANCE_LIVE,
            "unknown_machine": SecretKind.MACHINE,
        }
        return generate_secret(kinds[kind])
    machine = await create_machine(client, sk)
    if kind == "deleted_machine":
        await client.delete(f"/v1/machines/{machine['id']}", headers=auth(sk))
    else:
        await client.post(
            f"/v1/machines/{machine['id']}/secret_key/rotate",
            json={"previous_token_ttl": 0},
            headers=auth(sk),
        )
    return str(machine["secret_key"])


async def _assert_same_401(client: httpx.AsyncClient, runtime: Runtime, key: str) -> None:
    reference = await client.get("/v1/machines", headers=auth(generate_secret(SecretKind.MACHINE)))
    response, _ = await refused(
        client,
        runtime,
        "GET",
        "/v1/machines",
        headers=auth(key),
        status=401,
        code="clerk_key_invalid",
        not_echoed=[key],
    )
    assert without_trace_id(response) == without_trace_id(reference)


@SQLITE_ONLY
@pytest.mark.parametrize("kind", sorted(MALFORMED_KEYS))
async def test_every_malformed_key_gets_the_same_401(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, kind: str
) -> None:
    """Forged, mistyped and wrong-kind keys are refused before lookup with the common 401."""
    await _assert_same_401(client, runtime, MALFORMED_KEYS[kind](sk))


@pytest.mark.parametrize(
    "kind",
    [
        "unknown_test",
        "unknown_live",
        "unknown_machine",
        "retired_instance_key",
        "deleted_machine",
        "rotated_out_machine",
    ],
)
async def test_every_dead_key_gets_the_same_401(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, kind: str
) -> None:
    """Unknown, retired and deleted-machine keys get the same 401 body as any other bad key."""
    await _assert_same_401(client, runtime, await _dead_key(kind, client, sk, runtime))


async def test_one_changed_character_is_a_different_key(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A key with one body character changed (checksum recomputed) does not authenticate."""
    head = sk[:-6]
    for index in range(len("sk_test_"), len(head), 7):
        for replacement in ("0", "z"):
            if head[index] == replacement:
                continue
            forged = head[:index] + replacement + head[index + 1 :]
            await refused(
                client,
                runtime,
                "GET",
                "/v1/machines",
                headers=auth(forged + checksum(forged)),
                status=401,
                code="clerk_key_invalid",
                not_echoed=[sk],
            )


async def test_failed_authentication_is_not_logged_with_the_key(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A refused key appears neither in the response nor in the access log."""
    key = _tampered(sk)
    with structlog.testing.capture_logs() as logs:
        await refused(
            client,
            runtime,
            "GET",
            "/v1/machines",
            headers=auth(key),
            status=401,
            code="clerk_key_invalid",
            not_echoed=[key, sk],
        )
    assert key not in repr(logs)
    assert sk not in repr(logs)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "authentication_invalid"),
        ({"Authorization": "Basic {key}"}, "authorization_header_format_invalid"),
        ({"Authorization": "Bearer {key} {key}"}, "authorization_header_format_invalid"),
        ({"Authorization": "Bearer " + "a" * 2000}, "authorization_header_format_invalid"),
        ({"Authorization": "Bearer {key}\x7f"}, "authorization_header_format_invalid"),
    ],
)
async def test_token_routes_refuse_bad_credentials_like_the_others(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, headers: dict[str, str], code: str
) -> None:
    """Verify, list and revoke give the header's 401; minting gives its one 401 for all."""
    machine = await create_machine(client, sk)
    filled = {k: v.format(key=machine["secret_key"]) for k, v in headers.items()}
    for method, url, body in (
        ("POST", "/v1/m2m_tokens/verify", {"token": generate_secret(SecretKind.TOKEN)}),
        ("GET", f"/v1/m2m_tokens?subject={machine['id']}", None),
        ("POST", "/v1/m2m_tokens/mt_" + "0" * 32 + "/revoke", {}),
        ("GET", "/v1/m2m_tokens/jwks", None),
    ):
        await refused(
            client,
            runtime,
            method,
            url,
            json=body,
            headers=filled,
            status=401,
            code=code,
        )
    await refused(
        client,
        runtime,
        "POST",
        "/v1/m2m_tokens",
        json={},
        headers=filled,
        status=401,
        code="machine_secret_key_invalid",
    )
