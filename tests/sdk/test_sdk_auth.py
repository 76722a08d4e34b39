"""``authenticate_request`` and ``authenticate_token`` against the real server.

Opaque tokens go to the server and are cached; JWTs are verified locally against the JWKS;
revocations arrive through the feed; anything the verifier cannot establish fails closed.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sdk_support import bearer, on_clock

from gatepass import AsyncGatepass, AuthReason, Gatepass, RequestState, TokenType
from gatepass._auth import VerificationOptions
from gatepass_server.domain.keys import SecretKind, generate_secret

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from starlette.types import ASGIApp

    from conftest import LiveServer
    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime

DEADLINE = 5.0
"""How long a test waits for a revocation or a stop to show (the bound is well under 1 s)."""


class Counting(httpx.HTTPTransport):
    """A real socket transport that records each request's method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Record, then send for real."""
        self.seen.append((request.method, request.url.path))
        return super().handle_request(request)

    def count(self, path: str) -> int:
        """How many requests went to ``path``."""
        return sum(1 for _, seen in self.seen if seen == path)


class AsyncCounting(httpx.AsyncBaseTransport):
    """The in-process app as a transport, recording paths; can fail chosen requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.seen: list[str] = []
        self.fail_next: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Record, answer 503 if told to, else hand to the app."""
        path = request.url.path
        self.seen.append(path)
        if self.fail_next.get(path, 0) > 0:
            self.fail_next[path] -= 1
            return httpx.Response(
                503,
                headers={"content-type": "application/json", "retry-after": "1"},
                json={
                    "errors": [
                        {
                            "message": "x",
                            "long_message": "x",
                            "code": "service_unavailable",
                            "meta": {},
                        }
                    ]
                },
            )
        return await self.inner.handle_async_request(request)

    def count(self, path: str) -> int:
        """How many requests went to ``path``."""
        return self.seen.count(path)


