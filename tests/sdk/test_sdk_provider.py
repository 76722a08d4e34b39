"""``TokenProvider``, ``AsyncTokenProvider`` and ``M2MTokenAuth`` against the real server.

Sync providers mint over TCP from ``live_server``; async ones in process through
``httpx.ASGITransport``; both on SQLite and PostgreSQL. Mints are counted on the wire by
a pass-through transport that sees every ``POST /v1/m2m_tokens`` (and can hold one back,
so concurrent callers really overlap), and cross-checked with the server's own list.
The provider's monotonic clock is injected, so refresh points are exact.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx
import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sdk_support import on_clock

from gatepass import (
    AsyncGatepass,
    AuthenticationError,
    ConfigurationError,
    Gatepass,
    M2MToken,
)
from gatepass._exceptions import APIResponseError
from gatepass._provider import (
    DEFAULT_REFRESH_MARGIN,
    AsyncTokenProvider,
    M2MTokenAuth,
    TokenProvider,
    _Policy,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from starlette.types import ASGIApp, Receive, Scope, Send

    from conftest import LiveServer
    from gatepass_server.domain.clock import FixedClock

T = TypeVar("T")
MINT_PATH: Final = "/v1/m2m_tokens"
LIFETIME: Final = 600
"""Seconds each test token lives: margin 60 s, so refresh at 540 s, never handed out from 570 s."""
START: Final = 1000.0
"""The injected monotonic clock's start."""
REFRESH_AT: Final = START + LIFETIME - 60
USABLE_UNTIL: Final = START + LIFETIME - 30
DEADLINE: Final = 2.0
"""How long a test waits for a revocation to reach a receiver."""
THREADS: Final = 50
TASKS: Final = 100
API_URL: Final = "http://gatepass.test"


class Monotonic:
    """The provider's monotonic clock: stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        """The time a test last set."""
        return self.now


class MintCounter(httpx.HTTPTransport):
    """A real socket transport that counts mints; ``hold`` runs before each one is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.mints = 0
        self.hold: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Count a mint (and hold it if told to), then send for real."""
        if request.method == "POST" and request.url.path == MINT_PATH:
            with self._lock:
                self.mints += 1
            if self.hold is not None:
                self.hold()
        return super().handle_request(request)


class AsyncMintCounter(httpx.AsyncBaseTransport):
    """The in-process app as a transport that counts mints; ``hold`` is awaited first."""

    def __init__(self, app: ASGIApp) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.mints = 0
        self.hold: Callable[[], Awaitable[None]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Count a mint (and hold it if told to), then hand it to the app."""
        if request.method == "POST" and request.url.path == MINT_PATH:
            self.mints += 1
            if self.hold is not None:
                await self.hold()
        return await self.inner.handle_async_request(request)


@dataclass
class Cast:
    """``email`` may call ``api``; ``email`` mints through ``counter``."""

    email_id: str
    email_key: str
    api_id: str
    api_key: str


@dataclass
class SyncSetup:
    """The sync side: a caller client whose mints are counted, and the admin."""

    cast: Cast
    admin: Gatepass
    caller: Gatepass
    counter: MintCounter
    monotonic: Monotonic
    url: str

    def provider(self, **options: Any) -> TokenProvider:
        """A provider minting as ``email`` on the injected clock."""
        options.setdefault("seconds_until_expiration", LIFETIME)
        return TokenProvider(self.caller, monotonic=self.monotonic, **options)

    def server_count(self) -> int:
        """How many live opaque tokens the server holds for ``email``."""
        return self.admin.m2m_tokens.list(subject=self.cast.email_id).total_count

    def rotate_key_away(self) -> None:
        """Rotate ``email``'s key with no grace: every later mint is refused (401)."""
        self.admin.machines.rotate_secret_key(self.cast.email_id, previous_token_ttl=0)


