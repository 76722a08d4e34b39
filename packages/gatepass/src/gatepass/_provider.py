"""The calling side: get an M2M token, keep it fresh, attach it to outgoing requests.

Calling another machine in about five lines::

    import httpx
    from gatepass import Gatepass, M2MTokenAuth, TokenProvider

    provider = TokenProvider(Gatepass(machine_secret_key="ak_..."))
    with httpx.Client(auth=M2MTokenAuth(provider)) as http:
        http.get("https://api.internal/v1/invoices")

:class:`TokenProvider` (threads) and :class:`AsyncTokenProvider` (asyncio) mint a token
with the client's machine secret key (``client.m2m_tokens.create``), hand the same one out
while it is fresh, and mint the next one shortly before it expires. However many callers
need a new token at once, one mint is made and they all get its result, token or error.
:class:`M2MTokenAuth` puts the token on each request as ``Authorization: Bearer …`` and,
when the receiver answers 401 (the token was revoked, say), forgets it and sends the
request once more with a fresh one.

When a token is refreshed
-------------------------
The lifetime ``L`` is ``expiration - created_at`` of the create answer: both are the
server's milliseconds, so a skew between this host's clock and the server's does not
matter. It is counted on the monotonic clock from the moment *before* the create request
was sent, so the request's round trip is counted against the token, never in its favour.
The margin ``m`` is ``refresh_margin`` (default :data:`DEFAULT_REFRESH_MARGIN`, 60 s),
at most ``L / 2`` so that a short-lived token still serves half its life.

=========================  ===============================================================
monotonic time             what ``token()`` does
=========================  ===============================================================
before ``L - m``           returns the current token ("fresh")
``L - m`` to ``L - m/2``   the first caller mints a new token and returns it; callers
                           arriving meanwhile get the current one without waiting. If
                           the mint fails, that caller too gets the current token, and
                           the next call tries again ("stale")
from ``L - m/2``           the current token is never handed out again: callers wait for
                           the mint, and all of them get its error if it fails ("expired")
=========================  ===============================================================

A token whose answer has no ``expiration`` is kept until :meth:`TokenProvider.invalidate`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import httpx

from gatepass._client import AsyncGatepass, Gatepass
from gatepass._exceptions import APIResponseError, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Generator, Mapping

    from gatepass._models import M2MToken

__all__ = ["DEFAULT_REFRESH_MARGIN", "AsyncTokenProvider", "M2MTokenAuth", "TokenProvider"]

DEFAULT_REFRESH_MARGIN: Final = 60.0
"""Seconds before expiry at which a token is replaced (at most half its lifetime)."""

_FORMATS: Final = ("opaque", "jwt")
_UNAUTHORIZED: Final = 401

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Lease:
    """One minted token and the monotonic times that bound its use."""

    token: str = field(repr=False)
    refresh_at: float
    """From here on the next caller mints a new token."""
    usable_until: float
    """From here on the token is never handed out."""


class _Policy:
    """What to mint and when to replace it: shared by both providers, no I/O."""

    def __init__(
        self,
        client: Gatepass | AsyncGatepass,
        *,
        token_format: Literal["opaque", "jwt"],
        seconds_until_expiration: float | None,
        claims: Mapping[str, Any] | None,
        refresh_margin: float | None,
        monotonic: Callable[[], float],
    ) -> None:
        if token_format not in _FORMATS:
            raise ValueError(f"token_format must be 'opaque' or 'jwt', not {token_format!r}")
        if seconds_until_expiration is not None and not (
            math.isfinite(seconds_until_expiration) and seconds_until_expiration > 0
        ):
            raise ValueError("seconds_until_expiration must be a finite number above 0")
        if refresh_margin is not None and not (
            math.isfinite(refresh_margin) and refresh_margin >= 0
        ):
            raise ValueError("refresh_margin must be a finite number of seconds, 0 or more")
        # NOTE: CONTRACT.md §4: only a machine key may mint. Saying so here beats a 401 or a
        # ConfigurationError on the first request, far from where the client was built.
        if not client.has_machine_secret_key:
            raise ConfigurationError(
                "a token provider mints with a machine secret key: pass machine_secret_key= "
                "to the client or set GATEPASS_MACHINE_SECRET_KEY"
            )
        self.token_format = token_format
        self.seconds_until_expiration = seconds_until_expiration
        self.claims = None if claims is None else dict(claims)
        self.refresh_margin = refresh_margin
        self.monotonic = monotonic

    def lease(self, record: M2MToken, started: float) -> _Lease:
        """The lease of a token minted by a request sent at ``started`` (monotonic)."""
        if record.token is None:
            raise APIResponseError("the token create answer carries no token")
        if record.expiration is None:
            return _Lease(record.token, math.inf, math.inf)
        lifetime = max(0.0, (record.expiration - record.created_at) / 1000)
        wanted = DEFAULT_REFRESH_MARGIN if self.refresh_margin is None else self.refresh_margin
        margin = min(wanted, lifetime / 2)
        expires = started + lifetime
        return _Lease(record.token, expires - margin, expires - margin / 2)

    def describe(self, kind: str) -> str:
        """A repr that names the settings and never a token or the claims."""
        return (
            f"{kind}(token_format={self.token_format!r}, "
            f"seconds_until_expiration={self.seconds_until_expiration!r}, "
            f"refresh_margin={self.refresh_margin!r})"
        )


class _Flight:
    """One mint in progress, as seen by the threads waiting for it."""

    __slots__ = ("done", "error", "lease")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.lease: _Lease | None = None
        self.error: Exception | None = None


def _stale_fallback(kind: str, error: Exception) -> None:
    # NOTE: the type and text of an SDK error never contain the token or a key.
    _log.warning(
        "%s: refreshing the M2M token failed, the current one is used meanwhile: %s: %s",
        kind,
        type(error).__name__,
        error,
    )


class TokenProvider:
    """Mints M2M tokens as the machine of a :class:`~gatepass.Gatepass` client, for threads.

    ``token_format``, ``seconds_until_expiration`` and ``claims`` go into each create
    request. ``refresh_margin`` is how many seconds before expiry a token is replaced
    (see the module docstring for the rule); ``monotonic`` is the clock that measures it.
    Safe to share between threads: one mint at a time, whose result every waiting thread
    gets.
    """

    def __init__(
        self,
        client: Gatepass,
        *,
        token_format: Literal["opaque", "jwt"] = "opaque",  # noqa: S107 - a format, no secret
        seconds_until_expiration: float | None = None,
        claims: Mapping[str, Any] | None = None,
        refresh_margin: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(client, Gatepass):
            raise TypeError(
                "TokenProvider needs a Gatepass client; use AsyncTokenProvider with AsyncGatepass"
            )
        self._client = client
        self._policy = _Policy(
            client,
            token_format=token_format,
            seconds_until_expiration=seconds_until_expiration,
            claims=claims,
            refresh_margin=refresh_margin,
            monotonic=monotonic,
        )
        self._lock = threading.Lock()
        self._lease: _Lease | None = None
        self._flight: _Flight | None = None

    def __repr__(self) -> str:
        return self._policy.describe(type(self).__name__)

    def token(self) -> str:
        """The bearer token to send now, minting one when there is none fresh."""
        while True:
            with self._lock:
                now = self._policy.monotonic()
                lease = self._lease
                if lease is not None and now < lease.refresh_at:
                    return lease.token
                flight = self._flight
                if flight is None:
                    flight = self._flight = _Flight()
                    leading = True
                elif lease is not None and now < lease.usable_until:
                    return lease.token  # another thread is refreshing; this one is still good
                else:
                    leading = False
            if leading:
                return self._lead(flight)
            flight.done.wait()
            if flight.lease is not None:
                return flight.lease.token
            if flight.error is not None:
                raise flight.error
            # The leading thread was interrupted (KeyboardInterrupt…) before an answer:
            # that is not this thread's error to raise, so it tries again, maybe leading.

    def _lead(self, flight: _Flight) -> str:
        started = self._policy.monotonic()
        try:
            record = self._client.m2m_tokens.create(
                token_format=self._policy.token_format,
                seconds_until_expiration=self._policy.seconds_until_expiration,
                claims=self._policy.claims,
            )
            lease = self._policy.lease(record, started)
        except Exception as error:
            with self._lock:
                flight.error = error
                current = self._lease
                usable = current is not None and self._policy.monotonic() < current.usable_until
            if current is None or not usable:
                raise
            _stale_fallback(type(self).__name__, error)
            return current.token
        else:
            with self._lock:
                flight.lease = self._lease = lease
            return lease.token
        finally:
            with self._lock:
                self._flight = None
            flight.done.set()

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is the current one (a receiver refused it: revoked…).

        The next :meth:`token` mints a new one. A token that was already replaced is
        ignored, so many callers reporting the same refusal cause one mint, not many.
        """
        with self._lock:
            if self._lease is not None and self._lease.token == token:
                self._lease = None


