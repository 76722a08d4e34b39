"""The request-context middleware's last resort: an unexpected exception is a clean 500."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest
import structlog

from gatepass_server.observability import Metrics
from gatepass_server.web.context import RequestContextMiddleware

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

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


async def test_an_abandoned_request_is_logged_as_499_not_500() -> None:
    """A request cancelled before it answered (shutdown cutting a long poll) is not a 500."""

    async def waiting_app(scope: Scope, receive: Receive, send: Send) -> None:
        del scope, receive, send
        await asyncio.Event().wait()

    app = RequestContextMiddleware(waiting_app, Metrics())
    scope: Scope = {"type": "http", "method": "GET", "path": "/v1/m2m_tokens/revocations"}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        del message

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    access = [entry for entry in logs if entry["event"] == "request"]
    assert [entry["status"] for entry in access] == [499]
    assert not [entry for entry in logs if entry["event"] == "unhandled_error"]
