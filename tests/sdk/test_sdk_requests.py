"""gatepass._requests: the bearer token of a real request from every supported framework.

Every rule is checked against real request objects built by each framework's own test
tools (ASGI scopes, Starlette, Django on ASGI and WSGI, Werkzeug, Flask, a WSGI environ,
plain and multi-valued header mappings), so a framework's own folding and decoding of
headers is part of what is tested.
"""

from __future__ import annotations

import base64
import email.message
import io
import json
import re
from contextlib import ExitStack, suppress
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import flask
import httpx
import jwt
import pytest
from django.conf import settings as django_settings
from django.core.handlers.asgi import ASGIRequest
from django.test import RequestFactory
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.websockets import WebSocket
from werkzeug.test import EnvironBuilder

from gatepass._requests import (
    MAX_TOKEN_LENGTH,
    Credentials,
    accepted_types,
    bearer_token,
    detect_token_type,
)
from gatepass._state import AuthReason, RequestState, TokenType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

Headers = list[tuple[str, str]]

MISSING = AuthReason.TOKEN_MISSING
MALFORMED = AuthReason.AUTHORIZATION_MALFORMED
SECRET = "s3cr3t"
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@pytest.fixture(scope="module")
def django_configured() -> None:
    """Django configured just enough to build requests (once per process)."""
    if not django_settings.configured:
        django_settings.configure(ALLOWED_HOSTS=["testserver"], USE_TZ=True)


def _scope(kind: str, headers: Headers, query: str) -> dict[str, Any]:
    # NOTE: ASGI HTTP spec: names are lowercased bytes, repeated headers stay separate.
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if kind == "http" else "ws",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": query.encode("latin-1"),
        "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def _folded(headers: Headers) -> dict[str, str]:
    """Headers as a WSGI server or Django hands them over: repeats joined by a comma."""
    spelling: dict[str, str] = {}
    folded: dict[str, str] = {}
    for name, value in headers:
        key = spelling.setdefault(name.lower(), name)
        folded[key] = f"{folded[key]},{value}" if key in folded else value
    return folded


async def _never_called(*_: object) -> Any:
    raise AssertionError("the test request has no body to receive or send")


def _flask_request(headers: Headers, query: str, stack: ExitStack) -> object:
    app = flask.Flask(__name__)
    stack.enter_context(app.test_request_context("/", query_string=query, headers=headers))
    return flask.request


def _email_message(headers: Headers) -> email.message.Message:
    message = email.message.Message()
    for name, value in headers:
        message[name] = value  # Message keeps every occurrence
    return message


BUILDERS: dict[str, Callable[[Headers, str, ExitStack], object]] = {
    "asgi-http": lambda h, q, _: _scope("http", h, q),
    "asgi-websocket": lambda h, q, _: _scope("websocket", h, q),
    "starlette": lambda h, q, _: Request(_scope("http", h, q)),
    "starlette-websocket": lambda h, q, _: WebSocket(
        _scope("websocket", h, q), _never_called, _never_called
    ),
    "django-asgi": lambda h, q, _: ASGIRequest(_scope("http", h, q), io.BytesIO()),
    "django": lambda h, q, _: RequestFactory().get(f"/?{q}", headers=_folded(h)),
    "werkzeug": lambda h, q, _: EnvironBuilder(query_string=q, headers=h).get_request(),
    "flask": _flask_request,
    "wsgi-environ": lambda h, q, _: EnvironBuilder(query_string=q, headers=h).get_environ(),
    "dict": lambda h, _q, _: _folded(h),
    "httpx-headers": lambda h, _q, _: httpx.Headers([(n, v.encode("latin-1")) for n, v in h]),
    "email-message": lambda h, _q, _: _email_message(h),
}
KINDS = list(BUILDERS)


@pytest.fixture
def make_request(django_configured: None) -> Iterator[Callable[..., Any]]:
    """Build a request of a given kind; contexts it opens (Flask's) close after the test."""
    del django_configured
    with ExitStack() as stack:

        def make(kind: str, headers: Headers, query: str = "") -> object:
            """A real request of ``kind`` with ``headers`` (after an ``Accept``) and ``query``."""
            return BUILDERS[kind]([("Accept", "*/*"), *headers], query, stack)

        yield make


def _rejected(result: Credentials | RequestState, reason: AuthReason) -> RequestState:
    """Assert ``result`` is a rejection for ``reason`` whose message holds no token."""
    assert isinstance(result, RequestState), result
    assert not result.is_authenticated
    assert result.reason is reason, result.message
    assert result.message
    assert SECRET not in result.message
    return result


