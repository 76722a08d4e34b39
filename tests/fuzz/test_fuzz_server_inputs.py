"""Fuzzing request input (gatepass_server.web.inputs): JSON bodies, ``Form`` and queries.

Bodies are generated JSON, hostile JSON-like text (deep nesting, NaN, 1e400, 5000-digit
integers, escaped lone surrogates, NUL) and raw bytes, under generated ``Content-Type``
and ``Content-Length`` headers and chunkings. The only exceptions allowed out are the
module's own 4xx errors; every value handed on obeys the rule it was read with.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Final

import pytest
from fuzz_support import (
    ANY_TEXT,
    BUDGETS,
    HOSTILE_JSON,
    JSON_VALUES,
    json_text,
    run_property,
)
from hypothesis import strategies as st
from starlette.requests import Request

from gatepass_server.domain.text import text_problem
from gatepass_server.errors import (
    FormParamError,
    MissingQueryParameter,
    RequestBodyInvalid,
    RequestBodyTooLarge,
)
from gatepass_server.web.inputs import (
    Form,
    as_integer,
    query_boolean,
    query_integer,
    read_json_object,
    require_query,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine

LIMIT: Final = 4096
_INT64: Final = 2**63


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never really suspends (an in-memory body) to its end."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    msg = "the coroutine suspended: the body was expected in memory"
    raise AssertionError(msg)


def body_request(chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> Request:
    """A request whose body arrives in ``chunks``."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or [b""])
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, receive)


_CONTENT_TYPES: Final = st.sampled_from(
    [
        None,
        b"application/json",
        b"Application/JSON; charset=utf-8",
        b"application/json;",
        b"text/plain",
        b"application/jsonx",
        b"",
        b"\xff",
    ]
)
_BODIES: Final = st.one_of(
    JSON_VALUES.map(lambda v: json_text(v).encode()),
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4).map(
        lambda v: json_text(v).encode()
    ),
    HOSTILE_JSON.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300),
    st.integers(LIMIT - 2, LIMIT + 2).map(lambda n: b'{"a":"' + b"x" * max(0, n - 8) + b'"}'),
)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]], list[bytes]]:
    body = draw(_BODIES)
    headers: list[tuple[bytes, bytes]] = []
    content_type = draw(_CONTENT_TYPES)
    if content_type is not None:
        headers.append((b"content-type", content_type))
    length = draw(
        st.one_of(
            st.none(),
            st.just(str(len(body)).encode()),
            st.sampled_from([b"-1", b"1e3", b" 5", b"\xd9\xa1", b"99999999999999999999999", b"0"]),
        )
    )
    if length is not None:
        headers.append((b"content-length", length))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return body, headers, chunks


def _only_storable_keys(value: object) -> None:
    """Decoded JSON holds no lone surrogate (msgspec refuses them) at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            key.encode("utf-8")
            _only_storable_keys(item)
    elif isinstance(value, list):
        for item in value:
            _only_storable_keys(item)
    elif isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, float):
        assert math.isfinite(value)


def check_read(case: tuple[bytes, list[tuple[bytes, bytes]], list[bytes]]) -> None:
    """A JSON object, ``{}`` for an empty body, or one of the two body errors; nothing else."""
    body, headers, chunks = case
    try:
        value = run_sync(read_json_object(body_request(chunks, headers), LIMIT))
    except RequestBodyTooLarge:
        declared = dict(headers).get(b"content-length", b"")
        assert len(body) > LIMIT or (declared.isdigit() and int(declared) > LIMIT)
        return
    except RequestBodyInvalid:
        return
    assert isinstance(value, dict)
    assert len(body) <= LIMIT
    if not body.strip():
        assert value == {}
    _only_storable_keys(value)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_read_json_object_answers_an_object_or_a_body_error(budget: int) -> None:
    """Generated bodies, types, lengths and chunkings never raise anything unexpected."""
    run_property(_requests(), check_read, examples=400, budget=budget)


# -- Form: typed reads of whatever the body held ----------------------------------------

_FIELDS: Final = ("name", "ttl", "seconds", "claims", "format", "items", "raw")
_FORMS: Final = st.dictionaries(
    st.one_of(st.sampled_from(_FIELDS), ANY_TEXT), JSON_VALUES, max_size=5
)


def check_form(data: dict[str, Any]) -> None:
    """Each reader returns a value within its rule or raises a FormParamError, nothing else."""
    try:
        form = Form(data, allowed=_FIELDS, status=400)
    except FormParamError as exc:
        unknown: FormParamError | None = exc
    else:
        unknown = None
    if unknown is not None:
        assert unknown.code_for() == "form_param_unknown"
        assert any(name not in _FIELDS for name in data)
        return
    readers = {
        "name": lambda: form.string("name", required=True, max_length=255),
        "ttl": lambda: form.integer("ttl", minimum=1, maximum=315_360_000),
        "seconds": lambda: form.number("seconds", maximum=315_360_000),
        "claims": lambda: form.json_object("claims"),
        "format": lambda: form.choice("format", ["opaque", "jwt"]),
        "items": lambda: form.string_list("items", max_items=150),
        "raw": lambda: form.raw_string("raw"),
    }
    for field, read in readers.items():
        try:
            value = read()
        except FormParamError as exc:
            refused: FormParamError | None = exc
        else:
            refused = None
        if refused is None:
            _check_value(field, value)
        else:
            assert refused.status_for() == 400
            assert refused.meta.get("param_name") == field


def _check_value(field: str, value: object) -> None:
    if value is None:
        assert field != "name"
    elif field == "name":
        assert isinstance(value, str)
        assert text_problem(value) is None
        assert 0 < len(value) <= 255
        assert value.strip()
    elif field == "ttl":
        assert type(value) is int
        assert 1 <= value <= 315_360_000
    elif field == "seconds":
        assert type(value) is float
        assert math.isfinite(value)
        assert 0 < value <= 315_360_000
    elif field == "claims":
        assert isinstance(value, dict)
    elif field == "format":
        assert value in {"opaque", "jwt"}
    elif field == "items":
        assert isinstance(value, list)
        assert len(value) <= 150
        assert all(isinstance(i, str) and text_problem(i) is None and i.strip() for i in value)
    else:
        assert isinstance(value, str)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_form_readers_return_valid_values_or_field_errors(budget: int) -> None:
    """Any JSON at every field: a value obeying the reader's rule, or a field error."""
    run_property(_FORMS, check_form, examples=250, budget=budget)


