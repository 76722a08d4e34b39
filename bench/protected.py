"""The baseline app behind the SDK's ASGI middleware: what protecting a route costs.

``create_app`` (a uvicorn factory) wraps :mod:`bench.hello` in
:class:`gatepass.asgi.GatepassMiddleware`, verifying as the machine whose key is in
``GATEPASS_MACHINE_SECRET_KEY`` against the server at ``GATEPASS_API_URL``.
"""

from __future__ import annotations

from bench import hello
from gatepass import AsyncGatepass, TokenType
from gatepass.asgi import GatepassMiddleware

__all__ = ["create_app"]


def create_app() -> GatepassMiddleware:
    """The hello-world app, accepting only M2M tokens (JWT or opaque) for this machine."""
    client = AsyncGatepass()  # keys and URL from the environment
    return GatepassMiddleware(hello.app, gatepass=client, accepts_token=TokenType.M2M_TOKEN)
