"""The bearer token of an incoming request, whatever framework received it, sans I/O.

:func:`bearer_token` reads a request by duck typing, so the core imports no framework:

- an ASGI ``http`` or ``websocket`` scope: its ``headers``, where repeats stay visible;
- anything with a ``.scope`` mapping (Starlette and FastAPI ``Request``, Django's
  ``ASGIRequest``): that scope;
- a Werkzeug or Flask request (it has an ``.environ``): ``.headers.getlist``;
- a Django ``HttpRequest``, or a WSGI environ: ``HTTP_AUTHORIZATION``;
- headers with a multi-getter (``getlist``, ``get_list``, ``get_all``: Starlette and
  httpx ``Headers``, ``email.message.Message``): every ``Authorization`` value;
- a plain mapping of headers: every key equal to ``authorization`` ignoring case.

A well-formed header gives :class:`Credentials`; anything else a rejected
:class:`~gatepass._state.RequestState` (STYLE.md habit 3). An object of none of these
kinds is a programming error and raises ``TypeError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from gatepass._jwt import MAX_TOKEN_LENGTH, unverified_subject
from gatepass._state import AuthReason, RequestState, TokenType

__all__ = [
    "MAX_TOKEN_LENGTH",
    "AcceptsToken",
    "Credentials",
    "accepted_types",
    "bearer_token",
    "detect_token_type",
]

AcceptsToken: TypeAlias = TokenType | str | Sequence[TokenType | str]
"""``"any"``, one token type, or a list of them (the ``acceptsToken`` of Clerk's SDKs)."""

# NOTE: SECURITY.md principle 5: bound the work before parsing. RFC 6750 sets no limit;
# the cap is the JWT verifier's (gatepass._jwt), because a Gatepass JWT lists each scoped
# machine id twice (``aud`` and ``scopes``) and outgrows 4 KiB long before 150 scopes.
# The slack covers the scheme and the spaces tolerated around the token.
_MAX_HEADER_LENGTH: Final = MAX_TOKEN_LENGTH + 256
_AUTHORIZATION_LENGTH: Final = len("authorization")
_PLAIN_PREFIX: Final = "Bearer "

# NOTE: RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
# *"=". Everything else (whitespace, commas, quotes, controls, non-ASCII) is malformed.
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 7515 §7.1: the compact serialization, three base64url segments. Only the shape is
# read here; whether it is a valid JWS is for the verifier to say.
# NOTE: the signature may be empty, so an unsigned ``alg: none`` token still reaches the
# verifier and is refused for its algorithm (SECURITY.md principle 6), not as a non-JWT.
_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# NOTE: CONTRACT.md §6: the prefixes Clerk's SDKs use to tell opaque tokens apart.
_PREFIXES: Final = (
    ("mt_", TokenType.M2M_TOKEN),
    ("ak_", TokenType.API_KEY),
    ("oat_", TokenType.OAUTH_TOKEN),
)
_MACHINE_PREFIX: Final = "mch_"
_ANY: Final = "any"
_ALLOWED: Final = "expected 'any', or one or a list of: " + ", ".join(
    repr(member.value) for member in TokenType
)
# Header multi-getters, most common first: Werkzeug and Starlette, httpx, email.message.
_MULTI_GETTERS: Final = ("getlist", "get_list", "get_all")
_ASGI_REQUEST_TYPES: Final = frozenset({"http", "websocket"})

_MISSING: Final = RequestState.rejected(
    AuthReason.TOKEN_MISSING, "The request has no bearer token in its Authorization header"
)
_NOT_BEARER: Final = RequestState.rejected(
    AuthReason.TOKEN_MISSING, "The Authorization header does not use the Bearer scheme"
)
_DUPLICATED: Final = RequestState.rejected(
    AuthReason.AUTHORIZATION_MALFORMED, "Send exactly one Authorization header"
)
_TOO_LONG: Final = RequestState.rejected(
    AuthReason.AUTHORIZATION_MALFORMED,
    f"The bearer token is longer than {MAX_TOKEN_LENGTH} characters",
)
_EMPTY_HEADER: Final = RequestState.rejected(
    AuthReason.AUTHORIZATION_MALFORMED, "The Authorization header has no credentials"
)
_SCHEME_NOT_FIRST: Final = RequestState.rejected(
    AuthReason.AUTHORIZATION_MALFORMED,
    "The Authorization header must start with its scheme, after optional spaces or tabs",
)
_NO_TOKEN: Final = RequestState.rejected(
    AuthReason.AUTHORIZATION_MALFORMED, "The Authorization header has no token after Bearer"
)
_BAD_TOKEN: Final = RequestState.rejected(
    AuthReason.AUTHORIZATION_MALFORMED,
    "The bearer token must be one RFC 6750 b64token: letters, digits and -._~+/ "
    "then optional trailing =",
)


@dataclass(frozen=True, slots=True)
class Credentials:
    """The bearer token a request carried: well-formed, not yet verified."""

    # NOTE: SECURITY.md principle 3: a token is a secret; keep it out of reprs and logs.
    token: str = field(repr=False)


def bearer_token(request: object) -> Credentials | RequestState:
    """The bearer token of ``request``, or why it has none.

    ``TOKEN_MISSING`` when no ``Authorization`` header was sent or it uses another scheme;
    ``AUTHORIZATION_MALFORMED`` when there are several, or the one there is not exactly
    ``Bearer <b64token>`` (RFC 6750 §2.1). Credentials in the query string, a form body or
    cookies are never looked at. Messages never contain the token.
    """
    values = _authorization_values(request)
    if not values:
        return _MISSING
    if len(values) > 1:
        return _DUPLICATED
    return _parse_authorization(values[0])


def plain_bearer(request: object) -> str | None:
    """The token of a request whose one ``Authorization`` is exactly ``Bearer <token>``.

    ``None`` for anything else (several headers, another spelling, extra spaces, too
    long), which :func:`bearer_token` then reads in full. Nothing here checks the token's
    syntax: the caller uses this only to find a token it has already verified.
    """
    values = _authorization_values(request)
    if len(values) != 1:
        return None
    value = values[0]
    if len(value) > _MAX_HEADER_LENGTH or not value.startswith(_PLAIN_PREFIX):
        return None
    return value[len(_PLAIN_PREFIX) :]


def detect_token_type(token: str) -> TokenType | None:
    """The kind of ``token``, guessed from its shape as Clerk's SDKs do; never raises.

    ``mt_``, ``ak_`` and ``oat_`` prefixes name opaque tokens; a compact JWS whose
    unverified ``sub`` starts with ``mch_`` is an M2M token and any other JWS a session
    token. Anything else is ``None``. Nothing is verified: this only picks a verifier.
    """
    for prefix, token_type in _PREFIXES:
        if token.startswith(prefix):
            return token_type
    if _COMPACT_JWS.fullmatch(token) is None:
        return None
    subject = unverified_subject(token)
    if subject is not None and subject.startswith(_MACHINE_PREFIX):
        return TokenType.M2M_TOKEN
    return TokenType.SESSION_TOKEN


def accepted_types(accepts_token: AcceptsToken) -> frozenset[TokenType]:
    """The token types an ``accepts_token`` setting names; ``ValueError`` if it names none.

    ``"any"`` is every type; otherwise one type name (or :class:`TokenType`) or a non-empty
    list of them, spelled as Clerk spells them (``"m2m_token"``…).
    """
    if isinstance(accepts_token, str):
        if accepts_token == _ANY:
            return frozenset(TokenType)
        return frozenset({_token_type(accepts_token)})
    types = frozenset(_token_type(name) for name in accepts_token)
    if not types:
        raise ValueError(f"accepts_token is empty; {_ALLOWED}")
    return types


def _token_type(name: str) -> TokenType:
    try:
        return TokenType(name)
    except ValueError:
        raise ValueError(f"accepts_token: unknown token type {name!r}; {_ALLOWED}") from None


def _parse_authorization(raw: str) -> Credentials | RequestState:
    """The credentials of one ``Authorization`` field value."""
    if len(raw) > _MAX_HEADER_LENGTH:
        return _TOO_LONG
    # NOTE: RFC 9110 §5.5: leading and trailing SP/HTAB are not part of the field value.
    value = raw.strip(" \t")
    # NOTE: RFC 9110 §5.3: a WSGI server and Django fold repeated headers into one value
    # joined by commas, and RFC 6750 §2.1 allows no comma in a bearer token; so a comma is
    # treated as a duplicated header, the same answer the ASGI path gives for one.
    if "," in value:
        return _DUPLICATED
    words = value.split(maxsplit=1)
    if not words:
        return _EMPTY_HEADER
    scheme = words[0]
    # NOTE: RFC 9110 §5.6.3: only SP and HTAB may precede the scheme. str.split() also
    # skips CR, LF, FS, NEL…, and slicing the token after such a prefix would take the
    # tail of the scheme itself ("\rBEARER" gave the token "R").
    if not value.startswith(scheme):
        return _SCHEME_NOT_FIRST
    # NOTE: RFC 7235 §2.1: the scheme is case-insensitive. Another scheme is no bearer
    # credentials at all, which RFC 6750 §3.1 answers without an error code.
    if not scheme.isascii() or scheme.lower() != "bearer":
        return _NOT_BEARER
    # NOTE: RFC 7235 §2.1 puts exactly one SP after the scheme; more are tolerated. A tab
    # or any other separator is left on the token, where the b64token check refuses it.
    return _parse_token(value[len(scheme) :].lstrip(" "))


def _parse_token(token: str) -> Credentials | RequestState:
    """The credentials of what follows ``Bearer``."""
    if not token:
        return _NO_TOKEN
    if len(token) > MAX_TOKEN_LENGTH:
        return _TOO_LONG
    if _B64TOKEN.fullmatch(token) is None:
        return _BAD_TOKEN
    return Credentials(token)


def _authorization_values(request: object) -> list[str]:
    """Every ``Authorization`` value ``request`` carries, in the order received."""
    if (type(request) is dict or isinstance(request, Mapping)) and (
        "type" in request and "headers" in request
    ):
        return _from_scope(request)
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping):
        return _from_scope(scope)
    headers = getattr(request, "headers", None)
    getlist = getattr(headers, "getlist", None)
    if hasattr(request, "environ") and callable(getlist):
        return [_text(value) for value in getlist("Authorization")]
    meta = getattr(request, "META", None)
    if isinstance(meta, Mapping):
        return _from_environ(meta)
    if isinstance(request, Mapping) and "wsgi.version" in request:
        return _from_environ(request)
    return _from_headers(request)


