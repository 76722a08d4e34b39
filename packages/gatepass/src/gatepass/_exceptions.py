"""The SDK's exceptions: one tree, rooted at ``GatepassError``.

```
GatepassError
├── ConfigurationError         a key or URL the call needs is missing or malformed
├── APIError                   the server answered with an error envelope (CONTRACT.md §5)
│   ├── BadRequestError            400, 413 and 422: the request was refused as sent
│   ├── AuthenticationError        401: the key used is missing, malformed or unknown
│   ├── PermissionDeniedError      403: a valid key, not allowed to do this
│   ├── NotFoundError              404: no such machine or token (or another instance's)
│   ├── ConflictError              409: the scope already exists
│   ├── RateLimitError             429: slow down, for ``retry_after`` seconds
│   └── ServerError                5xx
│       └── ServiceUnavailableError    503: storage unreachable; retry after ``retry_after``
├── APIConnectionError         no answer: refused, reset, DNS, TLS…
│   └── APITimeoutError            no answer in time
├── APIResponseError           an answer that is not the shape the contract promises
└── TokenVerificationError     a token is not valid (``reason`` says why)
```

``authenticate_request`` never raises these for a bad token: it returns a
``RequestState`` saying why. ``m2m_tokens.verify`` raises ``TokenVerificationError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gatepass._state import AuthReason

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "GatepassError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "TokenVerificationError",
    "api_error",
]


class GatepassError(Exception):
    """The root of every exception the SDK raises."""


class ConfigurationError(GatepassError):
    """A key or URL the call needs is missing or malformed."""


class APIError(GatepassError):
    """The server answered with an error.

    ``code`` is the first error's machine-readable code (``resource_not_found``…),
    ``message`` its short text, ``long_message`` the longer one, ``param_name`` the field a
    validation error is about, and ``trace_id`` the request id the server logged it under.
    """

    def __init__(
        self,
        status_code: int,
        *,
        code: str,
        message: str,
        long_message: str | None = None,
        param_name: str | None = None,
        trace_id: str | None = None,
        errors: tuple[Mapping[str, Any], ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {long_message or message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.long_message = long_message
        self.param_name = param_name
        self.trace_id = trace_id
        self.errors = errors
        self.retry_after = retry_after


class BadRequestError(APIError):
    """400, 413 or 422: the request was refused as sent; ``param_name`` names the field."""


class AuthenticationError(APIError):
    """401: the key used is missing, malformed or unknown."""


class PermissionDeniedError(APIError):
    """403: the key is valid but not allowed to do this."""


class NotFoundError(APIError):
    """404: no such machine or token in this instance."""


class ConflictError(APIError):
    """409: the object already exists (a scope)."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` says for how long (seconds)."""


class ServerError(APIError):
    """A 5xx answer."""


class ServiceUnavailableError(ServerError):
    """503: the server cannot reach its storage; ``retry_after`` says when to try again."""


class APIConnectionError(GatepassError):
    """The request got no answer: connection refused or reset, DNS, TLS."""


class APITimeoutError(APIConnectionError):
    """The request got no answer in time."""


class APIResponseError(GatepassError):
    """An answer that is not what CONTRACT.md promises (wrong shape or content type)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TokenVerificationError(GatepassError):
    """A token is not valid; ``reason`` says why, ``trace_id`` names the server's request."""

    def __init__(self, reason: AuthReason, message: str, *, trace_id: str | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.trace_id = trace_id


_BY_STATUS: Final[dict[int, type[APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def api_error(status_code: int, body: object, *, retry_after: float | None = None) -> APIError:
    """The exception for an error answer, read from Clerk's error envelope when it has one."""
    errors: tuple[Mapping[str, Any], ...] = ()
    trace_id = None
    if isinstance(body, dict):
        listed = body.get("errors")
        if isinstance(listed, list):
            errors = tuple(e for e in listed if isinstance(e, dict))
        trace = body.get("clerk_trace_id")
        trace_id = trace if isinstance(trace, str) else None
    first: Mapping[str, Any] = errors[0] if errors else {}
    meta = first.get("meta")
    param_name = meta.get("param_name") if isinstance(meta, dict) else None
    default = ServerError if status_code >= 500 else APIError  # noqa: PLR2004 - the 5xx class
    cls = _BY_STATUS.get(status_code, default)
    return cls(
        status_code,
        code=_text(first.get("code")) or f"http_{status_code}",
        message=_text(first.get("message")) or f"HTTP {status_code}",
        long_message=_text(first.get("long_message")),
        param_name=_text(param_name),
        trace_id=trace_id,
        errors=errors,
        retry_after=retry_after,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
