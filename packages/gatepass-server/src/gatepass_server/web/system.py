"""Operational endpoints: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Final

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from gatepass_server.web.requests import runtime_of
from gatepass_server.web.responses import JSON, Handler, json_response

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["OPENAPI_FILE", "ROUTES", "openapi_document"]

OPENAPI_FILE: Final = "openapi.json"
"""The checked-in OpenAPI document, package data beside this module (``web/openapi.py``)."""


class StatusBody(msgspec.Struct):
    """``{"status": "ok"}``."""

    status: str


async def healthz(_request: Request) -> Response:
    """The process is up."""
    return json_response(StatusBody("ok"))


async def readyz(request: Request) -> Response:
    """Storage answers (503 ``service_unavailable`` otherwise)."""
    await runtime_of(request).database.ping()
    return json_response(StatusBody("ok"))


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = runtime_of(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@functools.cache
def openapi_document() -> bytes:
    """The checked-in document, read once per process."""
    return resources.files(__package__).joinpath(OPENAPI_FILE).read_bytes()


async def openapi(_request: Request) -> Response:
    """``GET /v1/openapi.json``: the OpenAPI 3.1 document; no key needed."""
    return Response(openapi_document(), media_type=JSON)


ROUTES: dict[str, dict[str, Handler]] = {
    "/healthz": {"GET": healthz},
    "/readyz": {"GET": readyz},
    "/metrics": {"GET": metrics},
    # NOTE: served with and without /v1 like the API routes (CONTRACT.md §2), so a
    # generated client finds it beside its base URL either way.
    "/v1/openapi.json": {"GET": openapi},
    "/openapi.json": {"GET": openapi},
}