@dataclass
class AsyncSetup:
    """The async side: a caller client whose mints are counted, and the admin."""

    cast: Cast
    admin: AsyncGatepass
    caller: AsyncGatepass
    counter: AsyncMintCounter
    monotonic: Monotonic
    app: ASGIApp

    def provider(self, **options: Any) -> AsyncTokenProvider:
        """A provider minting as ``email`` on the injected clock."""
        options.setdefault("seconds_until_expiration", LIFETIME)
        return AsyncTokenProvider(self.caller, monotonic=self.monotonic, **options)

    async def server_count(self) -> int:
        """How many live opaque tokens the server holds for ``email``."""
        return (await self.admin.m2m_tokens.list(subject=self.cast.email_id)).total_count

    async def rotate_key_away(self) -> None:
        """Rotate ``email``'s key with no grace: every later mint is refused (401)."""
        await self.admin.machines.rotate_secret_key(self.cast.email_id, previous_token_ttl=0)


@pytest.fixture
def sync_setup(live_server: LiveServer, admin: Gatepass) -> Iterator[SyncSetup]:
    """Machines on the live server and a counted caller client over TCP."""
    api = admin.machines.create(name="API")
    email = admin.machines.create(name="Email", scoped_machines=[api.id])
    assert email.secret_key is not None
    cast = Cast(email.id, email.secret_key, api.id, admin.machines.get_secret_key(api.id).secret)
    counter = MintCounter()
    with Gatepass(
        machine_secret_key=cast.email_key, api_url=live_server.url, transport=counter
    ) as caller:
        yield SyncSetup(cast, admin, caller, counter, Monotonic(), live_server.url)


@pytest.fixture
async def async_setup(app: ASGIApp, async_admin: AsyncGatepass) -> AsyncIterator[AsyncSetup]:
    """Machines on the in-process server and a counted caller client."""
    api = await async_admin.machines.create(name="API")
    email = await async_admin.machines.create(name="Email", scoped_machines=[api.id])
    assert email.secret_key is not None
    api_key = (await async_admin.machines.get_secret_key(api.id)).secret
    counter = AsyncMintCounter(app)
    async with AsyncGatepass(
        machine_secret_key=email.secret_key, api_url=API_URL, transport=counter
    ) as caller:
        yield AsyncSetup(
            Cast(email.id, email.secret_key, api.id, api_key),
            async_admin,
            caller,
            counter,
            Monotonic(),
            app,
        )


def _in_threads(count: int, call: Callable[[], str]) -> list[str | BaseException]:
    """``call`` in ``count`` threads released together; each one's result or exception."""
    barrier = threading.Barrier(count)
    results: list[str | BaseException] = [RuntimeError("not run")] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects each one
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def _hold_until_all_arrived(arrived: Callable[[], int], count: int) -> Callable[[], None]:
    """A hold for the mint: until ``count`` callers have called, then 100 ms more."""

    def hold() -> None:
        start = time.monotonic()
        while arrived() < count and time.monotonic() - start < 10:
            time.sleep(0.001)
        # The callers counted have reached token(); this lets them get into its wait.
        time.sleep(0.1)

    return hold


async def _within(waiting: Awaitable[T], seconds: float = 5) -> T:
    """``waiting``, failing the test instead of hanging if it takes longer than ``seconds``."""
    return await asyncio.wait_for(waiting, seconds)


# --- the refresh rule, without a server ----------------------------------------------------


def _record(*, lifetime_ms: int | None, token: str | None = "mt_bearer") -> M2MToken:  # noqa: S107
    created = 1_754_938_436_732
    return M2MToken(
        id="mt_" + "0" * 32,
        subject="mch_" + "e" * 27,
        scopes=(),
        claims=None,
        revoked=False,
        revocation_reason=None,
        expired=False,
        expiration=None if lifetime_ms is None else created + lifetime_ms,
        last_used_at=None,
        created_at=created,
        updated_at=created,
        token=token,
    )


@functools.cache
def _offline() -> Gatepass:
    """A client that is never used to send anything (its transport is not even opened)."""
    return Gatepass(machine_secret_key="ak_test")


def _policy(refresh_margin: float | None = None) -> _Policy:
    return _Policy(
        _offline(),
        token_format="opaque",
        seconds_until_expiration=None,
        claims=None,
        refresh_margin=refresh_margin,
        monotonic=time.monotonic,
    )


