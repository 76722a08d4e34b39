"""CONTRACT.md §5 on routes 1-9: each error row, the order of checks, the envelope."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import structlog
from web_support import (
    BODY_ROUTES,
    PREFIXES,
    SK_ROUTES,
    SQLITE_ONLY,
    UNKNOWN_MACHINE_ID,
    Route,
    assert_api_headers,
    create_machine,
    route_id,
)

from gatepass_server.domain.keys import SecretKind, generate_secret
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from gatepass_server.runtime import Runtime

MAX_BODY = 64 * 1024


@pytest.fixture
async def pair(client: httpx.AsyncClient, sk: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two machines of the default instance, the first scoped to the second."""
    target = await create_machine(client, sk, name="target")
    source = await create_machine(client, sk, name="source", scoped_machines=[target["id"]])
    return source, target


async def _call(
    client: httpx.AsyncClient,
    route: Route,
    source_id: str,
    target_id: str,
    headers: dict[str, str],
    prefix: str = "/v1",
) -> httpx.Response:
    return await client.request(
        route.method,
        route.url(source_id, target_id, prefix),
        json=route.json(target_id),
        headers=headers,
    )


@SQLITE_ONLY
@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("route", SK_ROUTES, ids=route_id)
async def test_no_authorization_is_401(
    client: httpx.AsyncClient,
    runtime: Runtime,
    pair: tuple[dict[str, Any], dict[str, Any]],
    route: Route,
    prefix: str,
) -> None:
    """Without an ``Authorization`` header every route is 401 ``authentication_invalid``."""
    source, target = pair
    before = await storage_snapshot(runtime)
    response = await _call(client, route, source["id"], target["id"], {}, prefix)
    await assert_rejected(
        response, status=401, code="authentication_invalid", runtime=runtime, before=before
    )


@SQLITE_ONLY
@pytest.mark.parametrize("route", SK_ROUTES, ids=route_id)
async def test_bad_header_format_is_401(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    pair: tuple[dict[str, Any], dict[str, Any]],
    route: Route,
) -> None:
    """A header that is not ``Bearer <key>`` is 401 ``authorization_header_format_invalid``."""
    source, target = pair
    before = await storage_snapshot(runtime)
    headers = {"Authorization": f"Basic {sk}"}
    response = await _call(client, route, source["id"], target["id"], headers)
    await assert_rejected(
        response,
        status=401,
        code="authorization_header_format_invalid",
        runtime=runtime,
        before=before,
        not_echoed=[sk],
    )


@SQLITE_ONLY
@pytest.mark.parametrize("route", SK_ROUTES, ids=route_id)
async def test_unknown_key_is_401(
    client: httpx.AsyncClient,
    runtime: Runtime,
    pair: tuple[dict[str, Any], dict[str, Any]],
    route: Route,
) -> None:
    """A well-formed key nobody issued is 401 ``clerk_key_invalid`` on every route."""
    source, target = pair
    key = generate_secret(SecretKind.INSTANCE_TEST)
    before = await storage_snapshot(runtime)
    response = await _call(client, route, source["id"], target["id"], auth(key))
    await assert_rejected(
        response,
        status=401,
        code="clerk_key_invalid",
        runtime=runtime,
        before=before,
        not_echoed=[key],
    )


@SQLITE_ONLY
@pytest.mark.parametrize("exists", [True, False], ids=["existing", "unknown"])
@pytest.mark.parametrize("route", SK_ROUTES, ids=route_id)
async def test_machine_key_is_403_whether_or_not_object_exists(
    client: httpx.AsyncClient,
    runtime: Runtime,
    pair: tuple[dict[str, Any], dict[str, Any]],
    route: Route,
    exists: bool,
) -> None:
    """An ``ak_`` key on any sk-only route is 403 before any lookup: existence does not leak."""
    source, target = pair
    source_id, target_id = (
        (source["id"], target["id"]) if exists else (UNKNOWN_MACHINE_ID, UNKNOWN_MACHINE_ID)
    )
    key = source["secret_key"]
    before = await storage_snapshot(runtime)
    response = await _call(client, route, source_id, target_id, auth(key))
    error = await assert_rejected(
        response,
        status=403,
        code="authorization_invalid",
        runtime=runtime,
        before=before,
        not_echoed=[key],
    )
    assert error["meta"] == {}


