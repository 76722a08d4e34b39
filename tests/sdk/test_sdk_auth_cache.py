"""The cached path of ``authenticate_token`` and ``authenticate_request``.

A token seen before is answered by ``Verification.cached_answer`` before the full path
runs. It may only give the answer the full path would give; whenever a rule could change
that answer (a revocation, expiry, a stale feed, another audience or accepted type, an
aged entry), it must step aside. The first test checks this rule by rule against the full
path, sans I/O; the others check it through the clients, against a fake server whose
revocation feed the test drives, on injected clocks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sdk_support import bearer

from gatepass import AsyncGatepass, AuthReason, Gatepass, RequestState, TokenType
from gatepass._auth import (
    AsyncAuthenticator,
    Authenticator,
    Verification,
    VerificationOptions,
    _accepts,
    _Opaque,
)
from gatepass._exceptions import AuthenticationError, TokenVerificationError
from gatepass._jwt import MAX_TOKEN_LENGTH
from gatepass._models import M2MToken, RevocationPage
from gatepass_server.domain import jwt as server_jwt
from gatepass_server.domain.keys import SecretKind, generate_secret, new_machine_id, new_token_id

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from gatepass._requests import AcceptsToken

SENDER: Final = new_machine_id()
RECEIVER: Final = new_machine_id()
OTHER: Final = new_machine_id()
ISSUED: Final = 1_700_000_000
"""When every token is issued and first verified (Unix seconds)."""
LIFETIME: Final = 3600
EXPIRATION_MS: Final = (ISSUED + LIFETIME) * 1000
T0: Final = 1000.0
"""The monotonic time of the first verification and the first read of the feed."""
OPTIONS: Final = VerificationOptions()
LEEWAY_MS: Final = int(OPTIONS.leeway * 1000)
TTL: Final = OPTIONS.token_cache_ttl
STALENESS: Final = OPTIONS.max_feed_staleness
EMPTY_PAGE: Final = {"data": [], "cursor": "0", "has_more": False}
JWKS_PATH: Final = "/v1/m2m_tokens/jwks"
FEED_PATH: Final = "/v1/m2m_tokens/revocations"
VERIFY_PATH: Final = "/v1/m2m_tokens/verify"
DEADLINE: Final = 5.0
"""How long a test waits for the feed thread to take in what the fake server sent."""


@dataclass
class Clocks:
    """The verifier's two clocks, standing still until a test moves them."""

    wall_ms: int = ISSUED * 1000
    mono: float = T0

    def clock(self) -> float:
        """Unix seconds, for token expiry."""
        return self.wall_ms / 1000

    def monotonic(self) -> float:
        """Monotonic seconds, for cache and feed ages."""
        return self.mono


@dataclass(frozen=True)
class Issuer:
    """A signing key like the server's and the JWKS that holds it; ``other`` forges."""

    key: server_jwt.SigningKey
    other: server_jwt.SigningKey
    jwks: dict[str, Any]

    def jwt(self, token_id: str, *, scopes: str = RECEIVER) -> str:
        """A server-shaped JWT from ``SENDER``, scoped to ``scopes``."""
        claims = {
            "jti": token_id,
            "sub": SENDER,
            "aud": scopes.split(","),
            "scopes": scopes,
            "iat": ISSUED,
            "nbf": ISSUED,
            "exp": ISSUED + LIFETIME,
        }
        return server_jwt.sign(self.key.private_key, self.key.kid, claims)

    def forged(self, token_id: str) -> str:
        """A JWT naming this key's ``kid`` but signed by another key."""
        claims = {"jti": token_id, "sub": SENDER, "exp": ISSUED + LIFETIME}
        return server_jwt.sign(self.other.private_key, self.key.kid, claims)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    """The keys of the module (generating one is slow)."""
    key = server_jwt.generate_signing_key()
    return Issuer(key, server_jwt.generate_signing_key(), {"keys": [dict(key.public_jwk)]})