@pytest.mark.parametrize(
    ("lifetime_ms", "refresh_margin", "refresh_at", "usable_until"),
    [
        (3_600_000, None, 3540.0, 3570.0),  # the default margin: 60 s
        (600_000, None, 540.0, 570.0),
        (10_000, None, 5.0, 7.5),  # never more than half the lifetime
        (3_600_000, 300.0, 3300.0, 3450.0),  # an explicit margin
        (100_000, 300.0, 50.0, 75.0),  # ... also at most half the lifetime
        (3_600_000, 0.0, 3600.0, 3600.0),  # margin 0: used up to its expiry
        (0, None, 0.0, 0.0),  # nothing to reuse
    ],
)
def test_refresh_points(
    lifetime_ms: int, refresh_margin: float | None, refresh_at: float, usable_until: float
) -> None:
    """Refresh ``min(margin, L/2)`` before expiry; hand out until half that margin is left."""
    lease = _policy(refresh_margin).lease(_record(lifetime_ms=lifetime_ms), started=0.0)
    assert (lease.refresh_at, lease.usable_until) == (refresh_at, usable_until)
    assert DEFAULT_REFRESH_MARGIN == 60.0


@given(
    lifetime_ms=st.integers(0, 10**12),
    margin=st.none() | st.floats(0, 10**10),
    started=st.floats(-(10**9), 10**9),
)
def test_refresh_points_stay_within_the_lifetime(
    lifetime_ms: int, margin: float | None, started: float
) -> None:
    """Refresh point ≤ last use ≤ expiry, and at least half of the lifetime is used."""
    lease = _policy(margin).lease(_record(lifetime_ms=lifetime_ms), started=started)
    expires = started + lifetime_ms / 1000
    slack = 1e-6 * max(1.0, abs(started), expires)
    assert started + lifetime_ms / 2000 - slack <= lease.refresh_at
    assert lease.refresh_at <= lease.usable_until <= expires + slack


def test_a_token_without_expiration_is_kept_and_one_without_token_is_an_error() -> None:
    """No ``expiration``: never refreshed by time; no ``token`` in the answer: a shape error."""
    lease = _policy().lease(_record(lifetime_ms=None), started=5.0)
    assert lease.refresh_at == lease.usable_until == math.inf
    with pytest.raises(APIResponseError, match="no token"):
        _policy().lease(_record(lifetime_ms=1000, token=None), started=5.0)


def test_arguments_are_checked_when_the_provider_is_built() -> None:
    """A client without a machine key, a wrong client kind or a bad setting fails at once."""
    sync = Gatepass(machine_secret_key="ak_test")
    asynchronous = AsyncGatepass(machine_secret_key="ak_test")
    with pytest.raises(ConfigurationError, match="machine secret key"):
        TokenProvider(Gatepass(secret_key="sk_test_x"))
    with pytest.raises(ConfigurationError, match="machine secret key"):
        AsyncTokenProvider(AsyncGatepass(secret_key="sk_test_x"))
    with pytest.raises(TypeError, match="AsyncTokenProvider"):
        TokenProvider(asynchronous)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TokenProvider with Gatepass"):
        AsyncTokenProvider(sync)  # type: ignore[arg-type]
    for bad in (
        {"token_format": "paseto"},
        {"seconds_until_expiration": 0},
        {"seconds_until_expiration": math.inf},
        {"refresh_margin": -1},
        {"refresh_margin": math.nan},
    ):
        with pytest.raises(ValueError, match="must"):
            TokenProvider(sync, **bad)
    with pytest.raises(TypeError, match="TokenProvider or an AsyncTokenProvider"):
        M2MTokenAuth(sync)  # type: ignore[arg-type]


