"""M2M tokens and the rules on them (CONTRACT.md §3, §4)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

__all__ = [
    "DEFAULT_TOKEN_LIST_LIMIT",
    "MACHINE_DELETED",
    "MAX_CLAIMS_BYTES",
    "MAX_CLAIMS_DEPTH",
    "MAX_REVOCATION_REASON_LENGTH",
    "MAX_TOKEN_LENGTH",
    "MAX_TOKEN_LIST_LIMIT",
    "RESERVED_CLAIMS",
    "M2MToken",
    "TokenFormat",
    "VerifyFailure",
    "canonical_json",
    "check_token",
    "claims_problem",
    "lifetime_ms",
]

# NOTE: the JWT payload names Gatepass sets itself; custom claims may not shadow them.
RESERVED_CLAIMS: Final = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "scopes", "cat"}
)
MAX_CLAIMS_BYTES: Final = 8 * 1024
MAX_CLAIMS_DEPTH: Final = 8
MAX_REVOCATION_REASON_LENGTH: Final = 1000
MAX_TOKEN_LENGTH: Final = 16 * 1024
DEFAULT_TOKEN_LIST_LIMIT: Final = 10
MAX_TOKEN_LIST_LIMIT: Final = 100
MACHINE_DELETED: Final = "machine_deleted"


class TokenFormat(Enum):
    """How a token is presented: an opaque secret or a signed JWT."""

    OPAQUE = "opaque"
    JWT = "jwt"


@dataclass(frozen=True, slots=True)
class M2MToken:
    """One token's record; never the secret itself."""

    id: str
    instance_id: str
    subject: str
    token_format: TokenFormat
    claims: dict[str, Any] | None
    scopes: tuple[str, ...]
    expiration: int
    revoked_at: int | None
    revocation_reason: str | None
    last_used_at: int | None
    created_at: int
    updated_at: int

    @property
    def revoked(self) -> bool:
        """Whether the token was revoked."""
        return self.revoked_at is not None

    def expired(self, now_ms: int) -> bool:
        """Whether the token has expired at ``now_ms`` (expired from ``expiration`` on)."""
        return now_ms >= self.expiration


class VerifyFailure(Enum):
    """Why a verification failed; all answer the same 404 on the wire."""

    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    OTHER_INSTANCE = "other_instance"
    REVOKED = "revoked"
    EXPIRED = "expired"
    OUT_OF_SCOPE = "out_of_scope"
    SCOPE_REMOVED = "scope_removed"


def check_token(
    token: M2MToken,
    *,
    now_ms: int,
    instance_id: str,
    caller_machine_id: str | None,
) -> VerifyFailure | None:
    """The in-memory checks of a verify, in order; ``None`` means valid so far.

    A machine caller must also still hold the scope from the subject (checked by the
    caller of this function against storage).
    """
    if token.instance_id != instance_id:
        return VerifyFailure.OTHER_INSTANCE
    if token.revoked:
        return VerifyFailure.REVOKED
    if token.expired(now_ms):
        return VerifyFailure.EXPIRED
    if caller_machine_id is not None and caller_machine_id not in token.scopes:
        return VerifyFailure.OUT_OF_SCOPE
    return None


def canonical_json(value: Any) -> str:
    """One spelling per JSON value: sorted keys, no spaces (for storage and comparison)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_CLAIMS_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def _has_nul(value: Any) -> bool:
    """Whether a NUL is in any key or string (depth already bounded by the caller).

    NOTE: not a search for the escape in the JSON text: that also matched the harmless
    six characters backslash-u-0-0-0-0 of an ordinary string.
    """
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def claims_problem(claims: dict[str, Any]) -> tuple[str, str] | None:
    """``(code, message)`` when custom claims break a rule, else ``None``."""
    reserved = sorted(RESERVED_CLAIMS.intersection(claims))
    if reserved:
        return (
            "machine_token_reserved_claim",
            f"claims may not set reserved names: {', '.join(reserved)}",
        )
    if _depth(claims) > MAX_CLAIMS_DEPTH:
        return "form_param_value_invalid", f"claims may nest at most {MAX_CLAIMS_DEPTH} levels"
    try:
        size = len(canonical_json(claims).encode("utf-8"))
    except (ValueError, UnicodeEncodeError):
        return "form_param_value_invalid", "claims must be finite JSON of valid Unicode"
    if size > MAX_CLAIMS_BYTES:
        return "form_param_value_invalid", f"claims may be at most {MAX_CLAIMS_BYTES} bytes of JSON"
    if _has_nul(claims):
        return "form_param_value_invalid", "claims must not contain NUL characters"
    return None


def lifetime_ms(seconds_until_expiration: float | None, default_token_ttl: int) -> int:
    """A token's lifetime in ms: the requested seconds, or the machine's default TTL."""
    seconds = default_token_ttl if seconds_until_expiration is None else seconds_until_expiration
    return max(1, math.ceil(seconds * 1000))
