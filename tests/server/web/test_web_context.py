"""The request-context middleware's last resort: an unexpected exception is a clean 500."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import structlog

from gatepass_server.observability import Metrics
from gatepass_server.web.context import RequestContextMiddleware

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

SECRET = "sk_test_" + "A" * 38


async def _broken_app(scope: Scope, receive: Receive, send: Send) -> None:
    del scope, receive, send
    msg = f"bug while handling {SECRET}"
    raise RuntimeError(msg)


async def test_unexpected_exception_is_enveloped_500_and_logged_once() -> None:
    """A bug answers 500 in the error envelope, logs the traceback, and leaks no secret."""
    app = RequestContextMiddleware(_broken_app, Metrics())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gatepass.test") as http:
        with structlog.testing.capture_logs() as logs:
            response = await http.get("/v1/machines")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["errors"][0]["code"] == "internal_error"
    assert body["clerk_trace_id"] == response.headers["x-request-id"]
    assert SECRET not in response.text
    errors = [entry for entry in logs if entry["event"] == "unhandled_error"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == body["clerk_trace_id"]
    access = [entry for entry in logs if entry["event"] == "request"]
    assert access[0]["status"] == 500