def _refuse_to_send(sent: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    return httpx.MockTransport(answer)


def test_an_async_provider_on_httpx_client_is_a_type_error() -> None:
    """``httpx.Client`` with an ``AsyncTokenProvider``: named, before anything is sent."""
    sent: list[httpx.Request] = []
    auth = M2MTokenAuth(AsyncTokenProvider(AsyncGatepass(machine_secret_key="ak_test")))
    with (
        httpx.Client(transport=_refuse_to_send(sent), auth=auth) as http,
        pytest.raises(TypeError, match=r"give httpx\.Client a TokenProvider"),
    ):
        http.get("http://api.test/")
    assert sent == []


async def test_a_sync_provider_on_httpx_async_client_is_a_type_error() -> None:
    """``httpx.AsyncClient`` with a ``TokenProvider``: named, before anything is sent."""
    sent: list[httpx.Request] = []
    auth = M2MTokenAuth(TokenProvider(_offline()))
    async with httpx.AsyncClient(transport=_refuse_to_send(sent), auth=auth) as http:
        with pytest.raises(TypeError, match=r"give httpx\.AsyncClient an AsyncTokenProvider"):
            await http.get("http://api.test/")
    assert sent == []


# --- TokenProvider: threads, over TCP ------------------------------------------------------


def test_first_call_mints_later_calls_reuse_until_the_refresh_point(
    sync_setup: SyncSetup,
) -> None:
    """One mint, reused up to the refresh point, then exactly one more; claims go along."""
    provider = sync_setup.provider(claims={"team": "billing"})
    first = provider.token()
    assert first.startswith("mt_")
    assert sync_setup.counter.mints == 1
    sync_setup.monotonic.now = REFRESH_AT - 0.001
    assert provider.token() == first
    assert sync_setup.counter.mints == 1
    assert sync_setup.server_count() == 1

    sync_setup.monotonic.now = REFRESH_AT
    second = provider.token()
    assert second != first
    assert provider.token() == second
    assert sync_setup.counter.mints == 2
    assert sync_setup.server_count() == 2
    record = sync_setup.admin.m2m_tokens.verify(second)
    assert record.claims == {"team": "billing"}
    assert record.expiration == record.created_at + LIFETIME * 1000
    assert (record.subject, record.scopes) == (sync_setup.cast.email_id, (sync_setup.cast.api_id,))

    # NOTE: the token must not reach logs through a repr.
    auth = M2MTokenAuth(provider)
    for text in (repr(provider), repr(auth), str(provider)):
        assert second not in text
        assert first not in text
    assert "TokenProvider(token_format='opaque'" in repr(auth)


def test_invalidate_forgets_only_the_current_token(sync_setup: SyncSetup) -> None:
    """Invalidating an old token changes nothing; the current one makes the next call mint."""
    provider = sync_setup.provider()
    first = provider.token()
    provider.invalidate("mt_not_the_current_one")
    assert provider.token() == first
    provider.invalidate(first)
    second = provider.token()
    provider.invalidate(first)
    assert provider.token() == second != first
    assert sync_setup.counter.mints == 2


def test_stale_token_is_served_to_others_while_one_thread_refreshes(
    sync_setup: SyncSetup,
) -> None:
    """Between the refresh point and the last use, only the refreshing thread waits."""
    provider = sync_setup.provider()
    old = provider.token()
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(10)

    sync_setup.counter.hold = hold
    sync_setup.monotonic.now = USABLE_UNTIL - 0.001
    leader: list[str] = []
    thread = threading.Thread(target=lambda: leader.append(provider.token()))
    thread.start()
    try:
        assert entered.wait(10)
        assert provider.token() == old, "a second caller does not wait for the refresh"
    finally:
        release.set()
        thread.join(10)
    assert leader != [old]
    assert len(leader) == 1
    assert provider.token() == leader[0]
    assert sync_setup.counter.mints == 2


def test_failed_refresh_falls_back_to_the_stale_token_then_raises_once_expired(
    sync_setup: SyncSetup, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed refresh keeps serving a still-usable token, warns, and retries next call."""
    provider = sync_setup.provider()
    old = provider.token()
    sync_setup.rotate_key_away()

    sync_setup.monotonic.now = REFRESH_AT
    with caplog.at_level(logging.WARNING, logger="gatepass"):
        assert provider.token() == old
        assert provider.token() == old
    assert sync_setup.counter.mints == 3, "each call in the stale window tries again"
    assert "refreshing the M2M token failed" in caplog.text
    assert "AuthenticationError" in caplog.text
    assert old not in caplog.text
    assert sync_setup.cast.email_key not in caplog.text

    sync_setup.monotonic.now = USABLE_UNTIL
    with pytest.raises(AuthenticationError) as refused:
        provider.token()
    assert refused.value.code == "machine_secret_key_invalid"
    assert sync_setup.counter.mints == 4


def test_fifty_threads_after_expiry_share_one_mint(sync_setup: SyncSetup) -> None:
    """Fifty threads needing a new token at once cause one mint and all get its token."""
    provider = sync_setup.provider()
    old = provider.token()
    arrived = 0
    lock = threading.Lock()

    def call() -> str:
        nonlocal arrived
        with lock:
            arrived += 1
        return provider.token()

    sync_setup.counter.hold = _hold_until_all_arrived(lambda: arrived, THREADS)
    sync_setup.monotonic.now = USABLE_UNTIL
    results = _in_threads(THREADS, call)
    assert sync_setup.counter.mints == 2
    assert all(isinstance(result, str) for result in results), results
    assert len(set(results)) == 1
    assert results[0] != old
    assert sync_setup.server_count() == 2


def test_a_failed_mint_is_raised_to_every_thread_that_waited_for_it(
    sync_setup: SyncSetup,
) -> None:
    """One refused mint, and its very exception in all fifty threads; the next call retries."""
    sync_setup.rotate_key_away()
    provider = sync_setup.provider()
    arrived = 0
    lock = threading.Lock()

    def call() -> str:
        nonlocal arrived
        with lock:
            arrived += 1
        return provider.token()

    sync_setup.counter.hold = _hold_until_all_arrived(lambda: arrived, THREADS)
    results = _in_threads(THREADS, call)
    assert sync_setup.counter.mints == 1
    first = results[0]
    assert isinstance(first, AuthenticationError)
    assert first.code == "machine_secret_key_invalid"
    assert all(result is first for result in results)

    sync_setup.counter.hold = None
    with pytest.raises(AuthenticationError):
        provider.token()
    assert sync_setup.counter.mints == 2


def test_sync_auth_flow_retries_a_revoked_token_once_with_a_fresh_one(
    sync_setup: SyncSetup, clock: FixedClock
) -> None:
    """A 401 for a revoked token: invalidate, one new mint, the same request again → 200."""
    seen: list[tuple[str, bytes, int]] = []
    with on_clock(
        Gatepass(machine_secret_key=sync_setup.cast.api_key, api_url=sync_setup.url), clock
    ) as receiver:

        def serve(request: httpx.Request) -> httpx.Response:
            state = receiver.authenticate_request(request.headers)
            status = 200 if state.is_authenticated else 401
            seen.append((request.headers["authorization"], request.read(), status))
            return httpx.Response(status, json={"subject": state.subject})

        provider = sync_setup.provider()
        with httpx.Client(
            transport=httpx.MockTransport(serve), auth=M2MTokenAuth(provider)
        ) as http:
            answer = http.get("http://api.test/invoices")
            assert answer.status_code == 200
            assert answer.json() == {"subject": sync_setup.cast.email_id}
            old = provider.token()

            newest = sync_setup.admin.m2m_tokens.list(subject=sync_setup.cast.email_id)
            sync_setup.admin.m2m_tokens.revoke(newest.m2m_tokens[0].id)
            start = time.monotonic()
            while receiver.authenticate_token(old).is_authenticated:
                assert time.monotonic() - start < DEADLINE, "the revocation never arrived"
                time.sleep(0.01)

            seen.clear()
            answer = http.post("http://api.test/invoices", content=b'{"amount": 5}')
    assert answer.status_code == 200
    assert [status for _, _, status in seen] == [401, 200]
    assert seen[0][0] == f"Bearer {old}"
    assert seen[1][0] == f"Bearer {provider.token()}" != seen[0][0]
    assert seen[0][1] == seen[1][1] == b'{"amount": 5}'
    assert sync_setup.counter.mints == 2


# --- AsyncTokenProvider: asyncio, in process ----------------------------------------------


async def test_async_jwt_with_claims_is_minted_once_and_refreshed_at_its_point(
    async_setup: AsyncSetup, clock: FixedClock
) -> None:
    """A JWT carrying the claims verifies at the receiver; reused until the refresh point."""
    provider = async_setup.provider(token_format="jwt", claims={"team": "billing"})
    token = await provider.token()
    assert await provider.token() == token
    assert async_setup.counter.mints == 1
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == LIFETIME
    async with on_clock(
        AsyncGatepass(
            machine_secret_key=async_setup.cast.api_key,
            api_url=API_URL,
            transport=httpx.ASGITransport(app=async_setup.app),
        ),
        clock,
    ) as receiver:
        state = await receiver.authenticate_token(token, audience=async_setup.cast.api_id)
    assert state.is_authenticated, state
    assert state.subject == async_setup.cast.email_id
    assert dict(state.claims) == {"team": "billing"}

    async_setup.monotonic.now = REFRESH_AT - 0.001
    assert await provider.token() == token
    async_setup.monotonic.now = REFRESH_AT
    fresh = await provider.token()
    assert fresh != token
    assert jwt.decode(fresh, options={"verify_signature": False})["team"] == "billing"
    assert async_setup.counter.mints == 2


async def test_async_hundred_tasks_share_one_mint(async_setup: AsyncSetup) -> None:
    """A hundred tasks with no token, then a hundred after expiry: one mint each time."""
    provider = async_setup.provider()

    async def hold() -> None:
        await asyncio.sleep(0.05)

    async_setup.counter.hold = hold
    first = await asyncio.gather(*(provider.token() for _ in range(TASKS)))
    assert len(set(first)) == 1
    assert async_setup.counter.mints == 1

    async_setup.monotonic.now = USABLE_UNTIL
    second = await asyncio.gather(*(provider.token() for _ in range(TASKS)))
    assert len(set(second)) == 1
    assert second[0] != first[0]
    assert async_setup.counter.mints == 2
    assert await async_setup.server_count() == 2


async def test_async_the_round_trip_counts_against_the_token(async_setup: AsyncSetup) -> None:
    """The lifetime runs from before the create request, not from when its answer came."""
    provider = async_setup.provider()

    async def slow_answer() -> None:
        async_setup.monotonic.now += 5  # the mint takes five seconds

    async_setup.counter.hold = slow_answer
    token = await provider.token()
    async_setup.counter.hold = None
    async_setup.monotonic.now = REFRESH_AT - 0.001
    assert await provider.token() == token
    async_setup.monotonic.now = REFRESH_AT
    assert await provider.token() != token
    assert async_setup.counter.mints == 2


async def test_async_a_cancelled_mint_is_started_again_for_its_waiters(
    async_setup: AsyncSetup,
) -> None:
    """If the mint task itself is cancelled (not a caller), its waiters mint anew."""
    provider = async_setup.provider()
    entered = asyncio.Event()

    async def hold() -> None:
        entered.set()
        await asyncio.Event().wait()  # until cancelled: the first mint never gets out

    async_setup.counter.hold = hold
    waiters = [asyncio.create_task(provider.token()) for _ in range(3)]
    await _within(entered.wait())
    async_setup.counter.hold = None
    flight = provider._flight
    assert flight is not None
    flight.cancel()
    tokens = await _within(asyncio.gather(*waiters))
    assert len(set(tokens)) == 1
    assert async_setup.counter.mints == 2


async def test_async_a_failed_mint_is_raised_to_every_waiting_task(
    async_setup: AsyncSetup,
) -> None:
    """One refused mint, its very exception in all hundred tasks; the next call retries."""
    await async_setup.rotate_key_away()
    provider = async_setup.provider()
    results = await asyncio.gather(
        *(provider.token() for _ in range(TASKS)), return_exceptions=True
    )
    assert async_setup.counter.mints == 1
    first = results[0]
    assert isinstance(first, AuthenticationError)
    assert all(result is first for result in results)
    with pytest.raises(AuthenticationError):
        await provider.token()
    assert async_setup.counter.mints == 2


async def test_async_cancelling_waiters_does_not_cancel_the_mint(async_setup: AsyncSetup) -> None:
    """Cancelling the task that started the mint, or any other, leaves it to the rest."""
    provider = async_setup.provider()
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        entered.set()
        await _within(release.wait())

    async_setup.counter.hold = hold
    starter = asyncio.create_task(provider.token())
    await _within(entered.wait())
    follower = asyncio.create_task(provider.token())
    survivor = asyncio.create_task(provider.token())
    await asyncio.sleep(0)
    starter.cancel()
    follower.cancel()
    await asyncio.sleep(0)
    release.set()
    token = await asyncio.wait_for(survivor, 5)
    assert starter.cancelled()
    assert follower.cancelled()
    assert await provider.token() == token
    assert async_setup.counter.mints == 1

    # Every caller cancelled: the token minted meanwhile is kept for the next one.
    release.clear()
    entered.clear()
    async_setup.monotonic.now = USABLE_UNTIL
    only = asyncio.create_task(provider.token())
    await _within(entered.wait())
    only.cancel()
    release.set()
    fresh = await _within(provider.token())
    assert fresh != token
    assert await provider.token() == fresh
    assert async_setup.counter.mints == 2


async def test_async_stale_token_while_refreshing_and_after_a_failed_refresh(
    async_setup: AsyncSetup,
) -> None:
    """Others get the stale token during the refresh; a failed one falls back, then raises."""
    provider = async_setup.provider()
    old = await provider.token()
    await async_setup.rotate_key_away()
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        entered.set()
        await _within(release.wait())

    async_setup.counter.hold = hold
    async_setup.monotonic.now = REFRESH_AT
    leader = asyncio.create_task(provider.token())
    await _within(entered.wait())
    assert await _within(provider.token(), 1) == old, "a second caller does not wait"
    release.set()
    assert await _within(leader) == old, "the refresh failed: the still-usable token is used"
    assert async_setup.counter.mints == 2

    async_setup.counter.hold = None
    async_setup.monotonic.now = USABLE_UNTIL
    with pytest.raises(AuthenticationError):
        await provider.token()
    assert async_setup.counter.mints == 3


def _receiving_app(receiver: AsyncGatepass, seen: list[tuple[str, bytes, int]]) -> ASGIApp:
    """The called service: 200 with the caller's id for a valid token, else 401."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        state = await receiver.authenticate_request(scope)
        status = 200 if state.is_authenticated else 401
        headers = dict(scope["headers"])
        seen.append((headers[b"authorization"].decode(), body, status))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(state.subject).encode()})

    return app