def _record(token_id: str) -> dict[str, Any]:
    """The server's answer to verifying an opaque token from ``SENDER`` to ``RECEIVER``."""
    return {
        "id": token_id,
        "subject": SENDER,
        "scopes": [RECEIVER],
        "claims": None,
        "revoked": False,
        "revocation_reason": None,
        "expired": False,
        "expiration": EXPIRATION_MS,
        "last_used_at": None,
        "created_at": ISSUED * 1000,
        "updated_at": ISSUED * 1000,
    }


def _revoked_page(*token_ids: str) -> dict[str, Any]:
    """A page of the feed revoking ``token_ids``."""
    data = [
        {
            "id": token_id,
            "subject": SENDER,
            "revoked_at": ISSUED * 1000,
            "expiration": EXPIRATION_MS + 3_600_000,
        }
        for token_id in token_ids
    ]
    return {"data": data, "cursor": "1", "has_more": False}


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"errors": [{"message": code, "long_message": code, "code": code, "meta": {}}]},
    )


# ---- the cached path against the full path, sans I/O ------------------------------------


KINDS: Final = ("jwt", "opaque", "refused-jwt", "refused-opaque")
WALL_OFFSETS_MS: Final = (-60_000, -1, 0, 1, LEEWAY_MS - 1, LEEWAY_MS, LEEWAY_MS + 1)
"""Wall-clock times around the token's expiration (Unix ms, relative to it)."""
AGES: Final = (0.0, TTL - 0.5, TTL, TTL + 0.5)
FEEDS: Final = ("fresh", "at-bound", "stale", "failed", "key-refused", "not-followed")
AUDIENCES: Final = (None, RECEIVER, OTHER)
ACCEPTS: Final[tuple[AcceptsToken, ...]] = (
    TokenType.M2M_TOKEN,
    "m2m_token",
    "any",
    ["session_token", "m2m_token"],
    "session_token",
    ["api_key", "oauth_token"],
)


@dataclass(frozen=True)
class Case:
    """One situation of a cached token at the moment it is presented again."""

    kind: str
    revoked: bool
    wall_offset_ms: int
    age: float
    feed: str
    audience: str | None
    accepts: AcceptsToken


@dataclass(frozen=True)
class Tokens:
    """One token of each kind, with its id."""

    ids: dict[str, str]
    tokens: dict[str, str]

    @classmethod
    def make(cls, issuer: Issuer) -> Tokens:
        """Sign and draw them."""
        ids = {kind: new_token_id() for kind in KINDS}
        tokens = {
            "jwt": issuer.jwt(ids["jwt"]),
            "refused-jwt": issuer.forged(ids["refused-jwt"]),
            "opaque": generate_secret(SecretKind.TOKEN),
            "refused-opaque": generate_secret(SecretKind.TOKEN),
        }
        return cls(ids, tokens)


def _cached(issuer: Issuer, tokens: Tokens, case: Case) -> tuple[Verification, str, RequestState]:
    """A verifier that cached the case's token at ``T0``, moved to the case's moment."""
    clocks = Clocks()
    options = VerificationOptions(follow_revocations=case.feed != "not-followed")
    v = Verification(options, clock=clocks.clock, monotonic=clocks.monotonic)
    v.feed_page(RevocationPage.from_json(EMPTY_PAGE))
    token_id, token = tokens.ids[case.kind], tokens.tokens[case.kind]
    if case.kind.endswith("jwt"):
        v.jwks_loaded(issuer.jwks)
        key = v.key_for(token)
        assert isinstance(key, rsa.RSAPublicKey)
        first = v.jwt_verify(token, key, None)
        state = v.jwts[token][0]
    else:
        if case.kind == "opaque":
            first = v.opaque_verified(token, M2MToken.from_json(_record(token_id)), None)
        else:
            error = TokenVerificationError(AuthReason.TOKEN_INVALID, "no")
            first = v.opaque_failed(token, error)
        state = v.opaque[token][0]
    assert first is state
    assert state.is_authenticated is (case.kind in {"jwt", "opaque"})

    now = T0 + case.age
    clocks.wall_ms = EXPIRATION_MS + case.wall_offset_ms
    page = _revoked_page(token_id) if case.revoked else EMPTY_PAGE
    clocks.mono = {"at-bound": now - STALENESS, "stale": now - STALENESS - 0.5}.get(case.feed, now)
    v.feed_page(RevocationPage.from_json(page))
    if case.feed == "failed":
        v.revocations.failed(TimeoutError())
    elif case.feed == "key-refused":
        v.revocations.failed(AuthenticationError(401, code="x", message="x"))
    clocks.mono = now
    return v, token, state


