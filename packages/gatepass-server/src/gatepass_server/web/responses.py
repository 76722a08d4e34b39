"""Every response body leaves through here: exact content type, one error renderer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gatepass_server.web.wire import ErrorBody, ErrorsBody

if TYPE_CHECKING:
    from gatepass_server.errors import GatepassError

__all__ = ["JSON", "Handler", "error_response", "json_response", "request_id_of"]

# NOTE: exactly this, no charset: the JS SDK compares the string (CONTRACT.md §5).
JSON: Final = "application/json"

Handler: TypeAlias = Callable[[Request], Awaitable[Response]]
"""A route handler; a module's ``ROUTES`` maps path → method → handler."""

_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Encode a wire struct as the response."""
    return Response(_encoder.encode(body), status_code=status, headers=headers, media_type=JSON)


def request_id_of(scope: dict[str, Any] | Any) -> str:
    """The request id the context middleware put in the ASGI scope."""
    state = scope.get("state") or {}
    return str(state.get("request_id", ""))


def error_response(error: GatepassError, request_id: str) -> Response:
    """Render any :class:`GatepassError` in the Clerk error envelope."""
    body = ErrorsBody(
        errors=[
            ErrorBody(
                message=error.message,
                long_message=error.long_message,
                code=error.code_for(),
                meta=error.meta,
            ),
        ],
        clerk_trace_id=request_id,
    )
    return json_response(body, error.status_for(), headers=error.headers)
