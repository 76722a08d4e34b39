"""Bearer-key authentication of a request (CONTRACT.md §5, SECURITY.md principles 4, 10)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gatepass_server.domain.keys import digest
from gatepass_server.errors import (
    AuthenticationError,
    AuthenticationMissing,
    AuthorizationHeaderInvalid,
    AuthorizationInvalid,
    InstanceKeyInvalid,
)
from gatepass_server.services.auth import InstancePrincipal, KeyAuthenticator, Principal
from gatepass_server.web.requests import runtime_of

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = [
    "MAX_AUTHORIZATION_LENGTH",
    "authenticate",
    "bearer_secret",
    "require_instance",
    "source_of",
]

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


def source_of(request: Request) -> str:
    """Where the request comes from, for rate limits: the client address ASGI reports.

    Behind a proxy listed in ``GATEPASS_FORWARDED_ALLOW_IPS`` uvicorn has already put the
    ``X-Forwarded-For`` address there.
    """
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


async def authenticate(request: Request, authenticator: KeyAuthenticator) -> Principal:
    """Resolve the caller, or raise the 401 that fits (429 while rate limited).

    Every 401 counts as a key-authentication failure of the request's source, and of the
    presented key (by digest) when there is one.
    """
    limiter = runtime_of(request).auth_failures
    # NOTE: a blocked source or key is refused before its key is looked up, so that a
    # right guess cannot be told from a wrong one while blocked (SECURITY.md §10). With
    # nothing blocked, the hot path pays for this one empty-dict test.
    if limiter.blocked:
        limiter.check(source_of(request))
    try:
        secret = bearer_secret(request)
    except AuthenticationError:
        await limiter.failed(source_of(request))
        raise
    if limiter.blocked:
        limiter.check(source_of(request), digest(secret).hex())
    principal = await authenticator.authenticate(secret)
    if principal is None:
        await limiter.failed(source_of(request), digest(secret).hex())
        raise InstanceKeyInvalid
    return principal


def require_instance(principal: Principal) -> str:
    """The instance id of an ``sk_`` caller; a machine key here is 403."""
    if not isinstance(principal, InstancePrincipal):
        raise AuthorizationInvalid(
            long_message="This endpoint requires an instance secret key (sk_…)",
        )
    return principal.instance_id