def _full_path(
    v: Verification, token: str, accepts: frozenset[TokenType], audience: str | None
) -> RequestState | None:
    """What ``Authenticator._verify`` answers before any I/O; ``None`` to verify afresh."""
    step = v.begin_token(token, accepts)
    if isinstance(step, RequestState):
        return step
    if v.following and not v.feed_fresh():
        return v.feed_unavailable()
    return v.cached(v.opaque if isinstance(step, _Opaque) else v.jwts, token, audience)


def test_the_cached_answer_is_the_full_paths_or_none(issuer: Issuer) -> None:
    """The cached path gives the full path's answer, or steps aside.

    In every situation, it answers exactly when the full path would give the cached state
    itself, and then gives that very state.
    """
    tokens = Tokens.make(issuer)
    outcomes: Counter[str] = Counter()
    for values in itertools.product(
        KINDS, (False, True), WALL_OFFSETS_MS, AGES, FEEDS, AUDIENCES, ACCEPTS
    ):
        case = Case(*values)
        v, token, state = _cached(issuer, tokens, case)
        accepts = _accepts(case.accepts)
        fast = v.cached_answer(token, accepts, case.audience)
        full = _full_path(v, token, accepts, case.audience)
        if full is state:
            assert fast is state, case
            outcomes["answered" if state.is_authenticated else "answered-refusal"] += 1
        else:
            assert fast is None, (case, full)
            outcomes["none" if full is None else str(full.reason)] += 1
    assert outcomes["answered"] > 0
    assert outcomes["answered-refusal"] > 0
    for reason in (
        AuthReason.TOKEN_REVOKED,
        AuthReason.TOKEN_EXPIRED,
        AuthReason.TOKEN_INVALID_AUDIENCE,
        AuthReason.TOKEN_TYPE_MISMATCH,
        AuthReason.VERIFICATION_UNAVAILABLE,
        AuthReason.SECRET_KEY_INVALID,
    ):
        assert outcomes[str(reason)] > 0, reason
    assert outcomes["none"] > 0


def test_the_cached_answer_reads_the_clocks_it_is_given(issuer: Issuer) -> None:
    """Clocks swapped after construction (as tests do) are the ones the cached path reads."""
    case = Case(
        kind="jwt",
        revoked=False,
        wall_offset_ms=-60_000,
        age=0.0,
        feed="fresh",
        audience=RECEIVER,
        accepts=TokenType.M2M_TOKEN,
    )
    v, token, state = _cached(issuer, Tokens.make(issuer), case)
    accepts = _accepts(TokenType.M2M_TOKEN)
    assert v.cached_answer(token, accepts, RECEIVER) is state
    v.clock = lambda: EXPIRATION_MS / 1000 + OPTIONS.leeway
    assert v.cached_answer(token, accepts, RECEIVER) is None
    v.clock = lambda: ISSUED
    v.monotonic = lambda: T0 + TTL
    assert v.cached_answer(token, accepts, RECEIVER) is None


# ---- through the clients, against a fake server ----------------------------------------


