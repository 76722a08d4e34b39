"""Attack class: HTTP level.

Unsupported methods are 405 with ``Allow``, CORS is off, and every response carries
``nosniff``, ``no-store`` and the exact JSON content type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from security_support import SQLITE_ONLY, UNKNOWN_MACHINE_ID, refused

from helpers import auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.runtime import Runtime

EVIL_ORIGIN = "https://evil.example"


@SQLITE_ONLY
@pytest.mark.parametrize("method", ["TRACE", "PUT", "CONNECT", "PROPFIND", "FOO"])
async def test_unsupported_methods_are_405_with_allow(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, method: str
) -> None:
    """Unknown and unsupported methods are 405 with ``Allow``; TRACE echoes nothing."""
    response, _ = await refused(
        client,
        runtime,
        method,
        "/v1/machines",
        headers=auth(sk),
        status=405,
        code="method_not_allowed",
        not_echoed=[sk],
    )
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "HEAD", "POST"}


@SQLITE_ONLY
@pytest.mark.parametrize(
    "path", ["/v1/machines", f"/v1/machines/{UNKNOWN_MACHINE_ID}", "/machines", "/healthz"]
)
async def test_cors_preflight_is_refused(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, path: str
) -> None:
    """A CORS preflight gets 405 and no ``Access-Control-*`` header: browsers may not call."""
    response, _ = await refused(
        client,
        runtime,
        "OPTIONS",
        path,
        headers={
            **auth(sk),
            "Origin": EVIL_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
        status=405,
        code="method_not_allowed",
        not_echoed=[sk],
    )
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


async def test_cross_origin_requests_get_no_cors_grant(client: httpx.AsyncClient, sk: str) -> None:
    """A request with ``Origin`` is served without any ``Access-Control-Allow-*`` header."""
    created = await client.post(
        "/v1/machines", json={"name": "x"}, headers={**auth(sk), "Origin": EVIL_ORIGIN}
    )
    assert created.status_code == 200
    assert not [h for h in created.headers if h.lower().startswith("access-control-")]
    assert EVIL_ORIGIN not in str(created.headers)


def _assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff", response.request.url
    assert response.headers.get_list("cache-control") == ["no-store"], response.request.url
    assert response.headers["content-type"] == "application/json", response.request.url


@SQLITE_ONLY
async def test_secret_bearing_and_plain_successes_have_security_headers(
    client: httpx.AsyncClient, sk: str
) -> None:
    """Responses carrying a secret, and all other successes, are nosniff and no-store."""
    response = await client.post("/v1/machines", json={"name": "x"}, headers=auth(sk))
    machine = response.json()
    responses = [
        response,
        await client.get(f"/v1/machines/{machine['id']}/secret_key", headers=auth(sk)),
        await client.post(
            f"/v1/machines/{machine['id']}/secret_key/rotate",
            json={"previous_token_ttl": 0},
            headers=auth(sk),
        ),
        await client.get("/v1/machines", headers=auth(sk)),
        await client.get("/healthz"),
        await client.get("/readyz"),
    ]
    for response in responses:
        assert response.status_code == 200
        _assert_security_headers(response)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "url", "extra", "status", "code"),
    [
        ("GET", "/v1/machines", {}, 401, "authentication_invalid"),
        (
            "GET",
            "/v1/machines",
            {"headers": {"Authorization": "Basic x"}},
            401,
            "authorization_header_format_invalid",
        ),
        ("GET", f"/v1/machines/{UNKNOWN_MACHINE_ID}", {"sk": True}, 404, "resource_not_found"),
        ("PUT", "/v1/machines", {"sk": True}, 405, "method_not_allowed"),
        ("GET", "/nowhere", {}, 404, "resource_not_found"),
        ("POST", "/v1/machines", {"sk": True, "content": b"["}, 400, "request_body_invalid"),
        (
            "POST",
            "/v1/machines",
            {"sk": True, "json": {"name": ""}},
            422,
            "form_param_value_invalid",
        ),
        (
            "POST",
            "/v1/machines",
            {"sk": True, "content": b" " * 70_000},
            413,
            "request_body_too_large",
        ),
    ],
)
async def test_every_kind_of_error_has_security_headers(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    method: str,
    url: str,
    extra: dict[str, Any],
    status: int,
    code: str,
) -> None:
    """Each kind of error response is nosniff, no-store and exactly application/json."""
    kwargs = dict(extra)
    if kwargs.pop("sk", False):
        kwargs["headers"] = auth(sk)
    response, _ = await refused(
        client, runtime, method, url, status=status, code=code, not_echoed=[sk], **kwargs
    )
    _assert_security_headers(response)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/m2m_tokens/verify", {"POST"}),
        ("GET", "/m2m_tokens/verify", {"POST"}),
        ("DELETE", "/v1/m2m_tokens/verify", {"POST"}),
        ("POST", "/v1/m2m_tokens/revocations", {"GET", "HEAD"}),
        ("POST", "/v1/m2m_tokens/jwks", {"GET", "HEAD"}),
        ("DELETE", "/v1/jwks", {"GET", "HEAD"}),
        ("DELETE", "/v1/m2m_tokens", {"GET", "HEAD", "POST"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
    ],
)
async def test_unsupported_method_on_a_fixed_path_is_405_not_a_lookup(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, method: str, path: str, allow: set[str]
) -> None:
    """A fixed path never falls through to a sibling ``{id}`` route: 405 with its own Allow.

    Regression: ``GET /v1/m2m_tokens/verify`` was served by ``/m2m_tokens/{token_id}`` as a
    lookup of the token id "verify" and answered 404 "Token not found".
    """
    response, _ = await refused(
        client,
        runtime,
        method,
        path,
        headers=auth(sk),
        status=405,
        code="method_not_allowed",
    )
    assert {m.strip() for m in response.headers["allow"].split(",")} == allow


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "suffix", "allow"),
    [
        ("PUT", "/machines/{machine}", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("POST", "/machines/{machine}", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("PATCH", "/machines/{machine}/scopes", {"POST"}),
        ("GET", "/machines/{machine}/secret_key/rotate", {"POST"}),
        ("DELETE", "/machines/{machine}/secret_key", {"GET", "HEAD"}),
        ("POST", "/m2m_tokens/{token}", {"GET", "HEAD"}),
        ("GET", "/m2m_tokens/{token}/revoke", {"POST"}),
        ("DELETE", "/m2m_tokens/{token}", {"GET", "HEAD"}),
    ],
)
@pytest.mark.parametrize("prefix", ["/v1", ""])
async def test_unsupported_methods_on_item_paths_are_405_with_allow(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    method: str,
    suffix: str,
    allow: set[str],
    prefix: str,
) -> None:
    """A wrong method on a path with ids is 405 with its Allow list (the object unknown)."""
    path = prefix + suffix.format(machine=UNKNOWN_MACHINE_ID, token="mt_" + "0" * 32)
    response, _ = await refused(
        client,
        runtime,
        method,
        path,
        headers=auth(sk),
        status=405,
        code="method_not_allowed",
    )
    assert {m.strip() for m in response.headers["allow"].split(",")} == allow
