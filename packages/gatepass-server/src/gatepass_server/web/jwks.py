"""The instance's public signing keys.

Route 14 of CONTRACT.md, ``GET /v1/jwks``, is Clerk's and takes an ``sk_`` key only. The
Gatepass extension ``GET /v1/m2m_tokens/jwks`` serves the same keys to a machine key too,
so a receiving service that holds only its ``ak_`` key can verify JWTs locally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from gatepass_server.web.auth import authenticate, require_instance
from gatepass_server.web.requests import runtime_of
from gatepass_server.web.responses import Handler, json_response

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


__all__ = ["ROUTES", "JwksBody"]


class JwksBody(msgspec.Struct):
    """``{"keys":[JWK…]}``: public members only (SECURITY.md principle 6)."""

    keys: list[dict[str, str]]


async def get_jwks(request: Request) -> Response:
    """``GET /v1/jwks``: the active key and each retired key with tokens still live."""
    runtime = runtime_of(request)
    # NOTE: an instance key only, as Clerk (CONTRACT.md §2 route 14): a machine key is 403.
    instance_id = require_instance(await authenticate(request, runtime.authenticator))
    return json_response(JwksBody(keys=await runtime.signing.jwks(instance_id)))


async def get_token_jwks(request: Request) -> Response:
    """``GET /v1/m2m_tokens/jwks``: the same keys for an ``sk_`` or an ``ak_`` key (Gatepass)."""
    runtime = runtime_of(request)
    # NOTE: public keys only, so any key of the instance may read them (CONTRACT.md §7); the
    # Clerk route keeps its sk-only rule unchanged.
    principal = await authenticate(request, runtime.authenticator)
    return json_response(JwksBody(keys=await runtime.signing.jwks(principal.instance_id)))


ROUTES: dict[str, dict[str, Handler]] = {
    "/jwks": {"GET": get_jwks},
    "/m2m_tokens/jwks": {"GET": get_token_jwks},
}
