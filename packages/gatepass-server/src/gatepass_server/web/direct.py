"""Exact-path dispatch in front of the router: the hot path of DESIGN.md without the framework.

A request whose path is one of the fixed API paths (``/v1/m2m_tokens/verify``,
``/v1/machines``, …) and whose method that path serves goes straight to its handler: no
router scan, no framework middleware. The handler and the error renderer are the ones the
router would have called, so the answer is the same byte for byte. Everything else (paths
with ids, unknown paths) goes to the wrapped app; a method a fixed path does not serve
is a 405 here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from gatepass_server.errors import GatepassError, MethodNotAllowed
from gatepass_server.web.requests import RUNTIME_KEY
from gatepass_server.web.responses import error_response, request_id_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send

    from gatepass_server.runtime import Runtime
    from gatepass_server.web.responses import Handler

__all__ = ["DirectRoutes"]


class DirectRoutes:
    """Serve ``routes`` by exact path and method; hand anything else to ``app``.

    ``routes`` maps a path to its route (kept in the scope, as the router would, for the
    metrics' route label) and its handlers by method.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, tuple[Route, Mapping[str, Handler]]],
        runtime: Runtime,
    ) -> None:
        self.app = app
        self._routes = {path: found for path, found in routes.items() if "{" not in path}
        self._runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call; every handler finds the runtime in the scope."""
        scope[RUNTIME_KEY] = self._runtime
        found = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, handlers = found
        method = scope["method"]
        handler = handlers.get("GET" if method == "HEAD" else method)
        if handler is None:
            # NOTE: answered here, not by the router, which would hand a path such as
            # GET /v1/m2m_tokens/verify to /m2m_tokens/{token_id} and say "token not found":
            # a method a fixed path does not serve is 405 with its Allow list (Starlette's).
            allow = {"Allow": ", ".join(sorted(route.methods or ()))}
            response = error_response(MethodNotAllowed(headers=allow), request_id_of(scope))
            await response(scope, receive, send)
            return
        scope["app"] = self.app
        scope["route"] = route
        try:
            response = await handler(Request(scope, receive, send))
        except GatepassError as exc:
            response = error_response(exc, request_id_of(scope))
        await response(scope, receive, send)
