"""``authenticate_request``: who sent this request, decided by value (STYLE.md habit 3).

The decisions live in :class:`Verification`, which does no I/O: it reads the bearer token,
tells its type apart, answers from its caches, and reads what the server or the JWKS said.
:class:`Authenticator` (sync) and :class:`AsyncAuthenticator` do the fetching around it.

- **Opaque tokens** (``mt_…``) are verified by the server (``POST /v1/m2m_tokens/verify``,
  with the machine key when the client has one, so the server also checks the scope).
  A valid answer is cached for ``token_cache_ttl`` seconds (never past the token's
  expiry); a "no" for ``negative_cache_ttl``; an unreachable or failing server is never
  cached and answers ``verification-unavailable``.
- **JWTs** whose ``sub`` is a machine are verified here: RS256 against the instance's JWKS
  (``GET /v1/m2m_tokens/jwks``, refetched for an unknown ``kid`` at most once per
  cooldown), ``exp``/``nbf``/``iat`` with ``leeway``, the optional ``audience``.
- **Revocation** is honoured through the server's revocation feed
  (``GET /v1/m2m_tokens/revocations``), followed by a long poll in the background. While
  it is followed, a revoked token is refused as soon as the feed delivers the revocation,
  from every cache. If the feed cannot be read (the server is down, or a long poll has
  not returned within ``wait + 5`` seconds), cached answers and local JWT verification
  stop: requests get ``verification-unavailable`` until the feed is read again.
- **A token seen before** is answered from these caches first
  (:meth:`Verification.cached_answer`): one lookup, then the same checks (the entry's age,
  the feed's, the accepted types, revocation, expiry with leeway, audience); on any doubt
  the full path runs and gives the answer with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from gatepass import _calls
from gatepass._exceptions import (
    AuthenticationError,
    GatepassError,
    TokenVerificationError,
)
from gatepass._jwt import JwksCache, JwksKeys, JwtRejected, VerifiedJwt, read_header, verify_jwt
from gatepass._requests import (
    AcceptsToken,
    Credentials,
    accepted_types,
    bearer_token,
    plain_bearer,
)
from gatepass._requests import detect_token_type as _detect
from gatepass._state import AuthReason, RequestState, TokenType

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    from gatepass._client import AsyncGatepass, Gatepass
    from gatepass._http import Call
    from gatepass._models import M2MToken, RevocationPage

__all__ = [
    "AsyncAuthenticator",
    "Authenticator",
    "Revocations",
    "Verification",
    "VerificationOptions",
]

_FEED_GRACE: Final = 5.0
_FEED_RETRY_START: Final = 0.5
_FEED_RETRY_CAP: Final = 10.0
_PRUNE_EVERY: Final = 60.0
_M2M: Final = TokenType.M2M_TOKEN
_M2M_ONLY: Final = frozenset({_M2M})

_UNAVAILABLE: Final = RequestState.rejected(
    AuthReason.VERIFICATION_UNAVAILABLE,
    "The Gatepass server cannot be reached to verify the token",
    TokenType.M2M_TOKEN,
)
_FEED_STALE: Final = RequestState.rejected(
    AuthReason.VERIFICATION_UNAVAILABLE,
    "The revocation feed of the Gatepass server cannot be read, so no token is trusted",
    TokenType.M2M_TOKEN,
)
_KEY_REFUSED: Final = RequestState.rejected(
    AuthReason.SECRET_KEY_INVALID,
    "The Gatepass server refused this service's secret key",
    TokenType.M2M_TOKEN,
)
_INVALID: Final = RequestState.rejected(
    AuthReason.TOKEN_INVALID, "The token is not valid", TokenType.M2M_TOKEN
)
_REVOKED: Final = RequestState.rejected(
    AuthReason.TOKEN_REVOKED, "The token has been revoked", TokenType.M2M_TOKEN
)
_UNKNOWN_KID: Final = RequestState.rejected(
    AuthReason.JWK_KID_MISMATCH,
    "The token is signed with a key the instance's JWKS does not hold",
    TokenType.M2M_TOKEN,
)
_WRONG_AUDIENCE: Final = RequestState.rejected(
    AuthReason.TOKEN_INVALID_AUDIENCE,
    "The token is not meant for this machine",
    TokenType.M2M_TOKEN,
)
_EXPIRED: Final = RequestState.rejected(
    AuthReason.TOKEN_EXPIRED, "The token has expired", TokenType.M2M_TOKEN
)


@dataclass(frozen=True, slots=True)
class VerificationOptions:
    """How a client verifies incoming tokens; every duration is in seconds."""

    leeway: float = 5.0
    """Clock skew allowed on a JWT's ``exp``, ``nbf`` and ``iat``."""
    token_cache_ttl: float = 10.0
    """How long a valid answer is reused (never past the token's expiry)."""
    negative_cache_ttl: float = 2.0
    """How long an invalid answer is reused, so a replayed bad token costs one request."""
    cache_size: int = 10_000
    """At most this many tokens per cache; the oldest entry makes room."""
    follow_revocations: bool = True
    """Follow the revocation feed; without it a JWT stays valid until it expires."""
    revocation_wait: int = 10
    """Seconds each long poll of the feed waits for news (the server allows up to 20)."""
    jwks_max_age: float = 600.0
    jwks_refetch_cooldown: float = 10.0

    def __post_init__(self) -> None:
        if self.cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        if not 0 <= self.revocation_wait <= 20:  # noqa: PLR2004 - the server's cap
            raise ValueError("revocation_wait must be within 0..20 seconds")
        for name in ("leeway", "token_cache_ttl", "negative_cache_ttl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def max_feed_staleness(self) -> float:
        """How long without a completed read of the feed before nothing is trusted."""
        return self.revocation_wait + _FEED_GRACE


_Entry: TypeAlias = tuple[RequestState, float, float]
"""A cached answer: the state, its monotonic deadline, and the ``clock() * 1000`` from
which the token counts as expired (its expiration in Unix ms plus any leeway; infinite
for a token without one)."""


class _Bounded(dict[str, _Entry]):
    """Token → cached answer (:data:`_Entry`), the oldest entry dropped when full."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: str, state: RequestState, deadline: float, expires_ms: float) -> None:
        if key not in self and len(self) >= self.size:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del self[next(iter(self))]
        self[key] = (state, deadline, expires_ms)


class Revocations:
    """What the revocation feed has said so far (sans I/O).

    ``revoked`` maps token ids to their expiry (Unix ms); entries leave once expired.
    ``synced_at`` is the monotonic time the feed was last read to its end, and
    ``trusted_until`` the monotonic time up to which that read is trusted
    (``synced_at + max_staleness``, or minus infinity while nothing is trusted).
    """

    def __init__(self, max_staleness: float) -> None:
        self.max_staleness = max_staleness
        self.revoked: dict[str, int] = {}
        self.cursor = "0"
        self.synced_at: float | None = None
        self.trusted_until = -math.inf
        self.key_refused = False
        self._pruned_at = 0.0

    def apply(self, page: RevocationPage, now: float, now_ms: int) -> None:
        """Take in one page read at ``now`` (monotonic)."""
        for revocation in page.data:
            self.revoked[revocation.id] = revocation.expiration
        self.cursor = page.cursor
        self.key_refused = False
        if not page.has_more:
            self.synced_at = now
            self.trusted_until = now + self.max_staleness
        if now - self._pruned_at >= _PRUNE_EVERY:
            self._pruned_at = now
            self.revoked = {i: exp for i, exp in self.revoked.items() if exp > now_ms}

    def failed(self, error: BaseException | None = None) -> None:
        """A read failed: nothing is known to be current until the next one succeeds."""
        self.trusted_until = -math.inf
        self.synced_at = None
        self.key_refused = isinstance(error, AuthenticationError)

    def fresh(self, now: float) -> bool:
        """Whether the feed was read to its end recently enough to trust what it says."""
        return now <= self.trusted_until


@dataclass(slots=True)
class _Opaque:
    """Verifying this opaque token needs its cached answer or the server."""

    token: str


@dataclass(slots=True)
class _Jwt:
    """Verifying this JWT needs its cached answer or the JWKS."""

    token: str


@dataclass(frozen=True, slots=True)
class _NeedKey:
    """Verifying this JWT needs the JWKS (re)fetched first."""

    token: str
    kid: str


class Verification:
    """The decisions and caches of request authentication, without I/O.

    ``clock`` (Unix seconds) judges token expiry; ``monotonic`` ages the caches, so a
    wall-clock jump neither extends nor cuts a cached answer.
    """

    def __init__(
        self,
        options: VerificationOptions,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.clock = clock
        self.monotonic = monotonic
        self.opaque = _Bounded(options.cache_size)
        self.jwts = _Bounded(options.cache_size)
        self.jwks = JwksCache(
            max_age=options.jwks_max_age, refetch_cooldown=options.jwks_refetch_cooldown
        )
        self.revocations = Revocations(options.max_feed_staleness)

    def read_token(self, request: object) -> str | RequestState:
        """The request's bearer token, or the final answer when it carries none."""
        found = bearer_token(request)
        return found.token if isinstance(found, Credentials) else found

    def cached_request_answer(
        self, request: object, accepts: frozenset[TokenType], audience: str | None
    ) -> RequestState | None:
        """:meth:`cached_answer` for a request sending ``Bearer <token>`` plainly.

        Only a yes is given here: a token that verified has the bearer syntax, so its
        header needs no further parsing; anything else goes the full way.
        """
        token = plain_bearer(request)
        if token is None:
            return None
        hit = self.cached_answer(token, accepts, audience)
        return hit if hit is not None and hit.is_authenticated else None

    def cached_answer(
        self, token: str, accepts: frozenset[TokenType], audience: str | None
    ) -> RequestState | None:
        """The cached answer for ``token`` when it stands as it is, else ``None``.

        This is the path of a token seen before: one lookup, one read of each clock, nothing
        built. It answers only when every check of the full path would end in this
        very answer: the entry is within its deadline, the revocation feed is trusted (when
        followed), M2M tokens are accepted, and for a valid token, it is not revoked, not
        expired and scoped to ``audience``. Any other case is ``None``, and the full path
        (:meth:`begin_token`, then :meth:`cached`) gives the answer and its reason.
        """
        entry = self.jwts.get(token) or self.opaque.get(token)
        if entry is None:
            return None
        state, deadline, expires_ms = entry
        now = self.monotonic()
        if (
            now >= deadline
            # ``not <=`` rather than ``>``: a NaN clock is never trusted, as in fresh().
            or (self.options.follow_revocations and not now <= self.revocations.trusted_until)
            or (accepts is not _M2M_ONLY and _M2M not in accepts)
        ):
            return None
        if not state.is_authenticated:
            return state
        if (
            state.token_id in self.revocations.revoked
            or self.clock() * 1000 >= expires_ms
            or (audience is not None and audience not in state.scopes)
        ):
            return None
        return state

    def begin_token(
        self, token: str, accepts: frozenset[TokenType]
    ) -> RequestState | _Opaque | _Jwt:
        """Tell the token's type apart; a final answer, or what verifying it needs."""
        # A JWT seen before is an M2M token: skip decoding its payload again.
        kind = _M2M if token in self.jwts else _detect(token)
        if kind is None or kind not in accepts:
            return RequestState.rejected(
                AuthReason.TOKEN_TYPE_MISMATCH, "This route does not accept this kind of token"
            )
        if kind is not _M2M:
            return RequestState.rejected(
                AuthReason.TOKEN_TYPE_NOT_SUPPORTED,
                f"Gatepass verifies M2M tokens, not a {kind.value}",
                kind,
            )
        return _Opaque(token) if token.startswith("mt_") else _Jwt(token)

    @property
    def following(self) -> bool:
        """Whether revocations come from the feed (and cached answers depend on it)."""
        return self.options.follow_revocations

    def feed_fresh(self) -> bool:
        """Whether the revocation feed may be trusted right now."""
        return self.monotonic() <= self.revocations.trusted_until

    def feed_unavailable(self) -> RequestState:
        """The answer while the feed cannot be trusted: this side's fault, so never a 401."""
        return _KEY_REFUSED if self.revocations.key_refused else _FEED_STALE

    def cached(self, cache: _Bounded, token: str, audience: str | None) -> RequestState | None:
        """A cached answer still good for ``token``, or ``None`` to verify afresh."""
        entry = cache.get(token)
        if entry is None:
            return None
        state, deadline, expires_ms = entry
        now = self.monotonic()
        if now >= deadline:
            cache.pop(token, None)
            return None
        if not state.is_authenticated:
            return state
        if self.following and not self.revocations.fresh(now):
            return self.feed_unavailable()
        return self._still_valid(state, audience, expires_ms)

    def _expires_ms(self, expiration: int | None, *, local: bool) -> float:
        """The ``clock() * 1000`` from which a token expiring at ``expiration`` is expired."""
        if expiration is None:
            return math.inf
        # NOTE: leeway is for clock skew against a JWT's issuer; the server judged an opaque
        # token's expiry itself, so a cached answer for one ends at its expiration exactly.
        return expiration + (self.options.leeway * 1000 if local else 0)

    def _still_valid(
        self, state: RequestState, audience: str | None, expires_ms: float
    ) -> RequestState:
        if state.token_id in self.revocations.revoked:
            return _REVOKED
        if self.clock() * 1000 >= expires_ms:
            return _EXPIRED
        if audience is not None and audience not in state.scopes:
            return _WRONG_AUDIENCE
        return state

    def opaque_verified(self, token: str, record: M2MToken, audience: str | None) -> RequestState:
        """The state for a token the server said is valid, cached for reuse."""
        state = RequestState.authenticated(
            subject=record.subject,
            scopes=record.scopes,
            claims=record.claims,
            token_id=record.id,
            expiration=record.expiration,
        )
        expires_ms = self._expires_ms(record.expiration, local=False)
        self._remember(self.opaque, token, state, record.expiration, expires_ms)
        return self._still_valid(state, audience, expires_ms)

    def opaque_failed(self, token: str, error: Exception) -> RequestState:
        """The state for a verify request that failed; only a real "no" is cached."""
        if isinstance(error, TokenVerificationError):
            deadline = self.monotonic() + self.options.negative_cache_ttl
            self.opaque.put(token, _INVALID, deadline, math.inf)
            return _INVALID
        if isinstance(error, AuthenticationError):
            return _KEY_REFUSED
        return _UNAVAILABLE

    def key_for(self, token: str) -> RSAPublicKey | RequestState | _NeedKey:
        """The JWKS key to verify ``token`` with, a final answer, or a fetch to do first."""
        kid = read_header(token)
        if isinstance(kid, JwtRejected):
            return self._reject_jwt(token, kid)
        key = self.jwks.key_for(kid, self.monotonic())
        if key == "fetch":
            return _NeedKey(token, kid)
        if key is None:
            return self._reject_jwt(token, None)
        return key

    def key_after_fetch(self, need: _NeedKey) -> RSAPublicKey | RequestState:
        """The key once the fetch was recorded; unavailable if the JWKS could not be read."""
        if self.jwks.keys is None:
            return _UNAVAILABLE
        key = self.jwks.key_for(need.kid, self.monotonic())
        if key is None or key == "fetch":
            return self._reject_jwt(need.token, None)
        return key

    def jwks_loaded(self, document: object) -> None:
        """Record a fetched JWKS document (a malformed one counts as a failed fetch)."""
        try:
            keys = JwksKeys.from_jwks(document)
        except ValueError:
            self.jwks.failed(self.monotonic())
        else:
            self.jwks.loaded(keys, self.monotonic())

    def jwks_failed(self) -> None:
        """Record a failed JWKS fetch."""
        self.jwks.failed(self.monotonic())

    def jwt_verify(self, token: str, key: RSAPublicKey, audience: str | None) -> RequestState:
        """Verify a JWT's signature and times against ``key``; cache the result."""
        outcome = verify_jwt(token, key, now=self.clock(), leeway=self.options.leeway)
        if isinstance(outcome, JwtRejected):
            return self._reject_jwt(token, outcome)
        state = _state_of(outcome)
        expires_ms = self._expires_ms(outcome.expiration, local=True)
        self._remember(self.jwts, token, state, outcome.expiration, expires_ms)
        return self._still_valid(state, audience, expires_ms)

    def _reject_jwt(self, token: str, rejected: JwtRejected | None) -> RequestState:
        state = (
            _UNKNOWN_KID
            if rejected is None
            else RequestState.rejected(rejected.reason, rejected.message, TokenType.M2M_TOKEN)
        )
        self.jwts.put(token, state, self.monotonic() + self.options.negative_cache_ttl, math.inf)
        return state

    def _remember(
        self,
        cache: _Bounded,
        token: str,
        state: RequestState,
        expiration: int | None,
        expires_ms: float,
    ) -> None:
        ttl = self.options.token_cache_ttl
        if expiration is not None:
            ttl = min(ttl, max(0.0, expiration / 1000 - self.clock()))
        cache.put(token, state, self.monotonic() + ttl, expires_ms)

    def feed_page(self, page: RevocationPage) -> None:
        """Take in a page of the revocation feed."""
        self.revocations.apply(page, self.monotonic(), int(self.clock() * 1000))

    def feed_retry_at_once(self, failures: int) -> bool:
        """Whether to read the feed again at once, still trusting it, after a failure.

        A long poll cut by a node's restart is normal behind a load balancer; one immediate
        retry reaches another node without a moment of refusals. Only a second failure in
        a row stops trust, and only while the last read is recent (``fresh`` still holds).
        """
        return failures == 1 and self.revocations.synced_at is not None

    def feed_retry_delay(self, failures: int) -> float:
        """How long to wait before reading the feed again after ``failures`` failures."""
        return min(_FEED_RETRY_CAP, _FEED_RETRY_START * 2.0 ** max(0, failures - 1))

    def feed_call(self) -> Call[RevocationPage]:
        """The next read of the feed: a long poll once caught up."""
        wait = self.options.revocation_wait if self.revocations.synced_at is not None else 0
        call = _calls.revocations(after=self.revocations.cursor, limit=1000, wait=wait)
        return dataclasses.replace(call, max_retries=0)


@functools.lru_cache(maxsize=64)
def _accepts_one(value: str) -> frozenset[TokenType]:
    return accepted_types(value)


def _accepts(value: AcceptsToken) -> frozenset[TokenType]:
    """``accepted_types``, remembered for the usual single names ("m2m_token", "any")."""
    if value is _M2M:
        return _M2M_ONLY
    return _accepts_one(value) if isinstance(value, str) else accepted_types(value)


def _state_of(verified: VerifiedJwt) -> RequestState:
    return RequestState.authenticated(
        subject=verified.subject,
        scopes=verified.scopes,
        claims=verified.claims,
        token_id=verified.token_id,
        expiration=verified.expiration,
    )


def _verify_call(token: str) -> Call[M2MToken]:
    # NOTE: no retries on a request path: the caller's own client retries a 503 sooner
    # than a backoff here would answer it.
    return dataclasses.replace(_calls.verify_token(token), max_retries=0)


def _jwks_call() -> Call[dict[str, object]]:
    return dataclasses.replace(_calls.jwks(), max_retries=0)


class Authenticator:
    """Request authentication for :class:`~gatepass.Gatepass` (threads welcome)."""

    def __init__(self, client: Gatepass, verification: Verification) -> None:
        self._client = client
        self._v = verification
        self._jwks_lock = threading.Lock()
        self._feed_lock = threading.Lock()
        self._feed_thread: threading.Thread | None = None
        self._first_read = threading.Event()
        self._stopping = threading.Event()

    def authenticate(
        self, request: object, *, accepts_token: AcceptsToken, audience: str | None
    ) -> RequestState:
        """See :meth:`gatepass.Gatepass.authenticate_request`."""
        accepts = _accepts(accepts_token)
        if (hit := self._v.cached_request_answer(request, accepts, audience)) is not None:
            return hit
        token = self._v.read_token(request)
        if isinstance(token, RequestState):
            return token
        if (hit := self._v.cached_answer(token, accepts, audience)) is not None:
            return hit
        return self._verify(self._v.begin_token(token, accepts), audience)

    def authenticate_token(
        self, token: str, *, accepts_token: AcceptsToken, audience: str | None
    ) -> RequestState:
        """See :meth:`gatepass.Gatepass.authenticate_token`."""
        accepts = _accepts(accepts_token)
        if (hit := self._v.cached_answer(token, accepts, audience)) is not None:
            return hit
        return self._verify(self._v.begin_token(token, accepts), audience)

    def _verify(self, step: RequestState | _Opaque | _Jwt, audience: str | None) -> RequestState:
        if isinstance(step, RequestState):
            return step
        if self._v.following and not self._ensure_feed():
            return self._v.feed_unavailable()
        if isinstance(step, _Opaque):
            return self._opaque(step.token, audience)
        return self._jwt(step.token, audience)

    def _opaque(self, token: str, audience: str | None) -> RequestState:
        if (hit := self._v.cached(self._v.opaque, token, audience)) is not None:
            return hit
        try:
            record = self._client._send(_verify_call(token))  # noqa: SLF001
        except (GatepassError, RuntimeError) as error:
            # RuntimeError: the client was closed under this request.
            return self._v.opaque_failed(token, error)
        return self._v.opaque_verified(token, record, audience)

    def _jwt(self, token: str, audience: str | None) -> RequestState:
        if (hit := self._v.cached(self._v.jwts, token, audience)) is not None:
            return hit
        key = self._v.key_for(token)
        if isinstance(key, _NeedKey):
            with self._jwks_lock:
                # Another thread may have fetched while this one waited for the lock.
                again = self._v.key_for(token)
                if isinstance(again, _NeedKey):
                    self._fetch_jwks()
                    key = self._v.key_after_fetch(again)
                else:
                    key = again
        if isinstance(key, RequestState):
            return key
        return self._v.jwt_verify(token, key, audience)

    def _fetch_jwks(self) -> None:
        try:
            document = self._client._send(_jwks_call())  # noqa: SLF001
        except (GatepassError, RuntimeError):
            self._v.jwks_failed()
        else:
            self._v.jwks_loaded(document)

    def _ensure_feed(self) -> bool:
        """Start following the feed if needed; whether it may be trusted now."""
        if self._feed_thread is None:
            with self._feed_lock:
                if self._feed_thread is None and not self._stopping.is_set():
                    self._feed_thread = threading.Thread(
                        target=self._follow, name="gatepass-revocations", daemon=True
                    )
                    self._feed_thread.start()
        if not self._first_read.is_set():
            # The first read is not a long poll: waiting for it costs one round trip.
            self._first_read.wait(self._client.timeout_seconds)
        return self._v.feed_fresh()

    def _follow(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                page = self._client._send(self._v.feed_call())  # noqa: SLF001
            except (GatepassError, RuntimeError) as error:
                # RuntimeError: the client was closed under a long poll.
                failures += 1
                if self._v.feed_retry_at_once(failures):
                    continue
                self._v.revocations.failed(error)
                self._first_read.set()
                self._stopping.wait(self._v.feed_retry_delay(failures))
                continue
            failures = 0
            self._v.feed_page(page)
            if self._v.revocations.synced_at is not None:
                self._first_read.set()

    def close(self) -> None:
        """Stop following the feed (the client closes the connection under a long poll)."""
        self._stopping.set()


class AsyncAuthenticator:
    """Request authentication for :class:`~gatepass.AsyncGatepass` (asyncio)."""

    def __init__(self, client: AsyncGatepass, verification: Verification) -> None:
        self._client = client
        self._v = verification
        self._jwks_lock: asyncio.Lock | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._first_read: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self) -> None:
        """Make the locks and the feed task belong to the running loop."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._jwks_lock = asyncio.Lock()
        self._first_read = asyncio.Event()
        self._feed_task = None
        self._v.revocations.failed()

    async def authenticate(
        self, request: object, *, accepts_token: AcceptsToken, audience: str | None
    ) -> RequestState:
        """See :meth:`gatepass.AsyncGatepass.authenticate_request`."""
        accepts = _accepts(accepts_token)
        hit = self._v.cached_request_answer(request, accepts, audience) if self._settled() else None
        if hit is not None:
            return hit
        token = self._v.read_token(request)
        if isinstance(token, RequestState):
            return token
        if self._settled() and (hit := self._v.cached_answer(token, accepts, audience)) is not None:
            return hit
        return await self._verify(self._v.begin_token(token, accepts), audience)

    async def authenticate_token(
        self, token: str, *, accepts_token: AcceptsToken, audience: str | None
    ) -> RequestState:
        """See :meth:`gatepass.AsyncGatepass.authenticate_token`."""
        accepts = _accepts(accepts_token)
        if self._settled() and (hit := self._v.cached_answer(token, accepts, audience)) is not None:
            return hit
        return await self._verify(self._v.begin_token(token, accepts), audience)

    def _settled(self) -> bool:
        """Whether a cached answer may be given without ``_verify``'s preparations.

        That is: the running loop is bound already (binding another stops trust in the
        feed) and, when the feed is followed, its task is still running (not restarted).
        """
        if self._loop is not asyncio.get_running_loop():
            return False
        if not self._v.options.follow_revocations:
            return True
        task = self._feed_task
        return task is not None and not task.done()

    async def _verify(
        self, step: RequestState | _Opaque | _Jwt, audience: str | None
    ) -> RequestState:
        if isinstance(step, RequestState):
            return step
        self._bind()
        if self._v.following and not await self._ensure_feed():
            return self._v.feed_unavailable()
        if isinstance(step, _Opaque):
            return await self._opaque(step.token, audience)
        return await self._jwt(step.token, audience)

    async def _opaque(self, token: str, audience: str | None) -> RequestState:
        if (hit := self._v.cached(self._v.opaque, token, audience)) is not None:
            return hit
        try:
            record = await self._client._send(_verify_call(token))  # noqa: SLF001
        except (GatepassError, RuntimeError) as error:
            # RuntimeError: the client was closed under this request.
            return self._v.opaque_failed(token, error)
        return self._v.opaque_verified(token, record, audience)

    async def _jwt(self, token: str, audience: str | None) -> RequestState:
        if (hit := self._v.cached(self._v.jwts, token, audience)) is not None:
            return hit
        key = self._v.key_for(token)
        if isinstance(key, _NeedKey):
            assert self._jwks_lock is not None  # noqa: S101 - set by _bind  # nosec B101
            async with self._jwks_lock:
                again = self._v.key_for(token)
                if isinstance(again, _NeedKey):
                    await self._fetch_jwks()
                    key = self._v.key_after_fetch(again)
                else:
                    key = again
        if isinstance(key, RequestState):
            return key
        return self._v.jwt_verify(token, key, audience)

    async def _fetch_jwks(self) -> None:
        try:
            document = await self._client._send(_jwks_call())  # noqa: SLF001
        except (GatepassError, RuntimeError):
            self._v.jwks_failed()
        else:
            self._v.jwks_loaded(document)

    async def _ensure_feed(self) -> bool:
        first_read = self._first_read
        assert first_read is not None  # noqa: S101 - set by _bind  # nosec B101
        if self._feed_task is None or self._feed_task.done():
            self._feed_task = asyncio.get_running_loop().create_task(
                self._follow(first_read), name="gatepass-revocations"
            )
        if not first_read.is_set():
            # The first read is not a long poll: waiting for it costs one round trip.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._client.timeout_seconds):
                    await first_read.wait()
        return self._v.feed_fresh()

    async def _follow(self, first_read: asyncio.Event) -> None:
        failures = 0
        while True:
            try:
                page = await self._client._send(self._v.feed_call())  # noqa: SLF001
            except (GatepassError, RuntimeError) as error:
                failures += 1
                if self._v.feed_retry_at_once(failures):
                    continue
                self._v.revocations.failed(error)
                first_read.set()
                await asyncio.sleep(self._v.feed_retry_delay(failures))
                continue
            failures = 0
            self._v.feed_page(page)
            if self._v.revocations.synced_at is not None:
                first_read.set()

    async def aclose(self) -> None:
        """Stop following the feed."""
        task, self._feed_task = self._feed_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