@dataclass
class FakeServer:
    """The routes a receiver reads: the JWKS, verify (opaque tokens) and the feed.

    The feed's first read answers at once with no revocations; every later read waits for
    an answer the test hands to :meth:`answer` (a page or an error), or for :meth:`stop`.
    """

    jwks: dict[str, Any]
    opaque: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    _answers: queue.Queue[httpx.Response] = field(default_factory=queue.Queue)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request of the client."""
        path = request.url.path
        self.seen.append(path)
        if path == JWKS_PATH:
            return httpx.Response(200, json=self.jwks)
        if path == VERIFY_PATH:
            record = self.opaque.get(json.loads(request.content)["token"])
            if record is None:
                return _error(404, "resource_not_found")
            return httpx.Response(200, json=record)
        if path == FEED_PATH:
            if self.count(FEED_PATH) == 1:
                return httpx.Response(200, json=EMPTY_PAGE)
            return self._next_answer()
        return _error(404, "resource_not_found")

    def _next_answer(self) -> httpx.Response:
        while not self._stopped.is_set():
            try:
                return self._answers.get(timeout=0.05)
            except queue.Empty:
                continue
        return httpx.Response(200, json=EMPTY_PAGE)

    def answer(self, response: httpx.Response) -> None:
        """Answer the feed's pending (or next) read with ``response``."""
        self._answers.put(response)

    def count(self, path: str) -> int:
        """How many requests went to ``path``."""
        return self.seen.count(path)

    def stop(self) -> None:
        """Let every pending read of the feed return."""
        self._stopped.set()


@dataclass
class Receiver:
    """A receiving machine's client on injected clocks, and its fake server."""

    client: Gatepass
    server: FakeServer
    clocks: Clocks
    issuer: Issuer

    @property
    def verification(self) -> Verification:
        """The client's sans-I/O core."""
        authenticator = self.client._authenticator
        assert isinstance(authenticator, Authenticator)
        return authenticator._v

    def token(self, token_format: str) -> tuple[str, str]:
        """A new valid token (``"jwt"`` or ``"opaque"``) and its id."""
        token_id = new_token_id()
        if token_format == "jwt":
            return self.issuer.jwt(token_id), token_id
        token = generate_secret(SecretKind.TOKEN)
        self.server.opaque[token] = _record(token_id)
        return token, token_id

    def authenticate(self, token: str, **options: Any) -> RequestState:
        """``authenticate_token``, checking that ``authenticate_request`` says the same."""
        state = self.client.authenticate_token(token, **options)
        assert self.client.authenticate_request(bearer(token), **options) == state
        return state


def _until(check: Callable[[], bool]) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < DEADLINE, "the feed thread never took it in"
        time.sleep(0.002)


@pytest.fixture
def receiver(issuer: Issuer) -> Iterator[Receiver]:
    """A sync receiver; the feed is first read (empty) at ``T0`` by its first call."""
    server = FakeServer(issuer.jwks)
    clocks = Clocks()
    client = Gatepass(
        machine_secret_key=generate_secret(SecretKind.MACHINE),
        api_url="http://gatepass.test",
        transport=httpx.MockTransport(server.handle),
    )
    client._authenticator._v.clock = clocks.clock
    client._authenticator._v.monotonic = clocks.monotonic
    yield Receiver(client, server, clocks, issuer)
    client.close()
    server.stop()


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_a_cached_token_is_refused_by_the_first_call_after_its_revocation_arrives(
    receiver: Receiver, token_format: str
) -> None:
    """No cached answer outlives the feed's word: the very next call says revoked."""
    token, token_id = receiver.token(token_format)
    for _ in range(3):
        assert receiver.authenticate(token).is_authenticated
    receiver.server.answer(httpx.Response(200, json=_revoked_page(token_id)))
    _until(lambda: token_id in receiver.verification.revocations.revoked)
    assert receiver.client.authenticate_token(token).reason is AuthReason.TOKEN_REVOKED
    assert receiver.authenticate(token).reason is AuthReason.TOKEN_REVOKED
    assert receiver.server.count(VERIFY_PATH) == int(token_format == "opaque")


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_a_cached_yes_skips_parsing_only_for_a_plainly_sent_token(
    receiver: Receiver, token_format: str
) -> None:
    """Any other header shape gets the full parse, and its answer, cached token or not."""
    token, _ = receiver.token(token_format)
    assert receiver.authenticate(token).is_authenticated
    check = receiver.client.authenticate_request
    plain = f"Bearer {token}".encode()
    assert check({"type": "http", "headers": [(b"authorization", plain)]}).is_authenticated
    assert check({"Authorization": f"bearer   {token}"}).is_authenticated
    twice = {"type": "http", "headers": [(b"authorization", plain)] * 2}
    assert check(twice).reason is AuthReason.AUTHORIZATION_MALFORMED
    assert check({"Authorization": f"Bearer {token},x"}).reason is (
        AuthReason.AUTHORIZATION_MALFORMED
    )
    padded = f"Bearer {token}" + " " * (MAX_TOKEN_LENGTH + 300)  # too long to parse
    assert check({"Authorization": padded}).reason is AuthReason.AUTHORIZATION_MALFORMED
    assert check({"Authorization": f"Basic {token}"}).reason is AuthReason.TOKEN_MISSING


