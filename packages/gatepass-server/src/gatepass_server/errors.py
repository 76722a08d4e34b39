"""The server's one exception tree.

Every error that can reach a client knows its wire ``code`` and HTTP ``status``;
``gatepass_server.web.errors`` is the single place that renders them (CONTRACT.md §5)::

    GatepassError                      (500 internal_error: a bug if it ever escapes)
    ├── AuthenticationError            401
    │   ├── AuthenticationMissing        authentication_invalid
    │   ├── AuthorizationHeaderInvalid   authorization_header_format_invalid
    │   ├── InstanceKeyInvalid           clerk_key_invalid
    │   └── MachineKeyInvalid            machine_secret_key_invalid
    ├── AuthorizationInvalid           403 authorization_invalid
    ├── NotFound                       404 resource_not_found
    ├── TokenInvalid                   404 token_invalid
    ├── MethodNotAllowed               405 method_not_allowed
    ├── Conflict                       409 conflict
    ├── RequestInvalid                 400
    │   ├── RequestBodyInvalid           request_body_invalid
    │   └── MissingQueryParameter        missing_query_parameter
    ├── FormParamError                 422 (400 on /m2m_tokens) form_param_*
    ├── RequestBodyTooLarge            413 request_body_too_large
    ├── TooManyRequests                429 too_many_requests
    ├── ServiceUnavailable             503 service_unavailable
    └── ConfigurationError             (start-up only, never on the wire)
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "AuthenticationMissing",
    "AuthorizationHeaderInvalid",
    "AuthorizationInvalid",
    "ConfigurationError",
    "Conflict",
    "FormParamError",
    "GatepassError",
    "InstanceKeyInvalid",
    "MachineKeyInvalid",
    "MethodNotAllowed",
    "MissingQueryParameter",
    "NotFound",
    "RequestBodyInvalid",
    "RequestBodyTooLarge",
    "RequestInvalid",
    "SchemaMismatch",
    "ServiceUnavailable",
    "TokenInvalid",
    "TooManyRequests",
]


class GatepassError(Exception):
    """Root of every error the server raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        long_message: str | None = None,
        meta: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.long_message = long_message or self.message
        self.meta: dict[str, str] = meta or {}
        self.headers: dict[str, str] = headers or {}
        super().__init__(self.long_message)

    def status_for(self) -> int:
        """Return the HTTP status to answer with."""
        return self.status

    def code_for(self) -> str:
        """Return the wire error code."""
        return self.code


class AuthenticationError(GatepassError):
    """The request carries no usable credentials."""

    status = 401
    code = "authentication_invalid"


class AuthenticationMissing(AuthenticationError):
    """No ``Authorization`` header at all."""

    code = "authentication_invalid"
    default_message = "Unauthorized request"


class AuthorizationHeaderInvalid(AuthenticationError):
    """The header is present but is not exactly ``Bearer <key>``."""

    code = "authorization_header_format_invalid"
    default_message = "Invalid Authorization header format"


class InstanceKeyInvalid(AuthenticationError):
    """An unknown, retired, malformed or foreign key."""

    code = "clerk_key_invalid"
    default_message = "The provided secret key is invalid"


class MachineKeyInvalid(AuthenticationError):
    """A route that needs a machine secret key got something else."""

    code = "machine_secret_key_invalid"
    default_message = "The provided machine secret key is invalid"


class AuthorizationInvalid(GatepassError):
    """A valid key that may not do this."""

    status = 403
    code = "authorization_invalid"
    default_message = "Unauthorized request"


class NotFound(GatepassError):
    """The object does not exist for this caller (another instance's included)."""

    status = 404
    code = "resource_not_found"
    default_message = "Resource not found"


class TokenInvalid(GatepassError):
    """Verification failed, for whatever reason: one answer for every "no"."""

    status = 404
    code = "token_invalid"
    default_message = "Token is invalid"
    # NOTE: byte-identical bodies for unknown, revoked, expired, out-of-scope and
    # other-instance tokens (SECURITY.md principle 2): never say which.


class MethodNotAllowed(GatepassError):
    """The path exists but not with this method."""

    status = 405
    code = "method_not_allowed"
    default_message = "Method not allowed"


class Conflict(GatepassError):
    """The object already exists."""

    status = 409
    code = "conflict"
    default_message = "Resource already exists"


class RequestInvalid(GatepassError):
    """The request as a whole cannot be read."""

    status = 400
    code = "request_invalid"


class RequestBodyInvalid(RequestInvalid):
    """Malformed JSON, a body that is not an object, or the wrong content type."""

    code = "request_body_invalid"
    default_message = "Request body invalid"


class MissingQueryParameter(RequestInvalid):
    """A required query parameter is absent."""

    code = "missing_query_parameter"
    default_message = "Missing query parameter"


class FormParamError(GatepassError):
    """One field of the body or query is missing, mistyped or out of range.

    The status differs by route family (CONTRACT.md §5): 422 on ``/machines``, 400 on
    ``/m2m_tokens``; the caller that validates picks it.
    """

    status = 422

    def __init__(
        self,
        code: str,
        param_name: str,
        message: str,
        *,
        status: int = 422,
    ) -> None:
        self._code = code
        self._status = status
        self.param_name = param_name
        super().__init__(message, long_message=message, meta={"param_name": param_name})

    def status_for(self) -> int:
        """Return 422 or 400, as chosen by the route family."""
        return self._status

    def code_for(self) -> str:
        """Return the ``form_param_*`` code."""
        return self._code


class RequestBodyTooLarge(GatepassError):
    """The body exceeds the configured limit."""

    status = 413
    code = "request_body_too_large"
    default_message = "Request body too large"


class TooManyRequests(GatepassError):
    """The caller is rate limited."""

    status = 429
    code = "too_many_requests"
    default_message = "Too many requests"


class ServiceUnavailable(GatepassError):
    """Storage cannot be reached; retry later."""

    status = 503
    code = "service_unavailable"
    default_message = "Service temporarily unavailable"


class ConfigurationError(GatepassError):
    """A setting has a bad value; raised at start-up, reported by the CLI."""


class SchemaMismatch(ConfigurationError):
    """The database schema is not the one this release knows."""