def _from_scope(scope: Mapping[str, object]) -> list[str]:
    if scope.get("type") not in _ASGI_REQUEST_TYPES:
        raise TypeError(
            f"an ASGI scope of type {scope.get('type')!r} carries no request; "
            "expected 'http' or 'websocket'"
        )
    headers = scope.get("headers")
    if not isinstance(headers, Sequence):
        raise TypeError("an ASGI scope's headers must be a list of (name, value) byte pairs")
    # NOTE: ASGI HTTP spec: header names are lowercased bytes and repeated headers stay
    # separate entries; values are bytes, decoded as latin-1 so that any byte maps to one
    # character, none raises, and non-ASCII then fails the b64token check.
    found = []
    for name, value in headers:
        # NOTE: bytes of another length cannot spell the name; most headers stop there.
        if type(name) is bytes:
            if len(name) == _AUTHORIZATION_LENGTH and name.lower() == b"authorization":
                found.append(value.decode("latin-1") if type(value) is bytes else _text(value))
        elif _text(name).lower() == "authorization":
            found.append(_text(value))
    return found


def _from_environ(environ: Mapping[str, object]) -> list[str]:
    # NOTE: PEP 3333: the server folds repeated headers into one HTTP_ variable (comma
    # joined); _parse_authorization treats a comma as a duplicated header.
    value = environ.get("HTTP_AUTHORIZATION")
    return [] if value is None else [_text(value)]


def _from_headers(headers: object) -> list[str]:
    for name in _MULTI_GETTERS:
        getter = getattr(headers, name, None)
        if callable(getter):
            values = getter("Authorization")
            return [_text(value) for value in values or ()]
    if isinstance(headers, Mapping):
        return [
            _text(value)
            for key, value in headers.items()
            if isinstance(key, str) and key.lower() == "authorization"
        ]
    raise TypeError(
        f"cannot read headers from a {type(headers).__qualname__}: expected an ASGI scope, "
        "a Starlette, Werkzeug/Flask or Django request, a WSGI environ, or a mapping of headers"
    )


def _text(value: object) -> str:
    """A header name or value as text; bytes are read as latin-1, which never fails."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    raise TypeError(f"a header name or value must be str or bytes, not {type(value).__qualname__}")
