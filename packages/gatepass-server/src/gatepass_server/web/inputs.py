"""Reading request input safely: streamed size cap, strict JSON, typed field readers.

Every hazard of SECURITY.md principle 5 ends here as a 4xx: oversized or deeply nested
bodies, NaN/Infinity/1e400, huge integers, lone surrogates and NUL characters.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gatepass_server.domain.text import text_problem
from gatepass_server.errors import (
    FormParamError,
    MissingQueryParameter,
    RequestBodyInvalid,
    RequestBodyTooLarge,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from starlette.datastructures import QueryParams
    from starlette.requests import Request

__all__ = [
    "Form",
    "as_integer",
    "query_boolean",
    "query_integer",
    "read_json_object",
    "require_query",
    "single_query_values",
]

_decoder: Final = msgspec.json.Decoder()
# Values outside this range do not fit a signed 64-bit column.
_INT64_MAX: Final = 2**63 - 1
# NOTE: ASCII decimal only, with an optional fraction for the SDKs' ``10.0``: int() and
# float() alone would also take "1_0", " 5", Unicode digits, "1e3" and "inf".
_QUERY_NUMBER_RE: Final = re.compile(r"[+-]?[0-9]{1,20}(?:\.[0-9]{1,12})?")


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """Read the body (at most ``limit`` bytes, counted as it streams) as a JSON object.

    An empty body is ``{}``: missing fields are then reported one by one.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestBodyInvalid("Content-Length is not a number")
        if int(declared) > limit:
            raise RequestBodyTooLarge(f"The request body must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestBodyTooLarge(f"The request body must be at most {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise RequestBodyInvalid(
            "Request body invalid",
            long_message="The request body must be JSON sent with Content-Type: application/json",
        )
    # NOTE: bytes that are not UTF-8 raise UnicodeDecodeError, not msgspec.DecodeError.
    try:
        value = _decoder.decode(raw)
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise RequestBodyInvalid(
            "Request body invalid",
            long_message=f"The request body is not valid JSON: {_short(exc)}",
        ) from None
    if not isinstance(value, dict):
        raise RequestBodyInvalid(
            "Request body invalid",
            long_message="The request body must be a JSON object",
        )
    return value


def _short(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0][:200] or type(exc).__name__


class Form:
    """Typed, range-checked reads of one request's fields (body or query).

    ``status`` is 422 on ``/machines`` and 400 on ``/m2m_tokens`` (CONTRACT.md §5).
    Unknown fields are refused up front: that is what stops mass assignment of
    ``id``, ``instance_id``, ``scopes`` or ``subject``.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        allowed: Collection[str],
        status: int = 422,
    ) -> None:
        self._data = data
        self._status = status
        for name in data:
            if name not in allowed:
                shown = name if text_problem(name) is None else repr(name)
                raise self._error(
                    "form_param_unknown", shown[:100], f"{shown[:100]} is not a valid parameter"
                )

    def _error(self, code: str, name: str, message: str) -> FormParamError:
        return FormParamError(code, name, message, status=self._status)

    def _value(self, name: str, *, required: bool) -> Any:
        value = self._data.get(name)
        if value is None and required:
            raise self._error("form_param_missing", name, f"{name} is required")
        return value

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        max_length: int = 255,
        allow_blank: bool = False,
    ) -> str | None:
        """A string of at most ``max_length`` characters; ``None`` when absent or null."""
        value = self._value(name, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._error("form_param_format_invalid", name, f"{name} must be a string")
        return self.check_text(name, value, max_length=max_length, allow_blank=allow_blank)

    def raw_string(self, name: str) -> str | None:
        """A string as sent, type-checked only; ``None`` when absent or null."""
        value = self._value(name, required=False)
        if value is not None and not isinstance(value, str):
            raise self._error("form_param_format_invalid", name, f"{name} must be a string")
        return value

    def check_text(self, name: str, value: str, *, max_length: int, allow_blank: bool) -> str:
        """Apply the storable-text and length rules to ``value``."""
        if (problem := text_problem(value)) is not None:
            raise self._error("form_param_value_invalid", name, f"{name} {problem}")
        if len(value) > max_length:
            raise self._error(
                "form_param_max_length_exceeded",
                name,
                f"{name} must be at most {max_length} characters",
            )
        if not allow_blank and not value.strip():
            raise self._error("form_param_value_invalid", name, f"{name} must not be blank")
        return value

    def integer(
        self,
        name: str,
        *,
        minimum: int,
        maximum: int,
        required: bool = False,
    ) -> int | None:
        """An integer in ``[minimum, maximum]``; integral floats such as ``3600.0`` count."""
        value = self._value(name, required=required)
        if value is None:
            return None
        number = as_integer(value)
        if number is None:
            raise self._error("form_param_format_invalid", name, f"{name} must be an integer")
        if not minimum <= number <= maximum:
            raise self._error(
                "form_param_value_invalid",
                name,
                f"{name} must be between {minimum} and {maximum}",
            )
        return number

    def number(self, name: str, *, maximum: float) -> float | None:
        """A finite number in ``(0, maximum]``; ``None`` when absent or null."""
        value = self._value(name, required=False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._error("form_param_format_invalid", name, f"{name} must be a number")
        # NOTE: an int is compared as an int: math.isfinite(10**400) raises OverflowError.
        finite = isinstance(value, int) or math.isfinite(value)
        if not (finite and 0 < value <= maximum):
            raise self._error(
                "form_param_value_invalid",
                name,
                f"{name} must be greater than 0 and at most {maximum:g}",
            )
        return float(value)

    def json_object(self, name: str) -> dict[str, Any] | None:
        """A JSON object; ``None`` when absent or null."""
        value = self._value(name, required=False)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._error("form_param_format_invalid", name, f"{name} must be a JSON object")
        return value

    def choice(self, name: str, choices: Collection[str]) -> str | None:
        """One of ``choices``; ``None`` when absent or null."""
        value = self.string(name, max_length=64)
        if value is not None and value not in choices:
            raise self._error(
                "form_param_value_invalid",
                name,
                f"{name} must be one of {', '.join(sorted(choices))}",
            )
        return value

    def string_list(self, name: str, *, max_items: int, max_length: int = 64) -> list[str] | None:
        """An array of at most ``max_items`` non-blank strings."""
        value = self._value(name, required=False)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._error(
                "form_param_format_invalid", name, f"{name} must be an array of strings"
            )
        if len(value) > max_items:
            raise self._error(
                "form_param_array_size_exceeded",
                name,
                f"{name} must have at most {max_items} items",
            )
        return [
            self.check_text(name, item, max_length=max_length, allow_blank=False) for item in value
        ]


def as_integer(value: Any) -> int | None:
    """``value`` as an int64 if it is one (or an integral finite float), else ``None``.

    NOTE: the SDKs may send ``3600.0`` (CONTRACT.md §4); booleans are not numbers.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if not isinstance(value, int) or not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        return None
    return value


def query_integer(
    form_status: int,
    params: Mapping[str, str],
    name: str,
    *,
    default: int,
    minimum: int,
    maximum: int,
) -> int:
    """A query parameter holding an integer (``10`` or ``10.0``) in range."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    number: int | None = None
    if _QUERY_NUMBER_RE.fullmatch(raw):
        # NOTE: "10.0" is 10 (the JS SDK may send floats), read exactly: through float,
        # 2**62 + 1 would silently become 2**62.
        whole, _, fraction = raw.partition(".")
        number = as_integer(int(whole, 10)) if fraction.strip("0") == "" else None
    if number is None:
        raise FormParamError(
            "form_param_format_invalid", name, f"{name} must be an integer", status=form_status
        )
    if not minimum <= number <= maximum:
        raise FormParamError(
            "form_param_value_invalid",
            name,
            f"{name} must be between {minimum} and {maximum}",
            status=form_status,
        )
    return number


def query_boolean(form_status: int, params: Mapping[str, str], name: str) -> bool:
    """``true``/``false`` (or ``1``/``0``); absent is false (the JS SDK omits false)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return False
    value = raw.lower()
    if value in {"true", "1"}:
        return True
    if value in {"false", "0"}:
        return False
    raise FormParamError(
        "form_param_format_invalid",
        name,
        f"{name} must be true or false",
        status=form_status,
    )


def single_query_values(
    form_status: int, params: QueryParams, names: Collection[str]
) -> dict[str, str]:
    """The query parameters ``names``, one value each; a name given twice is a field error.

    NOTE: ``QueryParams.get`` silently takes the last of ``?after=x&after=0``, where a proxy
    or a log reader may take the first: one value or a 4xx, never a guess. Other names are
    ignored, as before.
    """
    values: dict[str, str] = {}
    for name in names:
        found = params.getlist(name)
        if len(found) > 1:
            raise FormParamError(
                "form_param_format_invalid",
                name,
                f"{name} must be given at most once",
                status=form_status,
            )
        if found:
            values[name] = found[0]
    return values


def require_query(params: Mapping[str, str], name: str) -> str:
    """A required query parameter, or 400 ``missing_query_parameter``."""
    value = params.get(name)
    if not value:
        raise MissingQueryParameter(f"{name} is required", meta={"param_name": name})
    return value
