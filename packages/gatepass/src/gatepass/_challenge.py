"""The response to a request that did not authenticate (RFC 6750 §3), framework-free.

:func:`challenge_for` turns a :class:`~gatepass._state.RequestState` into a status, headers
and a JSON body that each framework adapter sends as it is:

======================================  ======  ===========================================
reason                                  status  ``WWW-Authenticate``
======================================  ======  ===========================================
``TOKEN_MISSING``                       401     ``Bearer`` (``realm`` if configured)
``AUTHORIZATION_MALFORMED``             400     ``Bearer error="invalid_request", …``
the token's fault (invalid, expired,    401     ``Bearer error="invalid_token", …``
wrong type, unknown ``kid``, revoked…)
``INSUFFICIENT_SCOPE``, or valid but    403     ``Bearer error="insufficient_scope", …,
lacking a required scope                        scope="<required scopes>"``
``reason.is_unavailable``               503     none; ``Retry-After: 1`` instead
======================================  ======  ===========================================

The body is ``{"error": …, "error_description": …}``, carrying ``error`` exactly when the
``WWW-Authenticate`` header does; otherwise ``{"error_description": …}``. Descriptions
are fixed texts chosen by the reason: nothing the caller sent is ever reflected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from gatepass._state import AuthReason

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from gatepass._state import RequestState

__all__ = ["Challenge", "challenge_for", "insufficient_scope", "missing_scopes"]

_JSON: Final = "application/json"
_RETRY_AFTER_SECONDS: Final = "1"
# NOTE: RFC 7235 §2.1 auth-param values are RFC 9110 §5.6.4 quoted-strings: qdtext is
# HTAB, SP and visible ASCII. obs-text and controls (CR and LF above all) are refused, so
# a realm can never split or corrupt the header.
_QDTEXT: Final = re.compile(r"[\t\x20-\x7e]*")
# NOTE: RFC 6750 §3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), space-separated.
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True, slots=True)
class Challenge:
    """A complete response refusing a request: what an adapter sends, unchanged."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    error: str | None
    description: str


# NOTE: RFC 6750 §3: error_description is printable ASCII without '"' or '\'; each text
# here is fixed, so no caller input can reach a header or the body.
_MISSING: Final = _Refusal(401, None, "This resource requires a bearer token")
_MALFORMED: Final = _Refusal(
    400, "invalid_request", "The Authorization header is not one well-formed Bearer token"
)
_INVALID: Final = _Refusal(401, "invalid_token", "The access token is invalid")
_EXPIRED: Final = _Refusal(401, "invalid_token", "The access token expired")
_NOT_YET: Final = _Refusal(401, "invalid_token", "The access token is not valid yet")
_WRONG_TYPE: Final = _Refusal(401, "invalid_token", "This kind of token is not accepted here")
_NO_SCOPE: Final = _Refusal(
    403, "insufficient_scope", "The access token lacks a scope this resource requires"
)
_UNAVAILABLE: Final = _Refusal(
    503, None, "Token verification is temporarily unavailable; retry shortly"
)

# NOTE: SECURITY.md principle 2: one answer for every "no". Signature, algorithm,
# audience, unknown kid and revocation all read "invalid", so the response is no oracle
# for forging or probing tokens. Expiry and not-before stay apart as RFC 6750 §3 shows:
# the client already holds those times, and knowing them tells it to fetch a new token.
_REFUSALS: Final[Mapping[AuthReason, _Refusal]] = MappingProxyType(
    {
        AuthReason.TOKEN_MISSING: _MISSING,
        AuthReason.AUTHORIZATION_MALFORMED: _MALFORMED,
        AuthReason.TOKEN_TYPE_MISMATCH: _WRONG_TYPE,
        AuthReason.TOKEN_TYPE_NOT_SUPPORTED: _WRONG_TYPE,
        AuthReason.TOKEN_INVALID: _INVALID,
        AuthReason.TOKEN_EXPIRED: _EXPIRED,
        AuthReason.TOKEN_NOT_ACTIVE_YET: _NOT_YET,
        AuthReason.TOKEN_INVALID_SIGNATURE: _INVALID,
        AuthReason.TOKEN_INVALID_ALGORITHM: _INVALID,
        AuthReason.TOKEN_INVALID_AUDIENCE: _INVALID,
        AuthReason.TOKEN_REVOKED: _INVALID,
        AuthReason.JWK_KID_MISMATCH: _INVALID,
    }
)


