"""Fuzzing the server's Authorization parsing (gatepass_server.web.auth) against a model.

The model is CONTRACT.md §5 written out: exactly one ``Authorization`` header, at most
1024 characters, the scheme ``Bearer`` in any case, one space, then one credential of
visible ASCII. Header bytes reach the app as an ASGI server passes them (latin-1).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

import pytest
from fuzz_support import ANY_TEXT, BUDGETS, NASTY_CHARS, draw_examples, mutations, run_property
from hypothesis import strategies as st
from starlette.requests import Request

from gatepass_server.domain.keys import BASE62, SecretKind, generate_secret
from gatepass_server.errors import (
    AuthenticationMissing,
    AuthorizationHeaderInvalid,
    GatepassError,
)
from gatepass_server.services.auth import InstancePrincipal
from gatepass_server.web.auth import MAX_AUTHORIZATION_LENGTH, bearer_secret

if TYPE_CHECKING:
    from gatepass_server.runtime import Runtime

_MODEL: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] ([\x21-\x7e]+)")

Headers = list[tuple[bytes, bytes]]


def model(values: list[bytes]) -> str | type[GatepassError]:
    """What the contract says ``bearer_secret`` answers for these header values."""
    if not values:
        return AuthenticationMissing
    if len(values) > 1:
        return AuthorizationHeaderInvalid
    text = values[0].decode("latin-1")
    match = _MODEL.fullmatch(text)
    if match is None or len(text) > MAX_AUTHORIZATION_LENGTH:
        return AuthorizationHeaderInvalid
    return match[1]


def request_with(headers: Headers) -> Request:
    """A Starlette request carrying exactly ``headers``."""
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    return Request(scope)


_SCHEMES: Final = st.sampled_from(
    ["Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Token", "Bearer:", "Bearerx", "Bear", ""]
)
_SEPARATORS: Final = st.sampled_from([" ", "  ", "\t", "", " \t", "\x0b", "\xa0", ",", "="])
_CREDENTIAL_CHARS: Final = st.one_of(
    st.sampled_from(BASE62 + "-._~+/="),
    st.characters(min_codepoint=0, max_codepoint=255),
    st.sampled_from([c for c in NASTY_CHARS if ord(c) < 256]),
)
_CREDENTIALS: Final = st.one_of(
    st.builds(generate_secret, st.sampled_from(list(SecretKind))),
    st.text(_CREDENTIAL_CHARS, max_size=60),
    st.integers(1000, 1100).map(lambda n: "a" * n),
)
_STRUCTURED: Final = st.builds(
    lambda scheme, sep, cred, tail: (scheme + sep + cred + tail).encode("latin-1"),
    _SCHEMES,
    _SEPARATORS,
    _CREDENTIALS,
    st.sampled_from(["", " ", "\t", ",", ", Bearer x"]),
)
_VALUES: Final = st.one_of(_STRUCTURED, st.binary(max_size=80))
_NOISE: Final = st.tuples(
    st.sampled_from([b"x-authorization", b"authorization-x", b"cookie", b"proxy-authorization"]),
    _VALUES,
)
_HEADER_SETS: Final = st.tuples(
    st.lists(_VALUES, max_size=3), st.lists(_NOISE, max_size=2), st.randoms()
).map(lambda t: _shuffled([(b"authorization", v) for v in t[0]] + t[1], t[2]))


def _shuffled(headers: Headers, rnd: Any) -> Headers:
    rnd.shuffle(headers)
    return headers


def check_against_model(headers: Headers) -> None:
    """``bearer_secret`` agrees with the model and raises nothing but the two 401s."""
    values = [v for k, v in headers if k == b"authorization"]
    expected = model(values)
    try:
        got: str | type[GatepassError] = bearer_secret(request_with(headers))
    except (AuthenticationMissing, AuthorizationHeaderInvalid) as exc:
        got = type(exc)
    assert got == expected, (headers, got, expected)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_bearer_secret_matches_the_contract_model(budget: int) -> None:
    """Generated header sets: the parser accepts exactly what the grammar model accepts."""
    run_property(_HEADER_SETS, check_against_model, examples=800, budget=budget)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_bearer_secret_never_accepts_a_mangled_header(budget: int) -> None:
    """Any one-character change of a valid header either still parses per the model or is a 401."""
    valid = "Bearer " + generate_secret(SecretKind.INSTANCE_TEST)

    def check(mutated: str) -> None:
        try:
            raw = mutated.encode("latin-1")
        except UnicodeEncodeError:
            raw = mutated.encode("utf-8", "surrogatepass")
        check_against_model([(b"authorization", raw)])

    run_property(mutations(valid, BASE62 + " "), check, examples=500, budget=budget)


# -- authenticate: the key lookup behind the parser ------------------------------------


async def _accepted(runtime: Runtime, candidates: list[str]) -> list[str]:
    """The candidates that authenticate; an exception names the candidate that raised it."""
    accepted = []
    for candidate in candidates:
        try:
            principal = await runtime.authenticator.authenticate(candidate)
        except Exception as exc:
            msg = f"authenticate({candidate!r}) raised {exc!r}"
            raise AssertionError(msg) from exc
        if principal is not None:
            accepted.append(candidate)
    return accepted


@pytest.mark.parametrize("budget", BUDGETS)
async def test_fuzz_authenticate_rejects_every_mutation_of_a_real_key(
    runtime: Runtime, sk: str, budget: int
) -> None:
    """SECURITY.md principle 7: the key authenticates; no one-character change of it does.

    Candidates are any text at all (lone surrogates and NUL included: the CLI and the
    bootstrap setting pass strings that never went through the header parser).
    """
    assert await runtime.authenticator.authenticate(sk) == InstancePrincipal(
        (await runtime.instances.list())[0].id
    )
    strategy = st.one_of(mutations(sk, BASE62), ANY_TEXT)
    candidates = draw_examples(strategy, examples=300, budget=budget)
    assert await _accepted(runtime, candidates) == []