class Monotonic:
    """A monotonic clock that runs with real time plus whatever a test adds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        """Now."""
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        """Jump ahead."""
        self.offset += seconds


@dataclass
class Cast:
    """The machines of one test: ``email`` may call ``api``; ``stranger`` may not."""

    api_id: str
    api_key: str
    email_id: str
    email_key: str
    stranger_key: str


def _cast(admin: Gatepass) -> Cast:
    api = admin.machines.create(name="API")
    email = admin.machines.create(name="Email", scoped_machines=[api.id])
    stranger = admin.machines.create(name="Stranger")
    assert email.secret_key is not None
    assert stranger.secret_key is not None
    return Cast(
        api.id,
        admin.machines.get_secret_key(api.id).secret,
        email.id,
        email.secret_key,
        stranger.secret_key,
    )


@pytest.fixture
def cast(admin: Gatepass) -> Cast:
    """Three machines on the live server."""
    return _cast(admin)


@pytest.fixture
def mint(live_server: LiveServer, cast: Cast) -> Iterator[Callable[..., str]]:
    """Mint a token as ``email`` (or another machine's key): returns the bearer token."""
    clients: dict[str, Gatepass] = {}

    def mint(key: str | None = None, **options: Any) -> str:
        key = key or cast.email_key
        if key not in clients:
            clients[key] = Gatepass(machine_secret_key=key, api_url=live_server.url)
        token = clients[key].m2m_tokens.create(**options).token
        assert token is not None
        return token

    yield mint
    for client in clients.values():
        client.close()


@pytest.fixture
def receiver_factory(
    live_server: LiveServer, cast: Cast, clock: FixedClock
) -> Iterator[Callable[..., tuple[Gatepass, Counting, Monotonic]]]:
    """Build the receiving service's client (the ``api`` machine's key), on the server's clock."""
    built: list[Gatepass] = []

    def build(
        key: str | None = None, options: VerificationOptions | None = None
    ) -> tuple[Gatepass, Counting, Monotonic]:
        transport = Counting()
        client = on_clock(
            Gatepass(
                machine_secret_key=key or cast.api_key,
                api_url=live_server.url,
                transport=transport,
                verification=options,
            ),
            clock,
        )
        monotonic = Monotonic()
        client._authenticator._v.monotonic = monotonic
        built.append(client)
        return client, transport, monotonic

    yield build
    for client in built:
        client.close()


@pytest.fixture
def receiver(
    receiver_factory: Callable[..., tuple[Gatepass, Counting, Monotonic]],
) -> tuple[Gatepass, Counting, Monotonic]:
    """The receiving service's client with default options."""
    return receiver_factory()


def _until(check: Callable[[], bool]) -> float:
    """Poll ``check`` until it holds (at most ``DEADLINE`` seconds); the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > DEADLINE:
            pytest.fail(f"still not so after {DEADLINE} s")
        time.sleep(0.005)
    return time.monotonic() - start


def test_opaque_token_is_verified_by_the_server_then_cached(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str], cast: Cast
) -> None:
    """The first sight asks the server; the second is answered from the cache."""
    client, transport, _ = receiver
    token = mint(seconds_until_expiration=600, claims={"job": "nightly"})
    first = client.authenticate_request(bearer(token))
    assert first.is_authenticated
    assert first.token_type is TokenType.M2M_TOKEN
    assert (first.subject, first.machine_id, first.scopes) == (
        cast.email_id,
        cast.email_id,
        (cast.api_id,),
    )
    assert dict(first.claims) == {"job": "nightly"}
    assert first.token_id is not None
    assert first.token_id.startswith("mt_")
    assert first.expiration is not None
    assert (first.reason, first.message) == (None, None)
    assert client.authenticate_request(bearer(token)) == first
    assert transport.count("/v1/m2m_tokens/verify") == 1


def test_jwt_is_verified_locally_with_one_jwks_fetch(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str], cast: Cast
) -> None:
    """A JWT never reaches the verify endpoint; the JWKS is fetched once for many tokens."""
    client, transport, _ = receiver
    tokens = [mint(token_format="jwt", claims={"n": n}) for n in range(3)]
    states = [client.authenticate_request(bearer(t), audience=cast.api_id) for t in tokens]
    assert all(s.is_authenticated for s in states)
    assert [dict(s.claims) for s in states] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {s.subject for s in states} == {cast.email_id}
    assert states[0].scopes == (cast.api_id,)
    assert transport.count("/v1/m2m_tokens/verify") == 0
    assert transport.count("/v1/m2m_tokens/jwks") == 1


def test_an_invalid_opaque_token_is_cached_briefly(
    receiver: tuple[Gatepass, Counting, Monotonic],
) -> None:
    """A replayed bad token costs one request per ``negative_cache_ttl``, not one per try."""
    client, transport, monotonic = receiver
    forged = generate_secret(SecretKind.TOKEN)
    for _ in range(3):
        state = client.authenticate_request(bearer(forged))
        assert (state.is_authenticated, state.reason) == (False, AuthReason.TOKEN_INVALID)
    assert transport.count("/v1/m2m_tokens/verify") == 1
    monotonic.advance(VerificationOptions().negative_cache_ttl + 0.01)
    assert client.authenticate_request(bearer(forged)).reason is AuthReason.TOKEN_INVALID
    assert transport.count("/v1/m2m_tokens/verify") == 2


def test_a_valid_answer_is_reused_for_token_cache_ttl_only(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str]
) -> None:
    """After ``token_cache_ttl`` the server is asked again."""
    client, transport, monotonic = receiver
    token = mint(seconds_until_expiration=3600)
    assert client.authenticate_request(bearer(token)).is_authenticated
    monotonic.advance(VerificationOptions().token_cache_ttl - 1)
    assert client.authenticate_request(bearer(token)).is_authenticated
    assert transport.count("/v1/m2m_tokens/verify") == 1
    monotonic.advance(2)
    assert client.authenticate_request(bearer(token)).is_authenticated
    assert transport.count("/v1/m2m_tokens/verify") == 2


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_a_cached_answer_never_outlives_the_token(
    receiver: tuple[Gatepass, Counting, Monotonic],
    mint: Callable[..., str],
    clock: FixedClock,
    token_format: str,
) -> None:
    """A token that expires is refused at once, cache or not (leeway aside)."""
    client, _, _ = receiver
    token = mint(seconds_until_expiration=60, token_format=token_format)
    assert client.authenticate_request(bearer(token)).is_authenticated
    clock.advance(60_000 + int(VerificationOptions().leeway * 1000))
    state = client.authenticate_request(bearer(token))
    assert (state.is_authenticated, state.reason) == (False, AuthReason.TOKEN_EXPIRED)


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_a_revocation_reaches_a_cached_token_through_the_feed(
    receiver: tuple[Gatepass, Counting, Monotonic],
    mint: Callable[..., str],
    admin: Gatepass,
    token_format: str,
) -> None:
    """Once revoked, a token the receiver had cached is refused as soon as the feed says so."""
    client, _, _ = receiver
    token = mint(token_format=token_format)
    state = client.authenticate_request(bearer(token))
    assert state.is_authenticated
    assert state.token_id is not None
    admin.m2m_tokens.revoke(state.token_id, revocation_reason="leaked")
    _until(lambda: not client.authenticate_request(bearer(token)).is_authenticated)
    refused = client.authenticate_request(bearer(token))
    assert refused.reason is AuthReason.TOKEN_REVOKED
    assert refused.token_id is None


def test_a_deleted_machines_jwt_is_refused(
    receiver: tuple[Gatepass, Counting, Monotonic],
    mint: Callable[..., str],
    admin: Gatepass,
    cast: Cast,
) -> None:
    """Deleting the caller revokes its tokens, and the feed carries that too."""
    client, _, _ = receiver
    token = mint(token_format="jwt")
    assert client.authenticate_request(bearer(token)).is_authenticated
    admin.machines.delete(cast.email_id)
    _until(lambda: not client.authenticate_request(bearer(token)).is_authenticated)
    assert client.authenticate_request(bearer(token)).reason is AuthReason.TOKEN_REVOKED


def test_a_stopped_server_fails_closed(
    receiver: tuple[Gatepass, Counting, Monotonic],
    mint: Callable[..., str],
    live_server: LiveServer,
) -> None:
    """With the server gone, neither cached nor new tokens are accepted: unavailable, not 401."""
    client, _, _ = receiver
    cached_opaque, cached_jwt = mint(), mint(token_format="jwt")
    unseen_opaque, unseen_jwt = mint(), mint(token_format="jwt")
    for token in (cached_opaque, cached_jwt):
        assert client.authenticate_request(bearer(token)).is_authenticated
    live_server.stop()
    _until(lambda: not client.authenticate_request(bearer(cached_jwt)).is_authenticated)
    for token in (cached_opaque, cached_jwt, unseen_opaque, unseen_jwt):
        state = client.authenticate_request(bearer(token))
        assert not state.is_authenticated
        assert state.reason is AuthReason.VERIFICATION_UNAVAILABLE
        assert state.reason.is_unavailable


def test_a_silent_feed_stops_trust_after_its_bound(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str]
) -> None:
    """If no long poll has come back within ``wait + 5`` s (a hung server), nothing is trusted."""
    client, _, monotonic = receiver
    token = mint(token_format="jwt")
    assert client.authenticate_request(bearer(token)).is_authenticated
    monotonic.advance(VerificationOptions().max_feed_staleness + 1)
    state = client.authenticate_request(bearer(token))
    assert state.reason is AuthReason.VERIFICATION_UNAVAILABLE


def test_without_the_feed_a_revoked_jwt_stays_valid_until_it_expires(
    receiver_factory: Callable[..., tuple[Gatepass, Counting, Monotonic]],
    mint: Callable[..., str],
    admin: Gatepass,
) -> None:
    """``follow_revocations=False`` is Clerk's behaviour: no feed requests, no revocation."""
    client, transport, _ = receiver_factory(options=VerificationOptions(follow_revocations=False))
    token = mint(token_format="jwt")
    state = client.authenticate_request(bearer(token))
    assert state.token_id is not None
    admin.m2m_tokens.revoke(state.token_id)
    time.sleep(0.2)
    assert client.authenticate_request(bearer(token)).is_authenticated
    assert transport.count("/v1/m2m_tokens/revocations") == 0


def test_audience_is_the_receiving_machine(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str], cast: Cast
) -> None:
    """A token not scoped to ``audience`` is refused, opaque or JWT."""
    client, _, _ = receiver
    for token_format in ("opaque", "jwt"):
        token = mint(token_format=token_format)
        assert client.authenticate_request(bearer(token), audience=cast.api_id).is_authenticated
        other = client.authenticate_request(bearer(token), audience=cast.email_id)
        assert other.reason is AuthReason.TOKEN_INVALID_AUDIENCE


