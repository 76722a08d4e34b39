"""Operational endpoints: liveness, readiness, metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from gatepass_server.web.requests import runtime_of
from gatepass_server.web.responses import Handler, json_response

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["ROUTES"]


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


ROUTES: dict[str, dict[str, Handler]] = {
    "/healthz": {"GET": healthz},
    "/readyz": {"GET": readyz},
    "/metrics": {"GET": metrics},
}
