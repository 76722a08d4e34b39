"""The token rules without I/O: check order, claims limits, lifetimes, canonical JSON, ids."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatepass_server.domain.keys import is_token_id, new_token_id
from gatepass_server.domain.tokens import (
    MAX_CLAIMS_BYTES,
    MAX_CLAIMS_DEPTH,
    RESERVED_CLAIMS,
    M2MToken,
    TokenFormat,
    VerifyFailure,
    canonical_json,
    check_token,
    claims_problem,
    lifetime_ms,
)

# NOTE: Hypothesis' per-example deadline is a wall-clock threshold; the suite has none.
PROPERTY = settings(deadline=None, max_examples=100)

INSTANCE: Final = "ins_" + "a" * 27
OTHER_INSTANCE: Final = "ins_" + "b" * 27
SUBJECT: Final = "mch_" + "s" * 27
RECEIVER: Final = "mch_" + "r" * 27
STRANGER: Final = "mch_" + "x" * 27
NOW: Final = 1_754_938_436_732

TOKEN: Final = M2MToken(
    id="mt_" + "0" * 32,
    instance_id=INSTANCE,
    subject=SUBJECT,
    token_format=TokenFormat.OPAQUE,
    claims=None,
    scopes=(RECEIVER,),
    expiration=NOW + 60_000,
    revoked_at=None,
    revocation_reason=None,
    last_used_at=None,
    created_at=NOW,
    updated_at=NOW,
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8).filter(lambda k: "\x00" not in k), inner, max_size=4),
    ),
    max_leaves=12,
)
SAFE_KEYS = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12
).filter(lambda key: key not in RESERVED_CLAIMS)
SAFE_CLAIMS = st.dictionaries(SAFE_KEYS, JSON_VALUES, max_size=5)


def _nested(depth: int) -> dict[str, Any]:
    """A claims object whose nesting is exactly ``depth`` levels (the object itself is 1)."""
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"k": value}
    return value if isinstance(value, dict) else {"k": value}


def _depth(value: Any) -> int:
    """Nesting depth as the contract counts it: a scalar or empty container is 1."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 1


def _check(token: M2MToken, **overrides: Any) -> VerifyFailure | None:
    arguments: dict[str, Any] = {
        "now_ms": NOW,
        "instance_id": INSTANCE,
        "caller_machine_id": None,
        **overrides,
    }
    return check_token(token, **arguments)


# -- check_token ---------------------------------------------------------------------------


def test_check_token_accepts_a_live_token_for_the_admin_and_a_scoped_machine() -> None:
    """A live, unrevoked token of this instance is valid for sk and for a scoped machine."""
    assert _check(TOKEN) is None
    assert _check(TOKEN, caller_machine_id=RECEIVER) is None


@pytest.mark.parametrize(
    ("token", "overrides", "failure"),
    [
        (TOKEN, {"instance_id": OTHER_INSTANCE}, VerifyFailure.OTHER_INSTANCE),
        (replace(TOKEN, revoked_at=NOW), {}, VerifyFailure.REVOKED),
        (TOKEN, {"now_ms": TOKEN.expiration}, VerifyFailure.EXPIRED),
        (TOKEN, {"caller_machine_id": STRANGER}, VerifyFailure.OUT_OF_SCOPE),
        (TOKEN, {"caller_machine_id": SUBJECT}, VerifyFailure.OUT_OF_SCOPE),
    ],
    ids=["other-instance", "revoked", "expired", "out-of-scope", "subject-itself"],
)
def test_check_token_names_each_failure(
    token: M2MToken, overrides: dict[str, Any], failure: VerifyFailure
) -> None:
    """Each single defect is reported as its own VerifyFailure."""
    assert _check(token, **overrides) is failure


def test_check_token_checks_in_a_fixed_order() -> None:
    """Instance before revocation before expiry before scope, whatever else is wrong."""
    worst = replace(TOKEN, revoked_at=NOW)
    late = TOKEN.expiration + 1
    assert (
        _check(worst, instance_id=OTHER_INSTANCE, now_ms=late, caller_machine_id=STRANGER)
        is VerifyFailure.OTHER_INSTANCE
    )
    assert _check(worst, now_ms=late, caller_machine_id=STRANGER) is VerifyFailure.REVOKED
    assert _check(TOKEN, now_ms=late, caller_machine_id=STRANGER) is VerifyFailure.EXPIRED


def test_expiry_boundary_is_exclusive() -> None:
    """Valid one millisecond before ``expiration``; expired at it and after it."""
    assert _check(TOKEN, now_ms=TOKEN.expiration - 1) is None
    assert _check(TOKEN, now_ms=TOKEN.expiration) is VerifyFailure.EXPIRED
    assert _check(TOKEN, now_ms=TOKEN.expiration + 1) is VerifyFailure.EXPIRED
    assert TOKEN.expired(TOKEN.expiration)
    assert not TOKEN.expired(TOKEN.expiration - 1)


def test_revoked_property_follows_revoked_at() -> None:
    """``revoked`` is true exactly when ``revoked_at`` is set."""
    assert not TOKEN.revoked
    assert replace(TOKEN, revoked_at=0).revoked


