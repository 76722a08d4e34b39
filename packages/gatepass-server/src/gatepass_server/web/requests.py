"""What every handler reads first: the process runtime and the request's JSON form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gatepass_server.web.inputs import Form, read_json_object

if TYPE_CHECKING:
    from collections.abc import Collection

    from starlette.requests import Request

    from gatepass_server.runtime import Runtime

__all__ = ["RUNTIME_KEY", "read_form", "runtime_of"]


RUNTIME_KEY: Final = "gatepass.runtime"
"""Where :class:`~gatepass_server.web.direct.DirectRoutes` puts the runtime in the scope."""


def runtime_of(request: Request) -> Runtime:
    """The runtime the app was built around."""
    runtime: Runtime = request.scope[RUNTIME_KEY]
    return runtime


async def read_form(request: Request, allowed: Collection[str], *, status: int) -> Form:
    """The JSON body as a :class:`Form`; field errors answer ``status`` (422 or 400)."""
    data = await read_json_object(request, runtime_of(request).settings.max_body_bytes)
    return Form(data, allowed=allowed, status=status)