def test_out_of_scope_tokens_are_refused(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str], cast: Cast
) -> None:
    """A machine not allowed to call the receiver gets nothing through.

    The server refuses its opaque token (the receiver verifies with its own key), and
    ``audience`` refuses its JWT.
    """
    client, _, _ = receiver
    opaque = client.authenticate_request(bearer(mint(cast.stranger_key)))
    assert opaque.reason is AuthReason.TOKEN_INVALID
    token = mint(cast.stranger_key, token_format="jwt")
    assert client.authenticate_request(bearer(token), audience=cast.api_id).reason is (
        AuthReason.TOKEN_INVALID_AUDIENCE
    )


def test_a_refused_receiver_key_is_a_configuration_error(
    receiver_factory: Callable[..., tuple[Gatepass, Counting, Monotonic]],
    mint: Callable[..., str],
) -> None:
    """A receiver whose own key the server refuses says so (503 territory, not the caller's 401)."""
    client, _, _ = receiver_factory(key=generate_secret(SecretKind.MACHINE))
    for token in (mint(), mint(token_format="jwt")):
        state = client.authenticate_request(bearer(token))
        assert state.reason is AuthReason.SECRET_KEY_INVALID
        assert state.reason.is_unavailable


@pytest.mark.parametrize(
    ("accepts", "token_kind", "expected"),
    [
        ("m2m_token", "opaque", None),
        ("any", "jwt", None),
        (["session_token", "m2m_token"], "opaque", None),
        ("session_token", "opaque", AuthReason.TOKEN_TYPE_MISMATCH),
        ("m2m_token", "api_key", AuthReason.TOKEN_TYPE_MISMATCH),
        ("any", "api_key", AuthReason.TOKEN_TYPE_NOT_SUPPORTED),
        ("any", "session", AuthReason.TOKEN_TYPE_NOT_SUPPORTED),
        ("m2m_token", "session", AuthReason.TOKEN_TYPE_MISMATCH),
    ],
)
def test_accepts_token(
    receiver: tuple[Gatepass, Counting, Monotonic],
    mint: Callable[..., str],
    cast: Cast,
    accepts: str | list[str],
    token_kind: str,
    expected: AuthReason | None,
) -> None:
    """Token types are told apart as Clerk's SDKs do; only M2M tokens are ever verified."""
    client, transport, _ = receiver
    session_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "opaque": mint,
        "jwt": lambda: mint(token_format="jwt"),
        "api_key": lambda: cast.email_key,
        "session": lambda: jwt.encode({"sub": "user_1", "exp": 2**33}, session_key, "RS256"),
    }[token_kind]()
    state = client.authenticate_request(bearer(token), accepts_token=accepts)
    assert state.reason is expected
    assert state.is_authenticated is (expected is None)
    if token_kind in {"api_key", "session"}:
        assert transport.count("/v1/m2m_tokens/verify") == 0