ACCEPTED = [
    pytest.param(f"Bearer {SECRET}", SECRET, id="bearer"),
    pytest.param("Bearer aZ09-._~+/s3cr3t==", "aZ09-._~+/s3cr3t==", id="every-b64token-char"),
    pytest.param(f"bearer {SECRET}", SECRET, id="scheme-lowercase"),
    pytest.param(f"BEARER {SECRET}", SECRET, id="scheme-uppercase"),
    pytest.param(f"BeArEr {SECRET}", SECRET, id="scheme-mixed-case"),
    pytest.param(f"Bearer    {SECRET}", SECRET, id="several-spaces"),
    pytest.param(f"Bearer {SECRET} \t ", SECRET, id="trailing-whitespace"),
    pytest.param(f"Bearer {SECRET}" + "x" * (MAX_TOKEN_LENGTH - 6), None, id="longest-token"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("value", "token"), ACCEPTED)
def test_well_formed_bearer_header_gives_its_token(
    make_request: Callable[..., Any], kind: str, value: str, token: str | None
) -> None:
    """One ``Bearer <b64token>`` header gives exactly that token, whatever the framework."""
    expected = token if token is not None else value.removeprefix("Bearer ")
    result = bearer_token(make_request(kind, [("Authorization", value)]))
    assert result == Credentials(expected)


REJECTED = [
    pytest.param([], MISSING, id="no-header"),
    pytest.param([f"Basic {SECRET}"], MISSING, id="basic-scheme"),
    pytest.param([f"Token {SECRET}"], MISSING, id="token-scheme"),
    pytest.param([SECRET], MISSING, id="no-scheme"),
    pytest.param([f"Bearer{SECRET}"], MISSING, id="scheme-glued-to-token"),
    pytest.param([f"Bearer: {SECRET}"], MISSING, id="scheme-with-colon"),
    pytest.param([f"Béarer {SECRET}"], MISSING, id="non-ascii-scheme"),
    pytest.param([""], MALFORMED, id="empty-value"),
    pytest.param(["Bearer"], MALFORMED, id="scheme-only"),
    pytest.param(["Bearer   "], MALFORMED, id="scheme-and-spaces"),
    pytest.param([f"Bearer {SECRET} {SECRET}"], MALFORMED, id="space-inside-token"),
    pytest.param([f"Bearer {SECRET} extra"], MALFORMED, id="trailing-word"),
    pytest.param([f"Bearer\t{SECRET}"], MALFORMED, id="tab-separator"),
    pytest.param([f"Bearer {SECRET}\t{SECRET}"], MALFORMED, id="tab-inside-token"),
    pytest.param([f"Bearer {SECRET}ö"], MALFORMED, id="non-ascii-token"),
    pytest.param([f"Bearer {SECRET}\xa0"], MALFORMED, id="non-breaking-space"),
    pytest.param([f'Bearer "{SECRET}"'], MALFORMED, id="quoted-token"),
    pytest.param([f"Bearer {SECRET}\x7f"], MALFORMED, id="control-character"),
    pytest.param([f"Bearer s3=cr3t{SECRET}"], MALFORMED, id="padding-inside"),
    pytest.param(["Bearer ==="], MALFORMED, id="padding-only"),
    pytest.param([f"Bearer {SECRET},{SECRET}"], MALFORMED, id="comma-inside"),
    pytest.param([f'Digest username="{SECRET}", realm="x"'], MALFORMED, id="params-with-comma"),
    pytest.param(
        [f"Bearer {SECRET}" + "x" * (MAX_TOKEN_LENGTH - 5)], MALFORMED, id="token-one-too-long"
    ),
    pytest.param([f"Bearer {SECRET}" + "x" * 100_000], MALFORMED, id="header-oversized"),
    pytest.param([f"Bearer {SECRET}", f"Bearer {SECRET}x"], MALFORMED, id="two-bearer-headers"),
    pytest.param([f"Bearer {SECRET}", f"Bearer {SECRET}"], MALFORMED, id="same-header-twice"),
    pytest.param([f"Basic {SECRET}", f"Bearer {SECRET}"], MALFORMED, id="basic-then-bearer"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("values", "reason"), REJECTED)
def test_missing_or_malformed_authorization_is_rejected_without_echo(
    make_request: Callable[..., Any], kind: str, values: list[str], reason: AuthReason
) -> None:
    """Each RFC 6750 §2.1 violation gets its reason, and the message never holds the token.

    A header of another scheme is no bearer credentials (token-missing, RFC 6750 §3.1);
    repeated headers are malformed whether the framework lists them (ASGI, httpx, email)
    or folds them into one comma-joined value (WSGI, Django).
    """
    request = make_request(kind, [("Authorization", value) for value in values])
    _rejected(bearer_token(request), reason)


@pytest.mark.parametrize("kind", KINDS)
def test_token_in_query_string_cookie_or_other_header_is_ignored(
    make_request: Callable[..., Any], kind: str
) -> None:
    """Credentials anywhere but ``Authorization`` are never read (SECURITY.md attack list)."""
    request = make_request(
        kind,
        [
            ("Cookie", f"access_token={SECRET}; __session={SECRET}"),
            ("X-Api-Key", SECRET),
            ("Proxy-Authorization", f"Bearer {SECRET}"),
        ],
        query=f"access_token={SECRET}&token={SECRET}",
    )
    _rejected(bearer_token(request), MISSING)


@pytest.mark.parametrize("kind", KINDS)
def test_header_name_is_case_insensitive(make_request: Callable[..., Any], kind: str) -> None:
    """``AUTHORIZATION`` is the same header as ``authorization`` (RFC 9110 §5.1)."""
    assert bearer_token(make_request(kind, [("AUTHORIZATION", f"Bearer {SECRET}")])) == (
        Credentials(SECRET)
    )


def test_asgi_non_ascii_bytes_are_malformed_not_an_error() -> None:
    """Bytes that are not UTF-8 are read as latin-1 and refused, never a decode error."""
    for raw in (b"Bearer \xff\xfe", b"Bearer s3cr3t\x80", "Bearer s3cr3té".encode()):
        scope = {"type": "http", "headers": [(b"authorization", raw)]}
        _rejected(bearer_token(scope), MALFORMED)


def test_asgi_header_name_in_capitals_is_still_read() -> None:
    """A scope from a lax server with a capitalised name still yields its header."""
    scope = {"type": "http", "headers": [(b"Authorization", b"Bearer s3cr3t")]}
    assert bearer_token(scope) == Credentials(SECRET)


def test_asgi_duplicate_with_one_empty_value_is_malformed() -> None:
    """An empty second ``Authorization`` header still makes two: malformed, not a token."""
    scope = {
        "type": "http",
        "headers": [(b"authorization", b"Bearer s3cr3t"), (b"authorization", b"")],
    }
    _rejected(bearer_token(scope), MALFORMED)


def test_plain_mapping_with_two_spellings_of_the_name_is_duplicated() -> None:
    """A dict holding ``Authorization`` and ``authorization`` carries two headers."""
    headers = {"Authorization": "Bearer s3cr3t", "authorization": "Bearer s3cr3t"}
    _rejected(bearer_token(headers), MALFORMED)


def test_django_wsgi_request_reads_meta_although_it_has_an_environ(
    make_request: Callable[..., Any],
) -> None:
    """A Django ``WSGIRequest`` has ``.environ`` and ``.headers`` but no ``getlist``: META."""
    request = make_request("django", [("Authorization", f"Bearer {SECRET}")])
    assert hasattr(request, "environ")
    assert not hasattr(request.headers, "getlist")
    assert bearer_token(request) == Credentials(SECRET)


def test_django_asgi_request_reads_the_scope_where_repeats_are_visible(
    make_request: Callable[..., Any],
) -> None:
    """Django on ASGI folds repeats into META; the scope shows them, so it is preferred."""
    request = make_request(
        "django-asgi", [("Authorization", f"Bearer {SECRET}"), ("Authorization", "Bearer b")]
    )
    assert request.META["HTTP_AUTHORIZATION"] == f"Bearer {SECRET},Bearer b"
    _rejected(bearer_token(request), MALFORMED)


def test_any_object_with_an_asgi_scope_is_read_through_it() -> None:
    """An object that only holds ``.scope`` (Quart, Channels, a custom wrapper) is read."""
    request = SimpleNamespace(scope=_scope("http", [("Authorization", f"Bearer {SECRET}")], ""))
    assert bearer_token(request) == Credentials(SECRET)


def test_credentials_repr_hides_the_token() -> None:
    """A logged or traceback-printed ``Credentials`` never shows the secret."""
    assert SECRET not in repr(Credentials(SECRET))
    assert SECRET not in str(Credentials(SECRET))


class _NoHeaders:
    headers = None


@pytest.mark.parametrize(
    "request_object",
    [
        pytest.param(object(), id="object"),
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param(f"Bearer {SECRET}", id="str"),
        pytest.param(f"Bearer {SECRET}".encode(), id="bytes"),
        pytest.param([("authorization", f"Bearer {SECRET}")], id="list-of-pairs"),
        pytest.param(_NoHeaders(), id="headers-none"),
    ],
)
def test_unsupported_request_type_is_a_type_error(request_object: object) -> None:
    """A value no framework produces is a programming error, named in the message."""
    with pytest.raises(TypeError, match="cannot read headers from a"):
        bearer_token(request_object)


def test_lifespan_scope_is_a_type_error() -> None:
    """An ASGI scope that is not a request (``lifespan``) cannot carry a bearer token."""
    with pytest.raises(TypeError, match="'lifespan' carries no request"):
        bearer_token({"type": "lifespan", "headers": []})


def test_header_value_of_another_type_is_a_type_error() -> None:
    """A mapping whose value is neither ``str`` nor ``bytes`` is a programming error."""
    with pytest.raises(TypeError, match="must be str or bytes, not int"):
        bearer_token({"Authorization": 42})


def test_email_message_without_authorization_is_missing() -> None:
    """``Message.get_all`` answers ``None`` when absent; that is no header, not a crash."""
    _rejected(bearer_token(email.message.Message()), MISSING)


# Any character at all, lone surrogates and controls included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=64)
HEADER_VALUES = st.one_of(
    ANY_TEXT,
    st.builds(
        "".join,
        st.tuples(st.sampled_from(["Bearer ", "bearer  ", "Bearer", "Basic ", " "]), ANY_TEXT),
    ),
    st.from_regex(r"Bearer +[A-Za-z0-9\-._~+/]+=*[ \t,=]?.?", fullmatch=True),
)


def _check_outcome(result: Credentials | RequestState) -> None:
    if isinstance(result, Credentials):
        assert B64TOKEN.fullmatch(result.token)
        assert not any(c.isspace() for c in result.token)
        assert len(result.token) <= MAX_TOKEN_LENGTH
    else:
        assert result.reason in {MISSING, MALFORMED}


@given(
    st.dictionaries(st.sampled_from(["Authorization", "authorization", "Accept"]), HEADER_VALUES)
)
def test_any_header_text_never_raises_or_yields_a_spaced_token(headers: dict[str, str]) -> None:
    """Property: arbitrary text values give a b64token without whitespace, or a rejection."""
    _check_outcome(bearer_token(headers))


@given(st.lists(st.tuples(st.sampled_from([b"authorization", b"accept"]), st.binary())))
def test_any_asgi_header_bytes_never_raise(headers: list[tuple[bytes, bytes]]) -> None:
    """Property: arbitrary header bytes in a scope give a valid token or a rejection."""
    _check_outcome(bearer_token({"type": "http", "headers": headers}))


@given(st.from_regex(r"[A-Za-z0-9\-._~+/]{1,300}=*", fullmatch=True), st.integers(1, 5))
def test_every_b64token_round_trips(token: str, spaces: int) -> None:
    """Property: every RFC 6750 b64token after ``Bearer`` and some spaces comes back as is."""
    assert bearer_token({"Authorization": "Bearer" + " " * spaces + token}) == Credentials(token)


# ---- detect_token_type ---------------------------------------------------------------

_KEY = "k" * 64  # PyJWT warns on HMAC keys shorter than the hash


def _jws(claims: dict[str, object]) -> str:
    return jwt.encode(claims, _KEY)


def _raw_jws(payload: bytes) -> str:
    segment = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{segment}.c2ln"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        pytest.param("mt_0123456789abcdef0123456789abcdef", TokenType.M2M_TOKEN, id="mt"),
        pytest.param("ak_0123456789", TokenType.API_KEY, id="ak"),
        pytest.param("oat_0123456789", TokenType.OAUTH_TOKEN, id="oat"),
        pytest.param("mt_a.b.c", TokenType.M2M_TOKEN, id="prefix-before-jws-shape"),
        pytest.param(
            _jws({"sub": "mch_2abcdefghijklmnopqrstuvwxy"}), TokenType.M2M_TOKEN, id="m2m-jwt"
        ),
        pytest.param(_jws({"sub": "user_2abc"}), TokenType.SESSION_TOKEN, id="session-jwt"),
        pytest.param(_jws({"iss": "x"}), TokenType.SESSION_TOKEN, id="jwt-without-sub"),
        pytest.param(_jws({"sub": 42}), TokenType.SESSION_TOKEN, id="jwt-with-numeric-sub"),
        pytest.param(_raw_jws(b"not json"), TokenType.SESSION_TOKEN, id="jws-payload-not-json"),
        pytest.param(_raw_jws(b"[" * 5000), TokenType.SESSION_TOKEN, id="jws-deeply-nested"),
        pytest.param(_raw_jws(b"\xff\xfe"), TokenType.SESSION_TOKEN, id="jws-payload-not-utf8"),
        pytest.param("a.b.c", TokenType.SESSION_TOKEN, id="bare-jws-shape"),
        pytest.param("MT_abc", None, id="prefix-is-case-sensitive"),
        pytest.param("mch_abc", None, id="machine-id"),
        pytest.param("sk_test_abc", None, id="instance-key"),
        pytest.param("opaque", None, id="no-prefix"),
        pytest.param("", None, id="empty"),
        pytest.param("a.b", None, id="two-segments"),
        pytest.param("a.b.c.d", None, id="four-segments"),
        pytest.param("a..c", None, id="empty-segment"),
        pytest.param("a.b.c=", None, id="padded-segment"),
        pytest.param("a.b+.c", None, id="base64-not-base64url"),
    ],
)
def test_detect_token_type(token: str, expected: TokenType | None) -> None:
    """Type by prefix, then a JWS by its unverified ``sub``, as Clerk's SDKs tell them apart."""
    assert detect_token_type(token) is expected


