"""Per-request context: request id, access log, metrics, security headers, last-resort 500.

Pure ASGI so that it wraps everything, including errors raised before routing.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from gatepass_server.errors import GatepassError
from gatepass_server.observability import Metrics, logger
from gatepass_server.web.responses import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestContextMiddleware"]

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    # NOTE: API responses may carry secrets (SECURITY.md principle 3); no cache keeps any.
    (b"cache-control", b"no-store"),
]


class RequestContextMiddleware:
    """Give each request an id (the ``clerk_trace_id``) and one access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # NOTE: a trace id is a handle, not a secret: the fast generator will do.
        request_id = f"{random.getrandbits(128):032x}"  # nosec B311  # a handle (NOTE above)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_context(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                message["headers"] = [
                    *headers,
                    *_SECURITY_HEADERS,
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except asyncio.CancelledError:
            # NOTE: the request was abandoned (the client left, or shutdown cut a long poll):
            # logged as nginx's 499, not as a 500 the server never sent.
            if not response_started:
                status = 499
            raise
        except Exception:  # noqa: BLE001 - the last resort: log it and answer 500
            logger.exception("unhandled_error", request_id=request_id, path=scope.get("path", ""))
            if not response_started:
                response = error_response(GatepassError(), request_id)
                await response(scope, receive, send_with_context)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.count_request(route, scope["method"], status, elapsed)
            logger.info(
                "request",
                request_id=request_id,
                method=scope["method"],
                path=scope.get("path", ""),
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                client=(scope.get("client") or ("", 0))[0],
            )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