@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
async def test_machine_key_with_bad_body_is_still_403(
    client: httpx.AsyncClient,
    runtime: Runtime,
    pair: tuple[dict[str, Any], dict[str, Any]],
    route: Route,
) -> None:
    """Route permission is checked before the body is read: a broken body still gets 403."""
    source, target = pair
    before = await storage_snapshot(runtime)
    response = await client.request(
        route.method,
        route.url(UNKNOWN_MACHINE_ID, target["id"]),
        content=b"{not json",
        headers={**auth(source["secret_key"]), "Content-Type": "application/json"},
    )
    await assert_rejected(
        response, status=403, code="authorization_invalid", runtime=runtime, before=before
    )


UNREADABLE = [
    (b'{"name": ', "application/json"),
    (b"[]", "application/json"),
    (b'["name"]', "application/json"),
    (b'"name"', "application/json"),
    (b"5", "application/json"),
    (b"null", "application/json"),
    (b"{} {}", "application/json"),
    (b'{"name": "\xff"}', "application/json"),
    (b'{"name": NaN}', "application/json"),
    (b'{"name": Infinity}', "application/json"),
    (b'{"name": "x"}', "text/plain"),
    (b'{"name": "x"}', "application/x-www-form-urlencoded"),
    (b"name=x", "application/x-www-form-urlencoded"),
    (b'{"name": "x"}', ""),
]


async def _send_raw(
    client: httpx.AsyncClient, sk: str, route: Route, content: bytes, content_type: str
) -> httpx.Response:
    headers = auth(sk)
    if content_type:
        headers["Content-Type"] = content_type
    return await client.request(
        route.method,
        route.url(UNKNOWN_MACHINE_ID, UNKNOWN_MACHINE_ID),
        content=content,
        headers=headers,
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("content", "content_type"),
    UNREADABLE,
    ids=lambda v: v.decode("latin-1") if isinstance(v, bytes) else v or "none",
)
async def test_unreadable_body_is_400(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, content: bytes, content_type: str
) -> None:
    """Malformed JSON, a non-object, or a body without JSON content type is 400."""
    before = await storage_snapshot(runtime)
    response = await _send_raw(client, sk, SK_ROUTES[1], content, content_type)
    await assert_rejected(
        response, status=400, code="request_body_invalid", runtime=runtime, before=before
    )


@SQLITE_ONLY
@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
async def test_every_body_route_refuses_unreadable_bodies(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, route: Route
) -> None:
    """Each route with a body reads it the same strict way, before looking anything up."""
    for content, content_type in UNREADABLE:
        before = await storage_snapshot(runtime)
        response = await _send_raw(client, sk, route, content, content_type)
        await assert_rejected(
            response, status=400, code="request_body_invalid", runtime=runtime, before=before
        )