class AsyncTokenProvider:
    """Mints M2M tokens as the machine of an :class:`~gatepass.AsyncGatepass` client.

    The arguments are those of :class:`TokenProvider`. For asyncio, within one event loop
    at a time: concurrent tasks share one mint, which runs in a task of its own so that
    cancelling one waiting caller (even the one that started it) does not cancel it for
    the others.
    """

    def __init__(
        self,
        client: AsyncGatepass,
        *,
        token_format: Literal["opaque", "jwt"] = "opaque",  # noqa: S107 - a format, no secret
        seconds_until_expiration: float | None = None,
        claims: Mapping[str, Any] | None = None,
        refresh_margin: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(client, AsyncGatepass):
            raise TypeError(
                "AsyncTokenProvider needs an AsyncGatepass client; use TokenProvider with Gatepass"
            )
        self._client = client
        self._policy = _Policy(
            client,
            token_format=token_format,
            seconds_until_expiration=seconds_until_expiration,
            claims=claims,
            refresh_margin=refresh_margin,
            monotonic=monotonic,
        )
        self._lease: _Lease | None = None
        self._flight: asyncio.Task[_Lease] | None = None

    def __repr__(self) -> str:
        return self._policy.describe(type(self).__name__)

    async def token(self) -> str:
        """The bearer token to send now, minting one when there is none fresh."""
        loop = asyncio.get_running_loop()
        while True:
            now = self._policy.monotonic()
            lease = self._lease
            if lease is not None and now < lease.refresh_at:
                return lease.token
            flight = self._flight
            if flight is None or flight.done() or flight.get_loop() is not loop:
                flight = self._flight = loop.create_task(self._mint(), name="gatepass-m2m-token")
                flight.add_done_callback(self._landed)
                leading = True
            elif lease is not None and now < lease.usable_until:
                return lease.token  # another task is refreshing; this one is still good
            else:
                leading = False
            try:
                # NOTE: shield: cancelling this caller must not cancel the mint the other
                # callers are waiting for.
                return (await asyncio.shield(flight)).token
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if flight.cancelled() and task is not None and not task.cancelling():
                    continue  # the mint itself was cancelled, not this caller: mint again
                raise
            except Exception as error:
                fallback = self._lease
                if not leading or fallback is None:
                    raise
                if self._policy.monotonic() >= fallback.usable_until:
                    raise
                _stale_fallback(type(self).__name__, error)
                return fallback.token

    async def _mint(self) -> _Lease:
        started = self._policy.monotonic()
        record = await self._client.m2m_tokens.create(
            token_format=self._policy.token_format,
            seconds_until_expiration=self._policy.seconds_until_expiration,
            claims=self._policy.claims,
        )
        # Stored here rather than by a caller, so a token whose callers were all cancelled
        # is still kept for the next one.
        self._lease = lease = self._policy.lease(record, started)
        return lease

    def _landed(self, flight: asyncio.Task[_Lease]) -> None:
        if self._flight is flight:
            self._flight = None
        if not flight.cancelled():
            # Marks the error as retrieved: when every caller was cancelled, a failed mint
            # is not an "exception never retrieved" for asyncio to log.
            flight.exception()

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is the current one; see :meth:`TokenProvider.invalidate`."""
        if self._lease is not None and self._lease.token == token:
            self._lease = None


class M2MTokenAuth(httpx.Auth):
    """``httpx`` authentication with M2M tokens from a provider.

    ``httpx.Client(auth=M2MTokenAuth(TokenProvider(...)))`` or
    ``httpx.AsyncClient(auth=M2MTokenAuth(AsyncTokenProvider(...)))``. Each request gets
    ``Authorization: Bearer <token>``. On a 401 the token is invalidated and the request
    sent once more with a fresh one; if that mint fails, its error is raised. A 401 to
    the second attempt is returned as it is.
    """

    # NOTE: the one retry sends the request again, so a streamed body is read into memory
    # before the first attempt; a stream cannot be replayed.
    requires_request_body = True

    def __init__(self, provider: TokenProvider | AsyncTokenProvider) -> None:
        if not isinstance(provider, (TokenProvider, AsyncTokenProvider)):
            raise TypeError("M2MTokenAuth needs a TokenProvider or an AsyncTokenProvider")
        self._provider = provider

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._provider!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow of ``httpx.Client``: needs a :class:`TokenProvider`."""
        provider = self._provider
        if not isinstance(provider, TokenProvider):
            raise TypeError(
                "M2MTokenAuth with an AsyncTokenProvider works with httpx.AsyncClient; "
                "give httpx.Client a TokenProvider"
            )
        request.read()
        token = provider.token()
        response = yield _bearer(request, token)
        if response.status_code == _UNAUTHORIZED:
            provider.invalidate(token)
            yield _bearer(request, provider.token())

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The flow of ``httpx.AsyncClient``: needs an :class:`AsyncTokenProvider`."""
        provider = self._provider
        if not isinstance(provider, AsyncTokenProvider):
            raise TypeError(
                "M2MTokenAuth with a TokenProvider works with httpx.Client; "
                "give httpx.AsyncClient an AsyncTokenProvider"
            )
        await request.aread()
        token = await provider.token()
        response = yield _bearer(request, token)
        if response.status_code == _UNAUTHORIZED:
            provider.invalidate(token)
            yield _bearer(request, await provider.token())


def _bearer(request: httpx.Request, token: str) -> httpx.Request:
    request.headers["Authorization"] = f"Bearer {token}"
    return request
