"""The part of ``Gatepass`` and ``AsyncGatepass`` that does not depend on sync or async.

A resource method describes its request as a :class:`Call`; the client sends it through
:meth:`BaseClient.build`, :meth:`BaseClient.answered` and :meth:`BaseClient.failed`, which
decide which key to use, what an answer means and whether to try again. Only the sending
and the sleeping differ between the two clients.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import httpx

from gatepass._config import Config
from gatepass._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APITimeoutError,
    ConfigurationError,
    GatepassError,
    api_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "BaseClient",
    "Call",
    "Key",
    "Retry",
]

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_MAX_RETRIES: Final = 2
_BACKOFF_START: Final = 0.25
_BACKOFF_CAP: Final = 8.0
_RETRY_AFTER_CAP: Final = 30.0
_RETRY_STATUSES: Final = frozenset({502, 503, 504})
_VERSION: Final = "0.1.0"


class Key(Enum):
    """Which of the client's keys authenticates a call."""

    INSTANCE = "instance"
    """``sk_`` only (the machine routes)."""
    MACHINE = "machine"
    """``ak_`` only (minting a token)."""
    INSTANCE_FIRST = "instance_first"
    """Either, the instance key when the client has both."""
    MACHINE_FIRST = "machine_first"
    """Either, the machine key when the client has both (verifying as a receiver)."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    key: Key
    parse: Callable[[Any], T]
    expect: int = 200
    params: Mapping[str, str | int] | None = None
    body: Mapping[str, Any] | None = None
    idempotent: bool = False
    """Safe to send twice: retried after a lost answer or a 5xx, not only when unsent."""
    extra_timeout: float = 0.0
    """Added to the client's read timeout (a long poll's ``wait``)."""
    max_retries: int | None = None
    """Overrides the client's ``max_retries`` (verification on a request path: 0)."""
    on_error: Callable[[APIError], GatepassError] | None = field(default=None, repr=False)
    """Turns an error answer into the exception to raise (``verify``'s 404)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after ``delay`` seconds."""

    delay: float


