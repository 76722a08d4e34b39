"""Bearer-key authentication of a request (CONTRACT.md §5, SECURITY.md principle 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gatepass_server.errors import (
    AuthenticationMissing,
    AuthorizationHeaderInvalid,
    AuthorizationInvalid,
    InstanceKeyInvalid,
)
from gatepass_server.services.auth import InstancePrincipal, KeyAuthenticator, Principal

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["MAX_AUTHORIZATION_LENGTH", "authenticate", "bearer_secret", "require_instance"]

MAX_AUTHORIZATION_LENGTH: Final = 1024


def bearer_secret(request: Request) -> str:
    """The key from exactly one well-formed ``Authorization: Bearer <key>`` header.

    Credentials anywhere else (query string, cookies, other headers) are ignored.
    """
    values = request.headers.getlist("authorization")
    if not values:
        raise AuthenticationMissing
    if len(values) > 1:
        raise AuthorizationHeaderInvalid(long_message="Send exactly one Authorization header")
    value = values[0]
    if len(value) > MAX_AUTHORIZATION_LENGTH or not value.isascii():
        raise AuthorizationHeaderInvalid
    scheme, _, secret = value.partition(" ")
    # NOTE: the scheme is case-insensitive (RFC 7235 §2.1); the credential is one token.
    if scheme.lower() != "bearer" or not secret or not secret.isprintable() or " " in secret:
        raise AuthorizationHeaderInvalid(long_message="Use Authorization: Bearer <secret key>")
    return secret


async def authenticate(request: Request, authenticator: KeyAuthenticator) -> Principal:
    """Resolve the caller, or raise the 401 that fits."""
    principal = await authenticator.authenticate(bearer_secret(request))
    if principal is None:
        raise InstanceKeyInvalid
    return principal


def require_instance(principal: Principal) -> str:
    """The instance id of an ``sk_`` caller; a machine key here is 403."""
    if not isinstance(principal, InstancePrincipal):
        raise AuthorizationInvalid(
            long_message="This endpoint requires an instance secret key (sk_…)",
        )
    return principal.instance_id
