"""The SDK's exception tree, and how an error answer becomes one of its classes."""

from __future__ import annotations

import re
from typing import Any, Final

import pytest

import gatepass
import gatepass._exceptions
from gatepass import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    AuthReason,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    GatepassError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TokenVerificationError,
)
from gatepass._exceptions import api_error

PARENTS: Final[dict[type[Exception], type[Exception]]] = {
    GatepassError: Exception,
    ConfigurationError: GatepassError,
    APIError: GatepassError,
    BadRequestError: APIError,
    AuthenticationError: APIError,
    PermissionDeniedError: APIError,
    NotFoundError: APIError,
    ConflictError: APIError,
    RateLimitError: APIError,
    ServerError: APIError,
    ServiceUnavailableError: ServerError,
    APIConnectionError: GatepassError,
    APITimeoutError: APIConnectionError,
    APIResponseError: GatepassError,
    TokenVerificationError: GatepassError,
}
"""The tree, written out: each class and its one base."""

TRACE: Final = "0123456789abcdef0123456789abcdef"


def _drawn_tree() -> dict[str, str]:
    """Each class in the module docstring's drawing, and the class drawn above it."""
    doc = gatepass._exceptions.__doc__
    assert doc is not None
    drawing = doc.split("```")[1]
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in drawing.strip("\n").splitlines():
        match = re.match(r"^([\s│├└─]*)(\w+)", line)
        assert match is not None, line
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else "Exception"
        stack.append((depth, name))
    return parents


def test_the_tree_is_as_written() -> None:
    """Each class has exactly the one base the tree gives it."""
    for cls, parent in PARENTS.items():
        assert cls.__bases__ == (parent,), cls


def test_the_tree_is_as_drawn_in_the_module_docstring() -> None:
    """The drawing in ``_exceptions.py`` is the truth: every class, every edge."""
    assert _drawn_tree() == {cls.__name__: base.__name__ for cls, base in PARENTS.items()}


def test_every_exported_exception_is_in_the_tree() -> None:
    """No exception is exported outside the tree, nor left out of it."""
    exported = {
        getattr(gatepass, name)
        for name in gatepass.__all__
        if isinstance(getattr(gatepass, name), type)
        and issubclass(getattr(gatepass, name), BaseException)
    }
    assert exported == set(PARENTS)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, BadRequestError),
        (422, BadRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServiceUnavailableError),
        (504, ServerError),
        (599, ServerError),
        (405, APIError),
        (418, APIError),
        (302, APIError),
    ],
)
def test_status_picks_the_class(status: int, cls: type[APIError]) -> None:
    """Each status maps to exactly one class; an unlisted one to its family's."""
    body = {
        "errors": [
            {
                "message": "Short",
                "long_message": "Longer text",
                "code": "some_code",
                "meta": {"param_name": "name"},
            }
        ],
        "clerk_trace_id": TRACE,
    }
    error = api_error(status, body, retry_after=1.5)
    assert type(error) is cls
    assert (error.status_code, error.code, error.message, error.long_message) == (
        status,
        "some_code",
        "Short",
        "Longer text",
    )
    assert (error.param_name, error.trace_id, error.retry_after) == ("name", TRACE, 1.5)
    assert error.errors == tuple(body["errors"])
    assert str(error) == f"{status} some_code: Longer text"


def test_first_error_speaks_for_all() -> None:
    """With several errors the first sets the attributes; all are kept in ``errors``."""
    first = {"message": "a", "long_message": "A", "code": "form_param_missing", "meta": {}}
    second = {"message": "b", "long_message": "B", "code": "form_param_unknown", "meta": {}}
    error = api_error(422, {"errors": [first, second], "clerk_trace_id": TRACE})
    assert (error.code, error.message, error.param_name) == ("form_param_missing", "a", None)
    assert error.errors == (first, second)


@pytest.mark.parametrize(
    "body",
    [
        None,
        "Bad Gateway",
        [],
        [{"code": "x"}],
        {},
        {"errors": "nope"},
        {"errors": []},
        {"errors": [1, "two", None]},
        {"errors": [{"code": 5, "message": None, "long_message": [], "meta": "m"}]},
        {"detail": "Not Found"},
    ],
)
def test_body_that_is_not_an_envelope(body: object) -> None:
    """Whatever the body, the status decides the class and the rest says ``http_<status>``."""
    error = api_error(503, body)
    assert type(error) is ServiceUnavailableError
    assert (error.code, error.message, error.long_message, error.param_name) == (
        "http_503",
        "HTTP 503",
        None,
        None,
    )
    assert (error.trace_id, error.retry_after) == (None, None)
    assert str(error) == "503 http_503: HTTP 503"


@pytest.mark.parametrize(
    ("meta", "param_name"),
    [({"param_name": "limit"}, "limit"), ({"param_name": 3}, None), ({}, None), (None, None)],
)
def test_param_name_comes_from_meta(meta: Any, param_name: str | None) -> None:
    """``meta.param_name`` is read when it is a string."""
    body = {"errors": [{"code": "c", "message": "m", "meta": meta}], "clerk_trace_id": 7}
    error = api_error(400, body)
    assert error.param_name == param_name
    assert error.trace_id is None  # not a string
    assert error.long_message is None
    assert str(error) == "400 c: m"


def test_other_exceptions_carry_their_details() -> None:
    """TokenVerificationError says why; APIResponseError may carry the status."""
    invalid = TokenVerificationError(AuthReason.TOKEN_INVALID, "nope", trace_id=TRACE)
    assert (invalid.reason, invalid.message, invalid.trace_id) == (
        AuthReason.TOKEN_INVALID,
        "nope",
        TRACE,
    )
    assert str(invalid) == "token-invalid: nope"
    assert TokenVerificationError(AuthReason.TOKEN_EXPIRED, "late").trace_id is None
    shape = APIResponseError("bad shape", status_code=200)
    assert (str(shape), shape.status_code) == ("bad shape", 200)
    assert APIResponseError("bad").status_code is None
