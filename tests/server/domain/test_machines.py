"""Machine rules: the ``order_by`` allowlist, storable text and the limits of CONTRACT.md §4."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatepass_server.domain import machines
from gatepass_server.domain.machines import MachineListQuery, OrderBy, OrderField, parse_order_by
from gatepass_server.domain.text import text_problem

PROPERTY = settings(deadline=None, max_examples=200)
ANY_CHAR = st.one_of(st.characters(), st.characters(categories=["Cs"]))

ALLOWED = {
    "name": OrderBy(OrderField.NAME, descending=False),
    "+name": OrderBy(OrderField.NAME, descending=False),
    "-name": OrderBy(OrderField.NAME, descending=True),
    "created_at": OrderBy(OrderField.CREATED_AT, descending=False),
    "+created_at": OrderBy(OrderField.CREATED_AT, descending=False),
    "-created_at": OrderBy(OrderField.CREATED_AT, descending=True),
}


@pytest.mark.parametrize(("text", "expected"), list(ALLOWED.items()))
def test_parse_order_by_accepts_the_six_spellings(text: str, expected: OrderBy) -> None:
    """``name``/``created_at`` with an optional ``+`` or ``-`` parse to field and direction."""
    assert parse_order_by(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "+",
        "-",
        "--name",
        "+-name",
        "-+name",
        "++created_at",
        "Name",
        "NAME",
        "created",
        "createdAt",
        "name ",
        " name",
        "name\n",
        "name\x00",
        "name,created_at",
        "id",
        "updated_at",
        "instance_id",
        "name_search",
        "secret_key",
        "default_token_ttl",
        "name; DROP TABLE machines",
        "(SELECT 1)",
        "1",
        "-1",
        "ｎａｍｅ",  # noqa: RUF001 - fullwidth lookalike on purpose
        "\ud800name",
    ],
)
def test_parse_order_by_refuses_everything_else(text: str) -> None:
    """Other columns, other cases, padding, doubled signs and SQL fragments are refused."""
    assert parse_order_by(text) is None


@PROPERTY
@given(st.text(ANY_CHAR, max_size=40))
def test_parse_order_by_allowlist_over_arbitrary_text(text: str) -> None:
    """For any text, never raises; only the six allowed spellings parse."""
    parsed = parse_order_by(text)
    assert parsed == ALLOWED.get(text)


@PROPERTY
@given(st.sampled_from(["", "+", "-"]), st.sampled_from(["name", "created_at"]), st.text(ANY_CHAR))
def test_parse_order_by_refuses_suffixes(sign: str, field: str, suffix: str) -> None:
    """An allowed spelling with anything appended is refused (no prefix matching)."""
    text = sign + field + suffix
    assert parse_order_by(text) == ALLOWED.get(text)


def test_list_query_defaults() -> None:
    """The list defaults of CONTRACT.md §4: limit 10, offset 0, no filter, ``-created_at``."""
    query = MachineListQuery()
    assert query.limit == 10
    assert query.offset == 0
    assert query.query is None
    assert query.order_by == OrderBy(OrderField.CREATED_AT, descending=True)


# -- storable text ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["\x00", "a\x00", "\x00b", "name\x00with nul"])
def test_text_problem_refuses_nul(value: str) -> None:
    """NUL cannot be stored by PostgreSQL, so it is refused everywhere."""
    problem = text_problem(value)
    assert problem is not None
    assert "NUL" in problem


@pytest.mark.parametrize("value", ["\ud800", "a\udfff", "\udc00\ud800", "ok\ud83d"])
def test_text_problem_refuses_lone_surrogates(value: str) -> None:
    """Lone surrogates cannot be encoded as UTF-8, so they are refused."""
    problem = text_problem(value)
    assert problem is not None
    assert "surrogate" in problem


@PROPERTY
@given(st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"])))
def test_text_problem_accepts_any_valid_unicode(value: str) -> None:
    """Any text without NUL or lone surrogates (emoji, CJK, RTL, control characters) is fine."""
    assert text_problem(value) is None


@PROPERTY
@given(st.text(ANY_CHAR))
def test_text_problem_never_raises(value: str) -> None:
    """For any text, the answer is ``None`` exactly when it encodes as UTF-8 without NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        storable = False
    else:
        storable = "\x00" not in value
    assert (text_problem(value) is None) == storable


def test_text_problem_accepts_a_pair_of_surrogate_halves_as_one_character() -> None:
    """A real astral character (not two lone halves) is valid text."""
    assert text_problem("\U0001f600") is None


# -- limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_NAME_LENGTH", 255),
        ("MIN_TOKEN_TTL", 1),
        ("MAX_TOKEN_TTL", 315_360_000),
        ("DEFAULT_TOKEN_TTL", 3600),
        ("MAX_SCOPED_MACHINES", 150),
        ("MAX_PREVIOUS_TOKEN_TTL", 28_800),
        ("DEFAULT_LIST_LIMIT", 10),
        ("MAX_LIST_LIMIT", 500),
    ],
)
def test_limits_match_the_contract(name: str, value: int) -> None:
    """Each limit is the number CONTRACT.md §4 states."""
    assert getattr(machines, name) == value


def test_token_ttl_bounds_are_ordered() -> None:
    """The default TTL lies inside the allowed range; the maximum is ten years in seconds."""
    assert machines.MIN_TOKEN_TTL <= machines.DEFAULT_TOKEN_TTL <= machines.MAX_TOKEN_TTL
    assert machines.MAX_TOKEN_TTL == 10 * 365 * 24 * 3600
    assert machines.MAX_PREVIOUS_TOKEN_TTL == 8 * 3600
    assert 1 <= machines.DEFAULT_LIST_LIMIT <= machines.MAX_LIST_LIMIT