@PROPERTY
@given(now=st.integers(min_value=0, max_value=2**62), expiration=st.integers(0, 2**62))
def test_expired_means_now_at_or_past_expiration(now: int, expiration: int) -> None:
    """For any clock and expiration, check_token says EXPIRED iff now >= expiration."""
    token = replace(TOKEN, expiration=expiration)
    assert (_check(token, now_ms=now) is VerifyFailure.EXPIRED) == (now >= expiration)


# -- claims_problem ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RESERVED_CLAIMS))
def test_every_reserved_claim_is_refused(name: str) -> None:
    """Each reserved JWT name is machine_token_reserved_claim, and the message names it."""
    problem = claims_problem({name: "x", "ok": 1})
    assert problem is not None
    code, message = problem
    assert code == "machine_token_reserved_claim"
    assert name in message


def test_reserved_list_is_exactly_the_contract_list() -> None:
    """CONTRACT.md §4: iss sub aud exp nbf iat jti azp scopes cat."""
    assert set(RESERVED_CLAIMS) == {
        "iss",
        "sub",
        "aud",
        "exp",
        "nbf",
        "iat",
        "jti",
        "azp",
        "scopes",
        "cat",
    }


def test_reserved_names_only_count_at_the_top_level() -> None:
    """A nested object may use a reserved name: it cannot shadow a JWT claim."""
    assert claims_problem({"inner": {"sub": "x", "exp": 1}}) is None


def test_reserved_check_comes_before_size_and_depth() -> None:
    """A reserved name is reported even when the claims are also too deep and too big."""
    claims = {"sub": "x", "deep": _nested(MAX_CLAIMS_DEPTH + 2), "big": "a" * MAX_CLAIMS_BYTES}
    problem = claims_problem(claims)
    assert problem is not None
    assert problem[0] == "machine_token_reserved_claim"


def test_reserved_names_are_case_sensitive() -> None:
    """``Sub`` is not ``sub``: JWT claim names are case-sensitive (RFC 7519 §4)."""
    assert claims_problem({"Sub": "x", "EXP": 1}) is None


@PROPERTY
@given(claims=SAFE_CLAIMS, name=st.sampled_from(sorted(RESERVED_CLAIMS)), value=JSON_VALUES)
def test_any_claims_with_a_reserved_name_are_refused(
    claims: dict[str, Any], name: str, value: Any
) -> None:
    """Adding any reserved name to any claims makes them machine_token_reserved_claim."""
    problem = claims_problem({**claims, name: value})
    assert problem is not None
    assert problem[0] == "machine_token_reserved_claim"


def test_depth_limit_is_inclusive() -> None:
    """Exactly MAX_CLAIMS_DEPTH levels are fine; one more is form_param_value_invalid."""
    assert claims_problem(_nested(MAX_CLAIMS_DEPTH)) is None
    problem = claims_problem(_nested(MAX_CLAIMS_DEPTH + 1))
    assert problem is not None
    assert problem[0] == "form_param_value_invalid"
    assert "nest" in problem[1]


def test_depth_counts_arrays_too() -> None:
    """Arrays nest like objects."""
    value: Any = 1
    for _ in range(MAX_CLAIMS_DEPTH):
        value = [value]
    problem = claims_problem({"a": value})
    assert problem is not None
    assert problem[0] == "form_param_value_invalid"


def test_very_deep_claims_are_refused_without_recursion_error() -> None:
    """Thousands of levels end in a value, never a RecursionError."""
    value: Any = 1
    for _ in range(5000):
        value = {"k": value}
    problem = claims_problem(value)
    assert problem is not None
    assert problem[0] == "form_param_value_invalid"


def test_size_limit_is_inclusive() -> None:
    """Canonical JSON of exactly MAX_CLAIMS_BYTES bytes passes; one byte more fails."""
    overhead = len(canonical_json({"a": ""}))
    exact = {"a": "x" * (MAX_CLAIMS_BYTES - overhead)}
    assert len(canonical_json(exact).encode()) == MAX_CLAIMS_BYTES
    assert claims_problem(exact) is None
    problem = claims_problem({"a": "x" * (MAX_CLAIMS_BYTES - overhead + 1)})
    assert problem is not None
    assert problem[0] == "form_param_value_invalid"
    assert "bytes" in problem[1]


def test_size_is_measured_in_utf8_bytes() -> None:
    """Multi-byte characters count by their UTF-8 length, not as one each."""
    overhead = len(canonical_json({"a": ""}))
    chars = (MAX_CLAIMS_BYTES - overhead) // 3 + 1  # "€" is three bytes
    problem = claims_problem({"a": "€" * chars})
    assert problem is not None
    assert problem[0] == "form_param_value_invalid"


@pytest.mark.parametrize(
    "claims",
    [{"a": "x\x00y"}, {"a\x00": 1}, {"a": ["ok", {"b": "\x00"}]}],
    ids=["value", "key", "nested"],
)
def test_nul_anywhere_is_refused(claims: dict[str, Any]) -> None:
    """NUL in a key or value at any depth is refused (PostgreSQL cannot store it)."""
    problem = claims_problem(claims)
    assert problem is not None
    assert problem[0] == "form_param_value_invalid"
    assert "NUL" in problem[1]