@pytest.mark.parametrize(
    ("token_format", "valid_until_ms"),
    [("jwt", EXPIRATION_MS + LEEWAY_MS), ("opaque", EXPIRATION_MS)],
)
def test_a_cached_token_is_refused_once_expired(
    receiver: Receiver, token_format: str, valid_until_ms: int
) -> None:
    """A cached answer holds until the token's expiry, not a millisecond longer.

    For a JWT that is ``exp`` plus the leeway; for an opaque token its expiration.
    """
    token, _ = receiver.token(token_format)
    assert receiver.authenticate(token).is_authenticated
    receiver.clocks.wall_ms = valid_until_ms - 1
    assert receiver.authenticate(token).is_authenticated
    receiver.clocks.wall_ms = valid_until_ms
    assert receiver.authenticate(token).reason is AuthReason.TOKEN_EXPIRED
    assert receiver.server.count(VERIFY_PATH) == int(token_format == "opaque")
    assert receiver.server.count(JWKS_PATH) == int(token_format == "jwt")


@pytest.mark.parametrize("token_format", ["jwt", "opaque", "forged-jwt"])
def test_a_stale_feed_refuses_a_cached_answer(receiver: Receiver, token_format: str) -> None:
    """Once the last read of the feed is older than its bound, no cached answer is given.

    Valid or not, and though the entry itself has not aged out.
    """
    assert receiver.authenticate(receiver.token("jwt")[0]).is_authenticated
    if token_format == "forged-jwt":
        token = receiver.issuer.forged(new_token_id())
        expected: AuthReason | None = AuthReason.TOKEN_INVALID_SIGNATURE
    else:
        token, expected = receiver.token(token_format)[0], None
    receiver.clocks.mono = T0 + TTL
    assert receiver.authenticate(token).reason is expected
    receiver.clocks.mono = T0 + STALENESS
    assert receiver.authenticate(token).reason is expected
    receiver.clocks.mono = T0 + STALENESS + 0.001
    state = receiver.authenticate(token)
    assert state.reason is AuthReason.VERIFICATION_UNAVAILABLE
    assert receiver.server.count(VERIFY_PATH) == int(token_format == "opaque")


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (503, AuthReason.VERIFICATION_UNAVAILABLE),
        (401, AuthReason.SECRET_KEY_INVALID),
    ],
)
def test_a_failed_feed_refuses_a_cached_answer_until_read_again(
    receiver: Receiver, status: int, reason: AuthReason
) -> None:
    """Two failed reads in a row stop all trust at once; the next good read restores it."""
    token, _ = receiver.token("jwt")
    assert receiver.authenticate(token).is_authenticated
    receiver.server.answer(_error(status, "service_unavailable"))
    receiver.server.answer(_error(status, "service_unavailable"))
    _until(lambda: receiver.verification.revocations.synced_at is None)
    assert receiver.authenticate(token).reason is reason
    receiver.server.answer(httpx.Response(200, json=EMPTY_PAGE))
    _until(receiver.verification.feed_fresh)
    assert receiver.authenticate(token).is_authenticated


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_a_cached_answer_is_checked_against_each_calls_audience(
    receiver: Receiver, token_format: str
) -> None:
    """An answer cached for one audience is not reused for another."""
    token, _ = receiver.token(token_format)
    assert receiver.authenticate(token, audience=RECEIVER).is_authenticated
    assert receiver.authenticate(token, audience=OTHER).reason is (
        AuthReason.TOKEN_INVALID_AUDIENCE
    )
    assert receiver.authenticate(token).is_authenticated
    assert receiver.authenticate(token, audience=RECEIVER).is_authenticated
    assert receiver.authenticate(token, audience=OTHER).reason is (
        AuthReason.TOKEN_INVALID_AUDIENCE
    )
    assert receiver.server.count(VERIFY_PATH) == int(token_format == "opaque")