def test_forged_jwts_are_refused(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str], cast: Cast
) -> None:
    """An attacker's signature under the real ``kid``, and ``alg: none``, never pass."""
    client, transport, _ = receiver
    real = mint(token_format="jwt")
    assert client.authenticate_request(bearer(real)).is_authenticated
    kid = jwt.get_unverified_header(real)["kid"]
    claims = jwt.decode(real, options={"verify_signature": False})
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, attacker, "RS256", headers={"kid": kid})
    assert client.authenticate_request(bearer(forged)).reason is AuthReason.TOKEN_INVALID_SIGNATURE
    unsigned = jwt.encode(claims, None, "none", headers={"kid": kid})
    assert (
        client.authenticate_request(bearer(unsigned)).reason is AuthReason.TOKEN_INVALID_ALGORITHM
    )
    foreign_kid = jwt.encode(claims, attacker, "RS256", headers={"kid": uuid.uuid4().hex})
    assert client.authenticate_request(bearer(foreign_kid)).reason is AuthReason.JWK_KID_MISMATCH
    assert transport.count("/v1/m2m_tokens/jwks") == 1, (
        "a forged kid within the cooldown fetches nothing"
    )
    assert cast.api_id in client.authenticate_request(bearer(real)).scopes


def test_many_threads_share_one_jwks_fetch(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str]
) -> None:
    """Twenty threads seeing a JWT at once fetch the JWKS once and all accept it."""
    client, transport, _ = receiver
    token = mint(token_format="jwt")
    barrier = threading.Barrier(20)
    results: list[RequestState] = []

    def work() -> None:
        barrier.wait()
        results.append(client.authenticate_request(bearer(token)))

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20
    assert all(r.is_authenticated for r in results)
    assert transport.count("/v1/m2m_tokens/jwks") == 1