def challenge_for(
    state: RequestState, *, realm: str | None = None, required_scopes: Sequence[str] = ()
) -> Challenge:
    """The response refusing a request in ``state``.

    ``required_scopes`` are the scopes (machine ids) the route requires; they only matter
    for a 403. ``realm`` goes into ``WWW-Authenticate`` when given. ``ValueError`` when
    ``state`` is authenticated with every required scope (there is nothing to refuse),
    when a rejected state has no reason, or when ``realm`` or a scope cannot be sent in
    a header; ``TypeError`` when ``required_scopes`` is one string instead of a list.
    """
    scopes = _scope_list(required_scopes)
    if state.is_authenticated or state.reason is AuthReason.INSUFFICIENT_SCOPE:
        return insufficient_scope(state, scopes, realm=realm)
    if state.reason is None:
        raise ValueError("a rejected RequestState must carry a reason")
    # NOTE: RFC 6750 §3 defines no challenge for a verifier that cannot answer; a 503 with
    # Retry-After (RFC 9110 §10.2.3) tells the client to retry, not to change its token.
    refusal = _UNAVAILABLE if state.reason.is_unavailable else _REFUSALS[state.reason]
    return _challenge(refusal, realm=realm)


def insufficient_scope(
    state: RequestState, required_scopes: Sequence[str], *, realm: str | None = None
) -> Challenge:
    """The 403 refusing a valid token that lacks a required scope (RFC 6750 §3.1).

    ``state`` is authenticated but missing one of ``required_scopes``, or rejected with
    ``INSUFFICIENT_SCOPE``; any other state is a ``ValueError``. The ``scope`` attribute
    lists every required scope, as RFC 6750 §3 describes it, not only the missing ones.
    """
    scopes = _scope_list(required_scopes)
    if state.is_authenticated:
        if not missing_scopes(state, scopes):
            raise ValueError("the token has every required scope; there is nothing to refuse")
    elif state.reason is not AuthReason.INSUFFICIENT_SCOPE:
        raise ValueError(f"a request rejected as {state.reason} is not a scope failure")
    return _challenge(_NO_SCOPE, realm=realm, scope=" ".join(scopes) or None)


def missing_scopes(state: RequestState, required_scopes: Sequence[str]) -> tuple[str, ...]:
    """The ``required_scopes`` the token in ``state`` lacks, once each, in their order.

    A state that is not authenticated has no scopes, so it lacks every one.
    """
    return tuple(scope for scope in _scope_list(required_scopes) if scope not in state.scopes)


def _scope_list(required_scopes: Sequence[str]) -> tuple[str, ...]:
    """``required_scopes`` without repeats, each checked to fit the ``scope`` attribute."""
    if isinstance(required_scopes, str):
        raise TypeError("required_scopes must be a list of scopes, not one string")
    scopes = tuple(dict.fromkeys(required_scopes))
    for scope in scopes:
        if _SCOPE_TOKEN.fullmatch(scope) is None:
            raise ValueError(f"{scope!r} is not an RFC 6750 scope-token")
    return scopes


def _challenge(refusal: _Refusal, *, realm: str | None, scope: str | None = None) -> Challenge:
    params = (
        ("realm", realm),
        ("error", refusal.error),
        ("error_description", refusal.description if refusal.error else None),
        ("scope", scope),
    )
    auth_params = ", ".join(
        f"{name}={_quoted(name, value)}" for name, value in params if value is not None
    )
    www_authenticate = f"Bearer {auth_params}" if auth_params else "Bearer"
    headers = [("Content-Type", _JSON), ("Cache-Control", "no-store")]
    if refusal is _UNAVAILABLE:
        headers.append(("Retry-After", _RETRY_AFTER_SECONDS))
    else:
        headers.insert(0, ("WWW-Authenticate", www_authenticate))
    body = {"error_description": refusal.description}
    if refusal.error is not None:
        body = {"error": refusal.error, **body}
    return Challenge(
        status=refusal.status,
        headers=tuple(headers),
        body=json.dumps(body, separators=(",", ":")).encode("ascii"),
    )


def _quoted(name: str, value: str) -> str:
    """``value`` as an RFC 7235 quoted-string; ``ValueError`` if it cannot be one."""
    if _QDTEXT.fullmatch(value) is None:
        raise ValueError(f"the {name} must be printable ASCII to fit in WWW-Authenticate")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
