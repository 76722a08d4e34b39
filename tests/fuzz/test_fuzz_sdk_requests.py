"""Fuzzing the SDK's bearer-token extraction (gatepass._requests) against a grammar model.

The model is RFC 6750 §2.1 as the module documents it: one ``Authorization`` value, its
SP/HTAB ends ignored (RFC 9110 §5.5), the scheme ``Bearer`` in any case, one or more
spaces, one ``b64token``. The same header values are handed over in every request shape
the SDK reads, including the folded single value a WSGI server makes of repeats.
"""

from __future__ import annotations

import email.message
import re
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from fuzz_support import ANY_TEXT, BUDGETS, NASTY_CHARS, mutations, run_property
from hypothesis import strategies as st
from starlette.requests import Request
from werkzeug.test import EnvironBuilder

from gatepass._jwt import MAX_TOKEN_LENGTH
from gatepass._requests import Credentials, bearer_token, detect_token_type, plain_bearer
from gatepass._state import AuthReason, RequestState, TokenType
from gatepass_server.domain.keys import BASE62, SecretKind, generate_secret

if TYPE_CHECKING:
    from collections.abc import Callable

_B64TOKEN_CHARS: Final = BASE62 + "-._~+/"
_ACCEPTED: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
_TCHARS: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MAX_HEADER: Final = MAX_TOKEN_LENGTH + 256

# What the model says: the token, "missing", "malformed", or "rejected" (either reason:
# the value is no bearer credential and not even a well-formed other scheme).
Outcome = tuple[str, str]


def model(values: list[str]) -> Outcome:  # noqa: PLR0911 - one return per grammar rule
    """The outcome the grammar gives for the ``Authorization`` values a request carries."""
    if not values:
        return ("missing", "")
    if len(values) > 1:
        return ("malformed", "")
    raw = values[0]
    if len(raw) > _MAX_HEADER:
        return ("malformed", "")
    value = raw.strip(" \t")
    if not value or "," in value:
        return ("malformed", "")
    match = _ACCEPTED.fullmatch(value)
    if match is not None:
        token = match[1]
        return ("token", token) if len(token) <= MAX_TOKEN_LENGTH else ("malformed", "")
    scheme = re.split(r"[ \t]", value, maxsplit=1)[0]
    if scheme.lower() == "bearer":
        return ("malformed", "")
    return ("missing", "") if _TCHARS.fullmatch(scheme) else ("rejected", "")


def outcome(result: Credentials | RequestState) -> Outcome:
    """The SDK's answer in the model's terms (checking the state's invariants on the way)."""
    if isinstance(result, Credentials):
        return ("token", result.token)
    assert isinstance(result, RequestState), result
    assert not result.is_authenticated
    if result.reason is AuthReason.TOKEN_MISSING:
        return ("missing", "")
    assert result.reason is AuthReason.AUTHORIZATION_MALFORMED, result
    return ("malformed", "")


def agrees(got: Outcome, expected: Outcome) -> bool:
    """Equal, or both a rejection where the model allows either reason."""
    if expected[0] == "rejected":
        return got[0] in {"missing", "malformed"}
    return got == expected


# -- request shapes ---------------------------------------------------------------------


def _latin1(value: str) -> bytes:
    return value.encode("latin-1")


def _asgi(values: list[str]) -> dict[str, Any]:
    headers = [(b"accept", b"*/*")] + [(b"authorization", _latin1(v)) for v in values]
    return {"type": "http", "method": "GET", "path": "/", "headers": headers}


def _environ(values: list[str]) -> dict[str, Any]:
    environ: dict[str, Any] = {"wsgi.version": (1, 0), "REQUEST_METHOD": "GET"}
    if values:
        # NOTE: PEP 3333 servers fold repeats into one variable, joined by commas.
        environ["HTTP_AUTHORIZATION"] = ",".join(values)
    return environ


class _DjangoLike:
    """What the SDK reads of a Django ``HttpRequest``: ``META``."""

    def __init__(self, values: list[str]) -> None:
        self.META = _environ(values)


def _message(values: list[str]) -> email.message.Message:
    message = email.message.Message()
    for value in values:
        message["Authorization"] = value
    return message


def _dict(values: list[str]) -> dict[str, str]:
    # Distinct spellings of the name: a plain mapping can hold repeats only that way.
    spellings = ["Authorization", "authorization", "AUTHORIZATION", "AuThOrIzAtIoN"]
    return {"Accept": "*/*", **dict(zip(spellings, values, strict=False))}


# Each shape: how to build it, and the values the SDK then sees (WSGI folds them).
SHAPES: Final[dict[str, tuple[Callable[[list[str]], object], bool]]] = {
    "asgi-scope": (_asgi, False),
    "starlette": (lambda v: Request(_asgi(v)), False),
    "werkzeug": (
        lambda v: EnvironBuilder(headers=[("Authorization", x) for x in v]).get_request(),
        False,
    ),
    "wsgi-environ": (_environ, True),
    "django-meta": (_DjangoLike, True),
    "httpx-headers": (lambda v: httpx.Headers([("Authorization", _latin1(x)) for x in v]), False),
    "email-message": (_message, False),
    "dict": (_dict, False),
}