def test_authenticate_token_takes_the_bare_token(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str], cast: Cast
) -> None:
    """For tokens that arrive outside HTTP headers (gRPC metadata, a queue message)."""
    client, _, _ = receiver
    assert client.authenticate_token(mint()).subject == cast.email_id
    assert client.authenticate_token("mt_nope").reason is AuthReason.TOKEN_INVALID


def test_requests_without_a_token_are_answered_without_io(
    receiver: tuple[Gatepass, Counting, Monotonic],
) -> None:
    """No header or a malformed one is decided before any request to the server."""
    client, transport, _ = receiver
    assert client.authenticate_request({}).reason is AuthReason.TOKEN_MISSING
    assert client.authenticate_request({"Authorization": "Bearer a b"}).reason is (
        AuthReason.AUTHORIZATION_MALFORMED
    )
    assert transport.seen == []


# ---- AsyncGatepass, in process -------------------------------------------------------


@dataclass
class AsyncSetup:
    """An async receiver (``api``'s key) and a minting client (``email``'s key)."""

    receiver: AsyncGatepass
    caller: AsyncGatepass
    transport: AsyncCounting
    monotonic: Monotonic
    cast: Cast


@pytest.fixture
async def in_process(
    app: ASGIApp, async_admin: AsyncGatepass, clock: FixedClock
) -> AsyncIterator[AsyncSetup]:
    """An async receiver and caller against the in-process server."""
    api = await async_admin.machines.create(name="API")
    email = await async_admin.machines.create(name="Email", scoped_machines=[api.id])
    stranger = await async_admin.machines.create(name="Stranger")
    api_key = (await async_admin.machines.get_secret_key(api.id)).secret
    assert email.secret_key is not None
    assert stranger.secret_key is not None
    transport = AsyncCounting(app)
    receiver = on_clock(
        AsyncGatepass(
            machine_secret_key=api_key, api_url="http://gatepass.test", transport=transport
        ),
        clock,
    )
    monotonic = Monotonic()
    receiver._authenticator._v.monotonic = monotonic
    caller = AsyncGatepass(
        machine_secret_key=email.secret_key,
        api_url="http://gatepass.test",
        transport=httpx.ASGITransport(app=app),
    )
    yield AsyncSetup(
        receiver,
        caller,
        transport,
        monotonic,
        Cast(api.id, api_key, email.id, email.secret_key, stranger.secret_key),
    )
    await receiver.aclose()
    await caller.aclose()


async def _mint(setup: AsyncSetup, **options: Any) -> str:
    token = (await setup.caller.m2m_tokens.create(**options)).token
    assert token is not None
    return token


