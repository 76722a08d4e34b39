"""The outcome of authenticating one request: a value, never an exception (STYLE.md habit 3).

``RequestState`` says whether the request carries a valid M2M token, and if not, why:
``reason`` is one of :class:`AuthReason`, in the words of Clerk's SDKs where they have one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["AuthReason", "RequestState", "TokenType"]


class TokenType(StrEnum):
    """The kinds of bearer token Clerk's SDKs tell apart; Gatepass verifies ``m2m_token``.

    The other names exist so that ``accepts_token`` lists written for Clerk keep their
    meaning: such a token is recognised and refused, never mistaken for an M2M token.
    """

    M2M_TOKEN = "m2m_token"  # nosec B105  # a name, not a password
    SESSION_TOKEN = "session_token"  # nosec B105  # a name, not a password
    API_KEY = "api_key"
    OAUTH_TOKEN = "oauth_token"  # nosec B105  # a name, not a password


class AuthReason(StrEnum):
    """Why a request is not authenticated."""

    TOKEN_MISSING = "token-missing"  # nosec B105  # a name, not a password
    """No bearer credentials at all (RFC 6750 §3.1: a 401 without an error attribute)."""
    AUTHORIZATION_MALFORMED = "authorization-header-malformed"
    """An ``Authorization`` header that is not one well-formed ``Bearer <token>``."""
    TOKEN_TYPE_MISMATCH = "token-type-mismatch"  # nosec B105  # a name, not a password
    """The token is of a type this route does not accept."""
    TOKEN_TYPE_NOT_SUPPORTED = "token-type-not-supported"  # nosec B105  # a name, not a password
    """Accepted by the route, but not a kind Gatepass verifies (a Clerk session token…)."""
    TOKEN_INVALID = "token-invalid"  # nosec B105  # a name, not a password
    """Unknown, malformed, revoked, expired or out of scope, as the server answers it."""
    TOKEN_EXPIRED = "token-expired"  # nosec B105  # a name, not a password
    TOKEN_NOT_ACTIVE_YET = "token-not-active-yet"  # nosec B105  # a name, not a password
    TOKEN_INVALID_SIGNATURE = "token-invalid-signature"  # nosec B105  # a name, not a password
    TOKEN_INVALID_ALGORITHM = "token-invalid-algorithm"  # nosec B105  # a name, not a password
    TOKEN_INVALID_AUDIENCE = "token-invalid-audience"  # nosec B105  # a name, not a password
    TOKEN_REVOKED = "token-revoked"  # nosec B105  # a name, not a password
    JWK_KID_MISMATCH = "jwk-kid-mismatch"
    """A JWT signed with a key the instance's JWKS does not hold."""
    INSUFFICIENT_SCOPE = "insufficient-scope"
    """Valid, but the token's scopes lack one the route requires (RFC 6750: 403)."""
    SECRET_KEY_INVALID = "secret-key-invalid"  # nosec B105  # a name, not a password
    """The server refused this service's own key: a configuration error, not the caller's."""
    VERIFICATION_UNAVAILABLE = "verification-unavailable"
    """The server could not be reached or could not answer; fail closed (503)."""

    @property
    def is_unavailable(self) -> bool:
        """True when the fault is on the verifying side: answer 503, not 401."""
        return self in _UNAVAILABLE


_UNAVAILABLE: Final = frozenset(
    {AuthReason.SECRET_KEY_INVALID, AuthReason.VERIFICATION_UNAVAILABLE}
)
_NO_CLAIMS: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RequestState:
    """Who sent a request, or why that cannot be said.

    ``claims`` holds the token's custom claims only (the ``claims`` of its create request),
    never the registered JWT claims; ``expiration`` is in Unix milliseconds like the API.
    """

    is_authenticated: bool
    token_type: TokenType | None = None
    subject: str | None = None
    scopes: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS)
    token_id: str | None = None
    expiration: int | None = None
    reason: AuthReason | None = None
    message: str | None = None

    @property
    def machine_id(self) -> str | None:
        """The calling machine's id (``mch_…``): the token's subject."""
        return self.subject

    def has_scopes(self, *machine_ids: str) -> bool:
        """True when the token is scoped to every one of ``machine_ids``."""
        return self.is_authenticated and all(m in self.scopes for m in machine_ids)

    @classmethod
    def authenticated(
        cls,
        *,
        subject: str,
        scopes: tuple[str, ...],
        claims: Mapping[str, Any] | None,
        token_id: str,
        expiration: int | None,
    ) -> RequestState:
        """The state of a request carrying a valid M2M token."""
        return cls(
            is_authenticated=True,
            token_type=TokenType.M2M_TOKEN,
            subject=subject,
            scopes=scopes,
            claims=MappingProxyType(dict(claims)) if claims else _NO_CLAIMS,
            token_id=token_id,
            expiration=expiration,
        )

    @classmethod
    def rejected(
        cls, reason: AuthReason, message: str, token_type: TokenType | None = None
    ) -> RequestState:
        """The state of a request that is not authenticated, and why."""
        return cls(is_authenticated=False, token_type=token_type, reason=reason, message=message)
