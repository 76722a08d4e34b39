"""The ASGI application: routes (with and without ``/v1``), error rendering, lifecycle."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from gatepass_server.config import Settings
from gatepass_server.errors import GatepassError, MethodNotAllowed, NotFound
from gatepass_server.observability import configure_logging
from gatepass_server.runtime import Runtime
from gatepass_server.storage.schema import ensure_current
from gatepass_server.web import jwks, machines, system, tokens
from gatepass_server.web.context import RequestContextMiddleware
from gatepass_server.web.responses import error_response, request_id_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp

    from gatepass_server.web.responses import Handler

__all__ = ["create_app", "create_app_from_env"]


def _route(path: str, handlers: Mapping[str, Handler]) -> Route:
    """One route per path, so a wrong method gets 405 with the full ``Allow`` list."""

    async def dispatch(request: Request) -> Response:
        handler = handlers[request.method if request.method != "HEAD" else "GET"]
        return await handler(request)

    return Route(path, dispatch, methods=list(handlers), name=path)


def _routes() -> list[Route]:
    # NOTE: jwks before tokens: /m2m_tokens/jwks must match before /m2m_tokens/{token_id}.
    api: dict[str, Mapping[str, Handler]] = {**machines.ROUTES, **jwks.ROUTES, **tokens.ROUTES}
    # NOTE: every API route with and without /v1: the JS SDK omits it for some calls,
    # the Python SDK always sends it (CONTRACT.md §2).
    found = [
        _route(prefix + path, handlers) for path, handlers in api.items() for prefix in ("/v1", "")
    ]
    found += [_route(path, handlers) for path, handlers in system.ROUTES.items()]
    return found


async def _on_gatepass_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatepassError)  # noqa: S101 - registered for this type only
    return error_response(exc, request_id_of(request.scope))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type only
    if exc.status_code == 405:  # noqa: PLR2004
        return error_response(
            MethodNotAllowed(headers=dict(exc.headers or {})), request_id_of(request.scope)
        )
    return error_response(NotFound(), request_id_of(request.scope))


async def _on_unexpected(request: Request, _exc: Exception) -> Response:
    # Starlette re-raises after this; the context middleware logs the traceback once.
    return error_response(GatepassError(), request_id_of(request.scope))


def create_app(runtime: Runtime, *, owns_runtime: bool = False) -> ASGIApp:
    """Build the app around ``runtime``.

    On start-up the app refuses a schema other than this release's. With
    ``owns_runtime`` it also closes the runtime on shutdown.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await ensure_current(runtime.database)
        await runtime.start()
        try:
            yield
        finally:
            await (runtime.close() if owns_runtime else runtime.stop())

    app = Starlette(
        routes=_routes(),
        exception_handlers={
            GatepassError: _on_gatepass_error,
            HTTPException: _on_http_exception,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.runtime = runtime
    return RequestContextMiddleware(app, runtime.metrics)


def create_app_from_env() -> ASGIApp:
    """Factory for ``uvicorn --factory`` (one per worker): settings from ``GATEPASS_*``."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(Runtime.build(settings), owns_runtime=True)
