"""What the fuzz suites share: Hypothesis profiles, budgets, hostile strategies, checks.

A property is written once as a plain function and run twice by :func:`run_property`:
with the default budget in the default run and with :data:`LONG_FACTOR` times more
examples behind ``@pytest.mark.long`` (the ``budget`` parameter of each test).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

DEFAULT_PROFILE: Final = "gatepass-fuzz"
LONG_PROFILE: Final = "gatepass-fuzz-long"
LONG_FACTOR: Final = 20

# The two budgets a fuzz test runs with: 1 in the default run, LONG_FACTOR under `long`.
BUDGETS: Final = [
    pytest.param(1, id="default"),
    pytest.param(LONG_FACTOR, id="long", marks=pytest.mark.long),
]


def register_profiles() -> None:
    """Register both profiles (idempotent). Neither is loaded: tests pick one per call."""
    # NOTE: no deadline: a per-example wall-clock limit is a timing assert in disguise,
    # and the end-to-end examples do real I/O on a 2-core machine shared with others.
    common: dict[str, Any] = {
        "deadline": None,
        "print_blob": True,
        "suppress_health_check": [
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    }
    settings.register_profile(DEFAULT_PROFILE, max_examples=200, **common)
    settings.register_profile(LONG_PROFILE, max_examples=200 * LONG_FACTOR, **common)


def fuzz_settings(examples: int, budget: int = 1) -> settings:
    """Settings for ``examples`` examples times ``budget``, on the matching profile."""
    register_profiles()
    profile = settings.get_profile(LONG_PROFILE if budget > 1 else DEFAULT_PROFILE)
    return settings(profile, max_examples=examples * budget)


def run_property(
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], None],
    *,
    examples: int,
    budget: int,
) -> None:
    """Check ``check`` on ``examples * budget`` values drawn from ``strategy``."""
    fuzz_settings(examples, budget)(given(strategy)(check))()


def draw_examples(strategy: st.SearchStrategy[Any], *, examples: int, budget: int) -> list[Any]:
    """Values drawn by Hypothesis, for a check that must run in the test's event loop.

    Async checks cannot run inside ``@given``; the values are drawn first (the same
    generation, without shrinking) and the test reports the value that failed.
    """
    drawn: list[Any] = []

    def keep(value: Any) -> None:
        drawn.append(value)

    run_property(strategy, keep, examples=examples, budget=budget)
    return drawn


# -- hostile text and bytes -------------------------------------------------------------

B64URL: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Characters that have broken parsers before: separators, controls, NUL, the non-ASCII
# whitespace str.split() knows, a BOM, lone surrogates, a Kelvin sign (lowercases to k).
NASTY_CHARS: Final = (
    " \t\r\n\x00\x0b\x0c\x1c\x1d\x1e\x1f\x7f\x85\xa0\u1680\u2028\u2029\u3000\ufeff"
    "\ud800\udfff\u212a=,;:\"'\\/+.~_-%*!"
)
ANY_CHAR: Final = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),
    st.sampled_from(NASTY_CHARS),
)
ANY_TEXT: Final = st.text(ANY_CHAR, max_size=200)
ASCII_TEXT: Final = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=100)


def mutations(original: str, alphabet: str = "") -> st.SearchStrategy[str]:
    """``original`` with one character substituted, deleted, inserted, or its ends cut.

    Substitutions draw from ``alphabet`` (the format's own characters, the likeliest to
    slip through) or any character; the result always differs from ``original``.
    """
    chars = st.sampled_from(alphabet) if alphabet else ANY_CHAR
    any_chars = st.one_of(chars, ANY_CHAR)
    index = st.integers(min_value=0, max_value=max(0, len(original) - 1))

    def substitute(args: tuple[int, str]) -> str:
        i, char = args
        return original[:i] + char + original[i + 1 :]

    def insert(args: tuple[int, str]) -> str:
        i, char = args
        return original[:i] + char + original[i:]

    return st.one_of(
        st.tuples(index, any_chars).map(substitute),
        st.tuples(st.integers(0, len(original)), any_chars).map(insert),
        index.map(lambda i: original[:i] + original[i + 1 :]),
        st.integers(0, len(original) - 1).map(lambda n: original[:n]),
        st.integers(1, len(original)).map(lambda n: original[n:]),
        st.sampled_from(["=", "==", " ", "\n", "\x00", "."]).map(lambda tail: original + tail),
    ).filter(lambda mutated: mutated != original)


# -- JSON -------------------------------------------------------------------------------

_JSON_SCALARS: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64),
    st.integers(min_value=-(2**64), max_value=-(2**63) + 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(ANY_CHAR, max_size=40),
)
JSON_VALUES: Final = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.text(ANY_CHAR, max_size=12), inner, max_size=5),
    ),
    max_leaves=20,
)


def json_text(value: object) -> str:
    """``value`` as JSON text, ASCII only: lone surrogates stay escapes, as a client may send."""
    return json.dumps(value, ensure_ascii=True)


# Raw JSON-ish texts no encoder writes: the hazards of SECURITY.md principle 5.
HOSTILE_JSON: Final = st.one_of(
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(1, 6000).map(lambda n: "[" * n),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            '{"a": NaN}',
            '{"a": 1e400}',
            '{"a": -1e400}',
            '{"a": 1' + "0" * 5000 + "}",
            '{"a": "\\ud800"}',
            '{"\\udfff": 1}',
            '{"a": "\\u0000"}',
            '{"a": 1, "a": 2}',
            '{"a": .5}',
            "\ufeff{}",
            "{} {}",
            '{"a"}',
            "",
            " ",
            "null",
            "[]",
            '"text"',
            "0",
        ]
    ),
    st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")),
)


def b64url(raw: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# -- the rejection every "no" must be ---------------------------------------------------

ENVELOPE_KEYS: Final = {"errors", "clerk_trace_id"}
ERROR_KEYS: Final = {"message", "long_message", "code", "meta"}


def assert_envelope(response: httpx.Response) -> dict[str, Any]:
    """A 4xx/503 answer is exactly one error in the Clerk envelope, as application/json."""
    assert response.headers.get("content-type") == "application/json", response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == ENVELOPE_KEYS, body
    assert isinstance(body["errors"], list), body
    assert len(body["errors"]) == 1, body
    error = body["errors"][0]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["code"], str), error
    assert error["code"], error
    assert isinstance(error["message"], str), error
    assert isinstance(error["long_message"], str), error
    assert isinstance(error["meta"], dict), error
    assert body["clerk_trace_id"] == response.headers["x-request-id"], body
    if response.status_code in {429, 503}:
        assert response.headers.get("retry-after"), response.headers
    return dict(error)