@pytest.mark.parametrize("token_format", ["jwt", "opaque", "forged-jwt"])
def test_a_cached_answer_is_checked_against_each_calls_accepted_types(
    receiver: Receiver, token_format: str
) -> None:
    """An answer cached under the default is not given where M2M tokens are not accepted.

    An invalid ``accepts_token`` still raises.
    """
    if token_format == "forged-jwt":
        token = receiver.issuer.forged(new_token_id())
        expected: AuthReason | None = AuthReason.TOKEN_INVALID_SIGNATURE
    else:
        token, expected = receiver.token(token_format)[0], None
    assert receiver.authenticate(token).reason is expected
    for accepts in ("session_token", ["api_key", "oauth_token"], TokenType.SESSION_TOKEN):
        state = receiver.authenticate(token, accepts_token=accepts)
        assert state.reason is AuthReason.TOKEN_TYPE_MISMATCH
    for accepts in ("any", "m2m_token", ["session_token", "m2m_token"], TokenType.M2M_TOKEN):
        assert receiver.authenticate(token, accepts_token=accepts).reason is expected
    with pytest.raises(ValueError, match="unknown token type"):
        receiver.client.authenticate_token(token, accepts_token="bogus")
    with pytest.raises(ValueError, match="unknown token type"):
        receiver.client.authenticate_request(bearer(token), accepts_token=["bogus"])
    assert receiver.server.count(VERIFY_PATH) == int(token_format == "opaque")


# ---- AsyncGatepass ----------------------------------------------------------------------