async def test_async_opaque_and_jwt(in_process: AsyncSetup) -> None:
    """The async client verifies both formats, with the same caching as the sync one."""
    opaque, signed = await _mint(in_process), await _mint(in_process, token_format="jwt")
    for token in (opaque, signed, opaque, signed):
        state = await in_process.receiver.authenticate_request(
            bearer(token), audience=in_process.cast.api_id
        )
        assert (state.is_authenticated, state.subject) == (True, in_process.cast.email_id)
    assert in_process.transport.count("/v1/m2m_tokens/verify") == 1
    assert in_process.transport.count("/v1/m2m_tokens/jwks") == 1


async def test_async_a_server_error_is_never_cached_as_invalid(in_process: AsyncSetup) -> None:
    """A 503 from the server gives ``verification-unavailable`` once; the next try verifies."""
    token = await _mint(in_process)
    in_process.transport.fail_next["/v1/m2m_tokens/verify"] = 1
    first = await in_process.receiver.authenticate_request(bearer(token))
    assert first.reason is AuthReason.VERIFICATION_UNAVAILABLE
    assert (await in_process.receiver.authenticate_request(bearer(token))).is_authenticated
    assert in_process.transport.count("/v1/m2m_tokens/verify") == 2


async def test_async_revocation_through_the_feed(
    in_process: AsyncSetup, async_admin: AsyncGatepass
) -> None:
    """A revoked JWT is refused by the async receiver once the feed delivers it."""
    token = await _mint(in_process, token_format="jwt")
    state = await in_process.receiver.authenticate_request(bearer(token))
    assert state.token_id is not None
    await async_admin.m2m_tokens.revoke(state.token_id)
    start = time.monotonic()
    while (await in_process.receiver.authenticate_request(bearer(token))).is_authenticated:
        assert time.monotonic() - start < DEADLINE
        await asyncio.sleep(0.005)
    refused = await in_process.receiver.authenticate_request(bearer(token))
    assert refused.reason is AuthReason.TOKEN_REVOKED


async def test_async_a_rotated_signing_key_is_fetched_on_first_sight(
    in_process: AsyncSetup, runtime: Runtime, async_admin: AsyncGatepass
) -> None:
    """A JWT under a new ``kid`` triggers one JWKS refetch once the cooldown has passed."""
    before = await _mint(in_process, token_format="jwt")
    assert (await in_process.receiver.authenticate_request(bearer(before))).is_authenticated
    machine = await async_admin.machines.get(in_process.cast.api_id)
    await runtime.signing.rotate(machine.instance_id)
    after = await _mint(in_process, token_format="jwt")
    assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
    assert (await in_process.receiver.authenticate_request(bearer(after))).reason is (
        AuthReason.JWK_KID_MISMATCH
    ), "within the cooldown an unknown kid is not fetched"
    assert in_process.transport.count("/v1/m2m_tokens/jwks") == 1
    in_process.monotonic.advance(VerificationOptions().jwks_refetch_cooldown)
    in_process.monotonic.advance(VerificationOptions().negative_cache_ttl)
    assert (await in_process.receiver.authenticate_request(bearer(after))).is_authenticated
    assert (await in_process.receiver.authenticate_request(bearer(before))).is_authenticated
    assert in_process.transport.count("/v1/m2m_tokens/jwks") == 2


def test_a_cached_opaque_answer_ends_at_expiry_without_leeway(
    receiver: tuple[Gatepass, Counting, Monotonic], mint: Callable[..., str], clock: FixedClock
) -> None:
    """The server judged the opaque token; leeway (for JWT clock skew) never extends it."""
    client, transport, _ = receiver
    token = mint(seconds_until_expiration=60)
    assert client.authenticate_request(bearer(token)).is_authenticated
    clock.advance(60_000)
    assert client.authenticate_request(bearer(token)).reason is AuthReason.TOKEN_EXPIRED
    assert transport.count("/v1/m2m_tokens/verify") == 1