async def test_json_content_type_with_parameters_is_accepted(
    client: httpx.AsyncClient, sk: str
) -> None:
    """``application/json; charset=utf-8`` (any case) is JSON."""
    response = await client.post(
        "/v1/machines",
        content=b'{"name": "x"}',
        headers={**auth(sk), "Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200


async def test_empty_body_reads_as_empty_object(client: httpx.AsyncClient, sk: str) -> None:
    """An empty body is ``{}``: the missing field is named."""
    response = await client.post("/v1/machines", content=b"", headers=auth(sk))
    await assert_rejected(response, status=422, code="form_param_missing", param_name="name")


def _padded(size: int) -> bytes:
    """A valid create body of exactly ``size`` bytes."""
    head = b'{"name": "padded"'
    return head + b" " * (size - len(head) - 1) + b"}"


async def test_body_at_limit_is_accepted(client: httpx.AsyncClient, sk: str) -> None:
    """A body of exactly 64 KiB is read."""
    response = await client.post(
        "/v1/machines",
        content=_padded(MAX_BODY),
        headers={**auth(sk), "Content-Type": "application/json"},
    )
    assert response.status_code == 200


@SQLITE_ONLY
@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)
async def test_body_over_limit_is_413(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    pair: tuple[dict[str, Any], dict[str, Any]],
    route: Route,
    streamed: bool,
) -> None:
    """A body over 64 KiB is 413, with or without ``Content-Length``."""
    source, target = pair
    body = _padded(MAX_BODY + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    before = await storage_snapshot(runtime)
    response = await client.request(
        route.method,
        route.url(source["id"], target["id"]),
        content=chunks() if streamed else body,
        headers={**auth(sk), "Content-Type": "application/json"},
    )
    if streamed:
        assert "content-length" not in response.request.headers
    await assert_rejected(
        response, status=413, code="request_body_too_large", runtime=runtime, before=before
    )


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("path", "method", "allow"),
    [
        ("/machines", "PUT", {"GET", "HEAD", "POST"}),
        ("/machines", "DELETE", {"GET", "HEAD", "POST"}),
        (f"/machines/{UNKNOWN_MACHINE_ID}", "POST", {"GET", "HEAD", "PATCH", "DELETE"}),
        (f"/machines/{UNKNOWN_MACHINE_ID}", "PUT", {"GET", "HEAD", "PATCH", "DELETE"}),
        (f"/machines/{UNKNOWN_MACHINE_ID}/secret_key", "POST", {"GET", "HEAD"}),
        (f"/machines/{UNKNOWN_MACHINE_ID}/secret_key/rotate", "GET", {"POST"}),
        (f"/machines/{UNKNOWN_MACHINE_ID}/scopes", "GET", {"POST"}),
        (f"/machines/{UNKNOWN_MACHINE_ID}/scopes/{UNKNOWN_MACHINE_ID}", "GET", {"DELETE"}),
        (f"/machines/{UNKNOWN_MACHINE_ID}/scopes/{UNKNOWN_MACHINE_ID}", "OPTIONS", {"DELETE"}),
    ],
)
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_unsupported_method_is_405_with_allow(
    client: httpx.AsyncClient, sk: str, path: str, method: str, allow: set[str], prefix: str
) -> None:
    """A wrong method is 405 ``method_not_allowed`` in the envelope, listing the methods."""
    response = await client.request(method, prefix + path, headers=auth(sk))
    await assert_rejected(response, status=405, code="method_not_allowed")
    assert_api_headers(response)
    assert {m.strip() for m in response.headers["allow"].split(",")} == allow


@SQLITE_ONLY
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1",
        "/v1/",
        "/v1/nothing",
        "/v2/machines",
        "/v1/machines/",
        "/v1/v1/machines",
        f"/v1/machines/{UNKNOWN_MACHINE_ID}/extra",
        f"/v1/machines/{UNKNOWN_MACHINE_ID}/secret_key/",
        "/V1/MACHINES",
    ],
)
async def test_unknown_path_is_404_envelope(client: httpx.AsyncClient, sk: str, path: str) -> None:
    """A path that is not a route is 404 ``resource_not_found`` in the envelope."""
    response = await client.get(path, headers=auth(sk))
    await assert_rejected(response, status=404, code="resource_not_found")
    assert_api_headers(response)


async def test_head_is_served_like_get(client: httpx.AsyncClient, sk: str) -> None:
    """HEAD on a GET route answers like GET, without a body."""
    response = await client.head("/v1/machines", headers=auth(sk))
    assert response.status_code == 200
    assert response.content == b""


async def test_sdk_headers_are_accepted_and_ignored(client: httpx.AsyncClient, sk: str) -> None:
    """``Clerk-API-Version`` and ``X-Clerk-SDK`` change nothing."""
    for version in ("2025-11-10", "2026-05-12", "1999-01-01"):
        response = await client.post(
            "/v1/machines",
            json={"name": "x"},
            headers={**auth(sk), "Clerk-API-Version": version, "X-Clerk-SDK": "js/3.0"},
        )
        assert response.status_code == 200


async def test_trace_id_matches_header_and_access_log(client: httpx.AsyncClient, sk: str) -> None:
    """``clerk_trace_id`` is the ``X-Request-Id`` and the id of that request's log line."""
    with structlog.testing.capture_logs() as logs:
        rejected = await client.get(f"/v1/machines/{UNKNOWN_MACHINE_ID}", headers=auth(sk))
        accepted = await client.get("/v1/machines?limit=1", headers=auth(sk))
    trace_id = rejected.json()["clerk_trace_id"]
    assert trace_id == rejected.headers["x-request-id"]
    assert accepted.headers["x-request-id"] != trace_id
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert [line["request_id"] for line in lines] == [trace_id, accepted.headers["x-request-id"]]
    assert lines[0]["status"] == 404
    assert lines[0]["method"] == "GET"
    assert lines[0]["route"] == "/v1/machines/{machine_id}"
    assert lines[1]["status"] == 200
    assert sk not in repr(logs)


async def test_every_error_has_a_fresh_trace_id(client: httpx.AsyncClient) -> None:
    """Two failing requests carry different trace ids."""
    first = await client.get("/v1/machines")
    second = await client.get("/v1/machines")
    assert first.json()["clerk_trace_id"] != second.json()["clerk_trace_id"]