@dataclass
class AsyncFakeServer:
    """:class:`FakeServer` for the async client: a long poll of the feed never returns.

    ``fail_reads`` makes that many of the next immediate reads of the feed answer 503.
    """

    jwks: dict[str, Any]
    seen: list[str] = field(default_factory=list)
    fail_reads: int = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request of the client."""
        path = request.url.path
        self.seen.append(path)
        if path == JWKS_PATH:
            return httpx.Response(200, json=self.jwks)
        if path == FEED_PATH:
            if request.url.params.get("wait"):
                await asyncio.Event().wait()
            if self.fail_reads > 0:
                self.fail_reads -= 1
                return _error(503, "service_unavailable")
            return httpx.Response(200, json=EMPTY_PAGE)
        return _error(404, "resource_not_found")

    def count(self, path: str) -> int:
        """How many requests went to ``path``."""
        return self.seen.count(path)


def _async_receiver(issuer: Issuer) -> tuple[AsyncGatepass, AsyncFakeServer, Clocks]:
    server = AsyncFakeServer(issuer.jwks)
    clocks = Clocks()
    client = AsyncGatepass(
        machine_secret_key=generate_secret(SecretKind.MACHINE),
        api_url="http://gatepass.test",
        transport=httpx.MockTransport(server.handle),
    )
    client._authenticator._v.clock = clocks.clock
    client._authenticator._v.monotonic = clocks.monotonic
    return client, server, clocks


@pytest.fixture
async def async_receiver(issuer: Issuer) -> AsyncIterator[tuple[AsyncGatepass, Clocks]]:
    """An async receiver; the feed is first read (empty) at ``T0`` by its first call."""
    client, _, clocks = _async_receiver(issuer)
    yield client, clocks
    await client.aclose()


async def test_async_cached_answers_follow_the_same_rules(
    async_receiver: tuple[AsyncGatepass, Clocks], issuer: Issuer
) -> None:
    """Audience, accepted types, revocation, expiry and the feed's age, as for the sync client."""
    client, clocks = async_receiver
    token_id = new_token_id()
    token = issuer.jwt(token_id)
    for _ in range(2):
        assert (await client.authenticate_token(token, audience=RECEIVER)).is_authenticated
        assert (await client.authenticate_request(bearer(token))).is_authenticated
    state = await client.authenticate_token(token, audience=OTHER)
    assert state.reason is AuthReason.TOKEN_INVALID_AUDIENCE
    state = await client.authenticate_request(bearer(token), accepts_token="session_token")
    assert state.reason is AuthReason.TOKEN_TYPE_MISMATCH

    clocks.wall_ms = EXPIRATION_MS + LEEWAY_MS
    assert (await client.authenticate_token(token)).reason is AuthReason.TOKEN_EXPIRED
    clocks.wall_ms = ISSUED * 1000

    verification = client._authenticator._v
    clocks.mono = T0 + TTL - 0.5 - STALENESS
    verification.feed_page(RevocationPage.from_json(EMPTY_PAGE))
    clocks.mono = T0 + TTL - 0.5
    assert (await client.authenticate_token(token)).is_authenticated
    clocks.mono += 0.001
    state = await client.authenticate_token(token)
    assert state.reason is AuthReason.VERIFICATION_UNAVAILABLE
    verification.feed_page(RevocationPage.from_json(EMPTY_PAGE))
    assert (await client.authenticate_token(token)).reason is None
    verification.feed_page(RevocationPage.from_json(_revoked_page(token_id)))
    assert (await client.authenticate_token(token)).reason is AuthReason.TOKEN_REVOKED


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs on ``loop``, then close it."""
    if loop.is_closed():
        return
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


@pytest.mark.parametrize("earlier_loop", ["closed", "still-open"])
def test_async_a_new_event_loop_reads_the_feed_before_answering_from_the_cache(
    issuer: Issuer, earlier_loop: str
) -> None:
    """The feed read under another loop is not trusted under this one.

    It is read again, and until that read succeeds, cached answers are not given, whether
    the earlier loop is closed or still holds its (now idle) feed task.
    """
    client, server, _ = _async_receiver(issuer)
    token = issuer.jwt(new_token_id())

    async def first_loop() -> None:
        assert (await client.authenticate_token(token)).is_authenticated
        assert (await client.authenticate_token(token)).is_authenticated

    async def second_loop() -> None:
        server.fail_reads = 1
        state = await client.authenticate_token(token)
        assert state.reason is AuthReason.VERIFICATION_UNAVAILABLE
        await client.aclose()

    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(first_loop())
        earlier_feed = client._authenticator._feed_task
        assert earlier_feed is not None
        if earlier_loop == "closed":
            _close(first)
        reads = server.count(FEED_PATH)
        asyncio.run(second_loop())
    finally:
        _close(first)
    assert server.count(FEED_PATH) > reads
    assert earlier_feed.done()


async def test_async_a_finished_feed_task_is_restarted_before_the_cache_answers(
    async_receiver: tuple[AsyncGatepass, Clocks], issuer: Issuer
) -> None:
    """A cached answer is not given while nobody follows the feed: the task starts again."""
    client, _ = async_receiver
    token = issuer.jwt(new_token_id())
    assert (await client.authenticate_token(token)).is_authenticated
    authenticator = client._authenticator
    assert isinstance(authenticator, AsyncAuthenticator)
    task = authenticator._feed_task
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await client.authenticate_token(token)).is_authenticated
    restarted = authenticator._feed_task
    assert restarted is not None
    assert restarted is not task
    assert not restarted.done()
