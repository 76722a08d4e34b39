"""The ASGI application: routes (with and without ``/v1``), error rendering, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from gatepass_server.config import Settings
from gatepass_server.errors import GatepassError, MethodNotAllowed, NotFound
from gatepass_server.observability import LOG_FLUSH_SECONDS, configure_logging, flush_logs
from gatepass_server.runtime import Runtime
from gatepass_server.storage.schema import ensure_current
from gatepass_server.web import jwks, machines, system, tokens
from gatepass_server.web.context import RequestContextMiddleware
from gatepass_server.web.direct import DirectRoutes
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


def _handlers() -> dict[str, Mapping[str, Handler]]:
    """Every path with its handlers by method, in matching order."""
    # NOTE: jwks before tokens: /m2m_tokens/jwks must match before /m2m_tokens/{token_id}.
    api: dict[str, Mapping[str, Handler]] = {**machines.ROUTES, **jwks.ROUTES, **tokens.ROUTES}
    # NOTE: every API route with and without /v1: the JS SDK omits it for some calls,
    # the Python SDK always sends it (CONTRACT.md §2).
    found = {prefix + path: handlers for path, handlers in api.items() for prefix in ("/v1", "")}
    return {**found, **system.ROUTES}


async def _on_gatepass_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatepassError)  # noqa: S101 - registered for this type only  # nosec B101
    return error_response(exc, request_id_of(request.scope))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type only  # nosec B101
    if exc.status_code == 405:  # noqa: PLR2004
        return error_response(
            MethodNotAllowed(headers=dict(exc.headers or {})), request_id_of(request.scope)
        )
    return error_response(NotFound(), request_id_of(request.scope))


async def _on_unexpected(request: Request, _exc: Exception) -> Response:
    # Starlette re-raises after this; the context middleware logs the traceback once.
    return error_response(GatepassError(), request_id_of(request.scope))


async def _flush_logs_periodically() -> None:
    while True:
        await asyncio.sleep(LOG_FLUSH_SECONDS)
        flush_logs()


def create_app(runtime: Runtime, *, owns_runtime: bool = False) -> ASGIApp:
    """Build the app around ``runtime``.

    On start-up the app refuses a schema other than this release's. With
    ``owns_runtime`` it also closes the runtime on shutdown.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await ensure_current(runtime.database)
        await runtime.start()
        flusher = asyncio.create_task(_flush_logs_periodically())
        if owns_runtime:
            # NOTE: what start-up built lives as long as the process: frozen, the collector
            # skips it, so a full collection stops pausing requests for tens of milliseconds.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            flusher.cancel()
            await (runtime.close() if owns_runtime else runtime.stop())
            flush_logs()

    handlers = _handlers()
    routes = {path: (_route(path, by_method), by_method) for path, by_method in handlers.items()}
    app = Starlette(
        routes=[route for route, _ in routes.values()],
        exception_handlers={
            GatepassError: _on_gatepass_error,
            HTTPException: _on_http_exception,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    return RequestContextMiddleware(DirectRoutes(app, routes, runtime), runtime.metrics)


def create_app_from_env() -> ASGIApp:
    """Factory for ``uvicorn --factory`` (one per worker): settings from ``GATEPASS_*``."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(Runtime.build(settings), owns_runtime=True)