_SCHEMES: Final = st.sampled_from(
    [
        "Bearer",
        "bearer",
        "BEARER",
        "bEaReR",
        "Basic",
        "Token",
        "Bearer:",
        "Bearerx",
        "B\xe9arer",
        "",
    ]
)
_SEPARATORS: Final = st.sampled_from([" ", "   ", "\t", "", " \t", "\x0b", "\xa0", "\x1c", "\x85"])
_TOKENS: Final = st.one_of(
    st.builds(generate_secret, st.sampled_from(list(SecretKind))),
    st.text(st.sampled_from(_B64TOKEN_CHARS), min_size=1, max_size=40).map(
        lambda t: t + "=" * (len(t) % 3)
    ),
    st.text(
        st.one_of(st.sampled_from(_B64TOKEN_CHARS), st.characters(max_codepoint=255)), max_size=40
    ),
    st.integers(MAX_TOKEN_LENGTH - 2, MAX_TOKEN_LENGTH + 2).map(lambda n: "a" * n),
)
_VALUES: Final = st.one_of(
    st.builds(
        lambda lead, scheme, sep, token, tail: lead + scheme + sep + token + tail,
        st.sampled_from(["", " ", "\t", "\x1c", "\xa0"]),
        _SCHEMES,
        _SEPARATORS,
        _TOKENS,
        st.sampled_from(["", " ", "\t", ",", ", Bearer x", "\x85", " x"]),
    ),
    st.text(st.characters(max_codepoint=255), max_size=60),
    st.lists(
        st.sampled_from([c for c in NASTY_CHARS if ord(c) < 256] + ["Bearer ", "a"]), max_size=8
    ).map("".join),
)
_CASES: Final = st.tuples(st.sampled_from(sorted(SHAPES)), st.lists(_VALUES, max_size=3))


def _buildable(shape: str, values: list[str]) -> bool:
    # Werkzeug and email refuse newlines in a header value when building the request:
    # no server hands such a value over, so those shapes are not asked about it.
    if shape in {"werkzeug", "email-message"}:
        return not any(c in v for v in values for c in "\r\n")
    return True


def check_shape(case: tuple[str, list[str]]) -> None:
    """Every shape agrees with the model; the fast path agrees with the full parser."""
    shape, values = case
    if not _buildable(shape, values):
        return
    build, folds = SHAPES[shape]
    request = build(values)
    seen = ([",".join(values)] if values else []) if folds else values
    got = outcome(bearer_token(request))
    expected = model(seen)
    assert agrees(got, expected), (shape, values, got, expected)
    # NOTE: the cache's fast path may only ever find a token the full parser gives too.
    fast = plain_bearer(request)
    if fast is not None and re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", fast):
        assert got == ("token", fast), (shape, values, fast, got)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_bearer_token_matches_the_rfc6750_model_in_every_request_shape(budget: int) -> None:
    """ASGI, Starlette, Werkzeug, WSGI, Django META, httpx, email and dict: one grammar."""
    run_property(_CASES, check_shape, examples=800, budget=budget)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_bearer_token_refuses_mangled_headers(budget: int) -> None:
    """One-character changes of a valid header are judged exactly as the model judges them."""
    valid = "Bearer " + generate_secret(SecretKind.TOKEN)

    def check(mutated: str) -> None:
        if any(ord(c) > 255 for c in mutated):
            mutated = mutated.encode("utf-8", "surrogatepass").decode("latin-1")
        for shape in sorted(SHAPES):
            check_shape((shape, [mutated]))

    run_property(mutations(valid, _B64TOKEN_CHARS + " \t,="), check, examples=250, budget=budget)


def check_detect(token: str) -> None:
    """``detect_token_type`` never raises and agrees with the prefixes of CONTRACT.md §6."""
    kind = detect_token_type(token)
    if token.startswith("mt_"):
        assert kind is TokenType.M2M_TOKEN
    elif token.startswith("ak_"):
        assert kind is TokenType.API_KEY
    elif token.startswith("oat_"):
        assert kind is TokenType.OAUTH_TOKEN
    elif token.count(".") != 2:
        assert kind is None
    else:
        assert kind in {None, TokenType.M2M_TOKEN, TokenType.SESSION_TOKEN}


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_detect_token_type_never_raises(budget: int) -> None:
    """Any text, and JWS-shaped strings with arbitrary segments, give a type or None."""
    segment = st.text(st.sampled_from(BASE62 + "-_"), max_size=30)
    jws_like = st.builds(lambda a, b, c: f"{a}.{b}.{c}", segment, segment, segment)
    run_property(st.one_of(ANY_TEXT, jws_like), check_detect, examples=500, budget=budget)