async def test_async_auth_flow_retries_a_revoked_token_once_with_a_fresh_one(
    async_setup: AsyncSetup, clock: FixedClock
) -> None:
    """Through a real receiving app: 200; revoke; 401 then a retry with a new token → 200."""
    seen: list[tuple[str, bytes, int]] = []
    provider = async_setup.provider()
    async with (
        on_clock(
            AsyncGatepass(
                machine_secret_key=async_setup.cast.api_key,
                api_url=API_URL,
                transport=httpx.ASGITransport(app=async_setup.app),
            ),
            clock,
        ) as receiver,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_receiving_app(receiver, seen)),
            base_url="http://api.test",
            auth=M2MTokenAuth(provider),
        ) as http,
    ):
        answer = await http.get("/invoices")
        assert (answer.status_code, answer.json()) == (200, async_setup.cast.email_id)
        old = await provider.token()

        listed = await async_setup.admin.m2m_tokens.list(subject=async_setup.cast.email_id)
        await async_setup.admin.m2m_tokens.revoke(listed.m2m_tokens[0].id)
        start = time.monotonic()
        while (await receiver.authenticate_token(old)).is_authenticated:
            assert time.monotonic() - start < DEADLINE, "the revocation never arrived"
            await asyncio.sleep(0.01)

        async def chunks() -> AsyncIterator[bytes]:
            # A streamed body: it can be sent twice only because the flow buffered it.
            yield b'{"amount":'
            yield b" 5}"

        seen.clear()
        answer = await http.post("/invoices", content=chunks())
        assert answer.status_code == 200
    assert [status for _, _, status in seen] == [401, 200]
    assert seen[0][0] == f"Bearer {old}"
    assert seen[1][0] == f"Bearer {await provider.token()}" != seen[0][0]
    assert seen[0][1] == seen[1][1] == b'{"amount": 5}'
    assert async_setup.counter.mints == 2
    assert len(answer.history) == 1
    assert answer.history[0].status_code == 401


@pytest.mark.parametrize(("status", "attempts"), [(401, 2), (403, 1), (500, 1)])
async def test_async_auth_flow_retries_only_a_401_and_only_once(
    async_setup: AsyncSetup, status: int, attempts: int
) -> None:
    """A receiver that always refuses: one retry after a 401, none after anything else."""
    tokens: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["authorization"])
        return httpx.Response(status)

    provider = async_setup.provider()
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(refuse), auth=M2MTokenAuth(provider)
    ) as http:
        answer = await http.get("http://api.test/")
    assert answer.status_code == status
    assert len(tokens) == attempts
    assert len(set(tokens)) == attempts, "the retry carries a fresh token"
    assert async_setup.counter.mints == attempts