def test_an_escaped_looking_string_is_not_nul() -> None:
    """The six characters backslash-u-0-0-0-0 are ordinary text, not a NUL."""
    assert claims_problem({"path": "C:\\u0000dir"}) is None


@pytest.mark.parametrize(
    "claims",
    [{"a": float("nan")}, {"a": float("inf")}, {"a": "\ud800"}, {"\udfff": 1}],
    ids=["nan", "inf", "lone-surrogate-value", "lone-surrogate-key"],
)
def test_unrepresentable_claims_are_refused(claims: dict[str, Any]) -> None:
    """Non-finite numbers and lone surrogates are form_param_value_invalid, not a crash."""
    problem = claims_problem(claims)
    assert problem is not None
    assert problem[0] == "form_param_value_invalid"


@PROPERTY
@given(claims=SAFE_CLAIMS)
def test_ordinary_claims_pass_or_fail_only_on_size(claims: dict[str, Any]) -> None:
    """Claims without reserved names, NUL or deep nesting are accepted unless too big."""
    problem = claims_problem(claims)
    if _depth(claims) <= MAX_CLAIMS_DEPTH and len(canonical_json(claims).encode()) <= (
        MAX_CLAIMS_BYTES
    ):
        assert problem is None, problem
    else:
        assert problem is not None
        assert problem[0] == "form_param_value_invalid"


# -- lifetime_ms -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "default", "expected"),
    [
        (None, 3600, 3_600_000),
        (60, 3600, 60_000),
        (60.0, 3600, 60_000),
        (1.5, 3600, 1_500),
        (0.0001, 3600, 1),
        (1e-300, 3600, 1),
        (0.0015, 3600, 2),
        (315_360_000, 1, 315_360_000_000),
    ],
)
def test_lifetime_ms(seconds: float | None, default: int, expected: int) -> None:
    """The requested seconds, else the machine default, in whole ms rounded up, at least 1."""
    assert lifetime_ms(seconds, default) == expected


@PROPERTY
@given(
    seconds=st.one_of(st.none(), st.floats(min_value=1e-9, max_value=315_360_000)),
    default=st.integers(min_value=1, max_value=315_360_000),
)
def test_lifetime_is_positive_and_covers_the_request(seconds: float | None, default: int) -> None:
    """Every token expires, never before the requested time and within one ms of it."""
    wanted = default if seconds is None else seconds
    result = lifetime_ms(seconds, default)
    assert isinstance(result, int)
    assert result >= 1
    assert result >= wanted * 1000
    assert result - wanted * 1000 < 1 or result == 1
    assert result == max(1, math.ceil(wanted * 1000))


# -- canonical_json --------------------------------------------------------------------------


def test_canonical_json_sorts_keys_and_drops_spaces() -> None:
    """One spelling: keys sorted at every level, no whitespace, Unicode kept as is."""
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == (
        '{"a":{"c":"é","d":[1,2]},"b":1}'
    )


def test_canonical_json_refuses_nan() -> None:
    """NaN has no JSON spelling: ValueError, never the non-standard ``NaN``."""
    with pytest.raises(ValueError, match="JSON"):
        canonical_json({"a": float("nan")})


@PROPERTY
@given(value=JSON_VALUES)
def test_canonical_json_is_stable(value: Any) -> None:
    """Parsing and re-encoding gives the same string; key order never matters."""
    first = canonical_json(value)
    assert canonical_json(json.loads(first)) == first
    if isinstance(value, dict):
        reordered = dict(reversed(list(value.items())))
        assert canonical_json(reordered) == first


# -- is_token_id -----------------------------------------------------------------------------


def test_new_token_ids_are_well_formed() -> None:
    """Every new id is mt_ and 32 lowercase hex, and 200 of them are all different."""
    ids = {new_token_id() for _ in range(200)}
    assert len(ids) == 200
    for token_id in ids:
        assert is_token_id(token_id)
        assert len(token_id) == 35


@pytest.mark.parametrize(
    "value",
    [
        "",
        "mt_",
        "mt_" + "0" * 31,
        "mt_" + "0" * 33,
        "mt_" + "A" * 32,
        "mt_" + "g" * 32,
        "MT_" + "0" * 32,
        "mt-" + "0" * 32,
        " mt_" + "0" * 32,
        "mt_" + "0" * 32 + "\n",
        "mt_" + "\u0660" * 32,  # ARABIC-INDIC DIGIT ZERO: a digit, not hex
        "mch_" + "0" * 27,
    ],
)
def test_is_token_id_refuses_near_misses(value: str) -> None:
    """Only the exact shape passes: no uppercase, no other digits, no padding."""
    assert not is_token_id(value)


@PROPERTY
@given(st.text(max_size=40))
def test_is_token_id_matches_the_regex(value: str) -> None:
    """For any text, is_token_id agrees with the contract's shape."""
    expected = (
        len(value) == 35
        and value.startswith("mt_")
        and all(c in "0123456789abcdef" for c in value[3:])
    )
    assert is_token_id(value) == expected