def check_as_integer(value: object) -> None:
    """``as_integer`` gives an int64 equal to the input, or ``None``; never raises."""
    number = as_integer(value)
    if number is not None:
        assert type(number) is int
        assert -_INT64 <= number < _INT64
        assert number == value
        assert not isinstance(value, bool)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_as_integer_is_total(budget: int) -> None:
    """Any JSON value (floats with NaN and infinities too) is an int64 or ``None``."""
    values = st.one_of(JSON_VALUES, st.floats(), st.integers(-(2**70), 2**70))
    run_property(values, check_as_integer, examples=300, budget=budget)


# -- query helpers, against a model of their grammar ------------------------------------

_QUERY_MODEL: Final = re.compile(r"([+-]?[0-9]{1,20})(?:\.([0-9]{1,12}))?", re.ASCII)


def model_query_integer(raw: str | None, minimum: int, maximum: int) -> int | str:
    """The integer, or the error code the contract gives (default 7 when absent)."""
    if raw is None or raw == "":
        return 7
    match = _QUERY_MODEL.fullmatch(raw)
    if match is None or (match[2] and set(match[2]) != {"0"}):
        return "form_param_format_invalid"
    number = int(match[1])
    if not -_INT64 <= number < _INT64:
        return "form_param_format_invalid"
    if not minimum <= number <= maximum:
        return "form_param_value_invalid"
    return number


_QUERY_VALUES: Final = st.one_of(
    st.none(),
    ANY_TEXT,
    st.from_regex(r"[+-]?[0-9]{0,22}(\.[0-9]{0,13})?", fullmatch=True),
    st.integers(-(2**65), 2**65).map(str),
    st.sampled_from(
        ["1_0", " 5", "5 ", "\u0661", "1e3", "inf", "nan", "0x10", "10.0", "10.5", "-0"]
    ),
)


def check_query_integer(case: tuple[str | None, int, int]) -> None:
    """``query_integer`` agrees with the model; errors are field errors with the status."""
    raw, minimum, span = case
    maximum = minimum + span
    params = {} if raw is None else {"limit": raw}
    expected = model_query_integer(raw, minimum, maximum) if raw else 7
    try:
        got: int | str = query_integer(
            422, params, "limit", default=7, minimum=minimum, maximum=maximum
        )
    except FormParamError as exc:
        got = exc.code_for() if exc.status_for() == 422 else f"status {exc.status_for()}"
    assert got == expected, (raw, minimum, maximum, got, expected)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_query_integer_matches_its_grammar(budget: int) -> None:
    """ASCII decimal with an optional zero fraction, within int64 and the bounds; else 4xx."""
    case = st.tuples(_QUERY_VALUES, st.integers(-(2**62), 2**62), st.integers(0, 2**62))
    run_property(case, check_query_integer, examples=400, budget=budget)


def check_query_flags(raw: str | None) -> None:
    """``query_boolean`` and ``require_query`` agree with the model of their contract."""
    params = {} if raw is None else {"flag": raw}
    if raw is None or raw == "":
        expected: bool | str = False
    elif raw.isascii() and raw.lower() in {"true", "1"}:
        expected = True
    elif raw.isascii() and raw.lower() in {"false", "0"}:
        expected = False
    else:
        expected = "form_param_format_invalid"
    try:
        got: bool | str = query_boolean(400, params, "flag")
    except FormParamError as exc:
        got = exc.code_for()
    assert got == expected, (raw, got)
    try:
        assert require_query(params, "flag") == raw
        assert raw
    except MissingQueryParameter:
        assert not raw


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_query_boolean_and_required_parameters(budget: int) -> None:
    """Only true/false/1/0 in any ASCII case are booleans; an empty value is missing."""
    values = st.one_of(
        _QUERY_VALUES, st.sampled_from(["TRUE", "False", "tRuE", "1", "0", "yes", "\u0130"])
    )
    run_property(values, check_query_flags, examples=300, budget=budget)