@given(ANY_TEXT)
def test_detect_token_type_never_raises_on_text(token: str) -> None:
    """Property: any string at all gets a type or ``None``, never an exception."""
    assert detect_token_type(token) in {None, *TokenType}


@given(st.binary(min_size=1, max_size=2048))
def test_detect_token_type_never_raises_on_any_jws_payload(payload: bytes) -> None:
    """Property: a JWS-shaped token with any payload bytes is a session or M2M token."""
    detected = detect_token_type(_raw_jws(payload))
    assert detected in {TokenType.SESSION_TOKEN, TokenType.M2M_TOKEN}
    subject = None
    with suppress(ValueError, AttributeError, RecursionError):
        subject = json.loads(payload).get("sub")
    if detected is TokenType.M2M_TOKEN:
        assert isinstance(subject, str)
        assert subject.startswith("mch_")


# ---- accepted_types ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param("any", set(TokenType), id="any"),
        pytest.param("m2m_token", {TokenType.M2M_TOKEN}, id="one-name"),
        pytest.param(TokenType.API_KEY, {TokenType.API_KEY}, id="one-member"),
        pytest.param(
            ["m2m_token", "oauth_token"], {TokenType.M2M_TOKEN, TokenType.OAUTH_TOKEN}, id="list"
        ),
        pytest.param(
            ("session_token", TokenType.SESSION_TOKEN), {TokenType.SESSION_TOKEN}, id="tuple-repeat"
        ),
    ],
)
def test_accepted_types(setting: Sequence[str] | str, expected: set[TokenType]) -> None:
    """``"any"``, one type or a list of types name that set of token types."""
    assert accepted_types(setting) == frozenset(expected)


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param("M2M_TOKEN", id="member-name-not-value"),
        pytest.param("machine_token", id="unknown-name"),
        pytest.param("", id="empty-string"),
        pytest.param([], id="empty-list"),
        pytest.param(["any"], id="any-inside-a-list"),
        pytest.param(["m2m_token", "bogus"], id="one-unknown-in-list"),
    ],
)
def test_accepted_types_refuses_what_names_no_type(setting: Sequence[str] | str) -> None:
    """A setting naming no known type is a ``ValueError`` that lists the allowed values."""
    with pytest.raises(ValueError, match="expected 'any', or one or a list of: 'm2m_token'"):
        accepted_types(setting)


@pytest.mark.parametrize(
    "value",
    ["\rBEARER", "\nbearer", "\x1cBearer", "\x85Bearer", "\x0b\x0bBearer", "\x1cBearer abc"],
)
def test_scheme_after_a_control_character_is_malformed_not_a_token(
    make_request: Callable[..., Any], value: str
) -> None:
    """Fuzz finding: a CR before the scheme gave its tail as the token ("R" for "BEARER").

    The token was sliced at the scheme's length, but ``str.split`` had skipped a leading
    CR, LF, FS or NEL, none of which is the SP or HTAB RFC 9110 allows there.
    """
    found = bearer_token(make_request("dict", [("Authorization", value)]))
    _rejected(found, AuthReason.AUTHORIZATION_MALFORMED)