class BaseClient:
    """Configuration, request building, answer reading and the retry policy."""

    def __init__(
        self,
        *,
        secret_key: str | None,
        machine_secret_key: str | None,
        api_url: str | None,
        timeout: float,
        max_retries: int,
    ) -> None:
        if max_retries < 0:
            raise ConfigurationError("max_retries must be 0 or more")
        self._config = Config.resolve(
            secret_key=secret_key, machine_secret_key=machine_secret_key, api_url=api_url
        )
        self._timeout = timeout
        self._max_retries = max_retries

    @property
    def api_url(self) -> str:
        """The server's base URL (without ``/v1``)."""
        return self._config.api_url

    @property
    def timeout_seconds(self) -> float:
        """The timeout of each request, in seconds."""
        return self._timeout

    @property
    def has_secret_key(self) -> bool:
        """Whether the client holds an instance secret key."""
        return self._config.secret_key is not None

    @property
    def has_machine_secret_key(self) -> bool:
        """Whether the client holds a machine secret key."""
        return self._config.machine_secret_key is not None

    def _headers(self) -> dict[str, str]:
        return {"User-Agent": f"gatepass-python/{_VERSION}", "Accept": "application/json"}

    def build(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        """The HTTP request for a call, authenticated with the key it needs."""
        headers = {"Authorization": f"Bearer {self._key(call.key)}"}
        timeout = httpx.Timeout(self._timeout, read=self._timeout + call.extra_timeout)
        return http.build_request(
            call.method,
            self._config.api_url + call.path,
            params=call.params,
            json=call.body,
            headers=headers,
            timeout=timeout,
        )

    def _key(self, which: Key) -> str:
        instance, machine = self._config.secret_key, self._config.machine_secret_key
        if which is Key.INSTANCE:
            chosen = instance
        elif which is Key.MACHINE:
            chosen = machine
        elif which is Key.INSTANCE_FIRST:
            chosen = instance or machine
        else:
            chosen = machine or instance
        if chosen is None:
            raise ConfigurationError(_MISSING_KEY[which])
        return chosen

    def failed(self, call: Call[Any], failure: httpx.TransportError, attempt: int) -> Retry:
        """Whether to send a call again that got no answer; raises when not."""
        error = _transport_error(failure)
        retryable = _unsent(failure) or call.idempotent
        return self._retry_or_raise(
            error, attempt, retryable=retryable, retry_after=None, max_retries=call.max_retries
        )

    def answered(self, call: Call[T], response: httpx.Response, attempt: int) -> T | Retry:
        """What an answer means: the call's value, a retry, or (raised) its error."""
        if response.status_code == call.expect:
            return call.parse(_json(response))
        if response.is_success:
            # NOTE: a success other than the one CONTRACT.md §2 names for the route is a broken
            # promise, not an error envelope (Clerk's Python SDK refuses it too).
            raise APIResponseError(
                f"expected HTTP {call.expect}, got {response.status_code}",
                status_code=response.status_code,
            )
        retry_after = _retry_after(response.headers.get("retry-after"))
        api = api_error(response.status_code, _json_or_none(response), retry_after=retry_after)
        # NOTE: a 429 means the request was not processed, so any call may be sent again; a
        # 5xx may follow a commit, so only idempotent calls are.
        retryable = response.status_code == 429 or (  # noqa: PLR2004
            call.idempotent and response.status_code in _RETRY_STATUSES
        )
        final = call.on_error(api) if call.on_error is not None else api
        return self._retry_or_raise(
            final,
            attempt,
            retryable=retryable,
            retry_after=retry_after,
            max_retries=call.max_retries,
        )

    def _retry_or_raise(
        self,
        error: GatepassError,
        attempt: int,
        *,
        retryable: bool,
        retry_after: float | None,
        max_retries: int | None,
    ) -> Retry:
        # NOTE: a Retry-After beyond the cap is the server asking for more patience than a
        # request should hold a caller for; the error (with retry_after) goes up instead.
        limit = self._max_retries if max_retries is None else max_retries
        if not retryable or attempt >= limit:
            raise error
        if retry_after is not None:
            if retry_after > _RETRY_AFTER_CAP:
                raise error
            return Retry(retry_after)
        backoff = min(_BACKOFF_CAP, _BACKOFF_START * 2**attempt)
        # NOTE: full jitter, so clients refused together do not come back together.
        return Retry(random.uniform(0, backoff))  # noqa: S311 - jitter, not a secret  # nosec B311


_MISSING_KEY: Final = {
    Key.INSTANCE: (
        "this call needs an instance secret key: pass secret_key= or set GATEPASS_SECRET_KEY"
    ),
    Key.MACHINE: (
        "this call needs a machine secret key: pass machine_secret_key= or set "
        "GATEPASS_MACHINE_SECRET_KEY"
    ),
    Key.INSTANCE_FIRST: "this call needs secret_key= or machine_secret_key=",
    Key.MACHINE_FIRST: "this call needs machine_secret_key= or secret_key=",
}


def _transport_error(failure: httpx.TransportError) -> GatepassError:
    if isinstance(failure, httpx.TimeoutException):
        return APITimeoutError(f"no answer from the Gatepass server in time: {failure}")
    return APIConnectionError(f"cannot reach the Gatepass server: {failure}")


def _unsent(failure: httpx.TransportError) -> bool:
    """The request surely never reached the server, so sending it again is safe."""
    return isinstance(failure, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def _json(response: httpx.Response) -> Any:
    body = _json_or_none(response)
    if body is None:
        raise APIResponseError(
            f"expected a JSON answer, got {response.headers.get('content-type')!r}",
            status_code=response.status_code,
        )
    return body


def _json_or_none(response: httpx.Response) -> Any:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now: a number or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
