"""``gatepass.asgi``: a real Starlette app behind ``GatepassMiddleware``, against the real server.

The app is driven through ``httpx.ASGITransport`` and verifies tokens with an
``AsyncGatepass`` talking to the live server over TCP (SQLite and PostgreSQL).
WebSocket, lifespan and state handling are checked with raw ASGI events, as a server
would send them; those never reach the Gatepass server, so they use a client whose
server address answers nothing.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from integration_support import (
    CLAIMS,
    EXPIRY_ADVANCE_MS,
    EXPIRY_TTL_SECONDS,
    FORGERIES,
    LEEWAY_ADVANCE_MS,
    MALFORMED_HEADER,
    NOWHERE,
    SQLITE_ONLY,
    UNISSUED_MACHINE_ID,
    Answer,
    Server,
    World,
    apoll,
    build_world,
    expect,
    expect_unavailable_never_ok,
    random_opaque_token,
    refused,
    unavailable,
)
from sdk_support import bearer
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatepass import AsyncGatepass, Gatepass, RequestState
from gatepass.asgi import GatepassMiddleware, Message, Scope, state_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from starlette.requests import Request

    from gatepass_server.domain.clock import FixedClock


def _described(state: RequestState | None) -> dict[str, Any]:
    if state is None:
        return {"state": None}
    return {
        "authenticated": state.is_authenticated,
        "reason": state.reason,
        "subject": state.subject,
        "scopes": list(state.scopes),
        "claims": dict(state.claims),
        "token_id": state.token_id,
    }


async def _machine(request: Request) -> JSONResponse:
    # Both ways of reading the state must give the one the middleware stored.
    assert state_of(request) is request.state.gatepass
    return JSONResponse(_described(state_of(request)))


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"health": "ok", **_described(state_of(request))})


def make_app(gatepass: AsyncGatepass, audience: str, **options: Any) -> Starlette:
    """A Starlette app whose every route but ``/health`` is behind the middleware."""
    return Starlette(
        routes=[Route("/machine", _machine), Route("/health", _health)],
        middleware=[
            Middleware(
                GatepassMiddleware,
                gatepass=gatepass,
                audience=audience,
                exclude_paths={"/health"},
                **options,
            )
        ],
    )


@pytest.fixture
def world(admin: Gatepass, live_server: Server) -> Iterator[World]:
    """The machines of this test."""
    with build_world(admin, live_server.url) as built:
        yield built


@pytest.fixture
async def receiver(world: World, clock: FixedClock) -> AsyncIterator[AsyncGatepass]:
    """The protected app's client, verifying as the API machine."""
    async with world.async_receiver(clock) as client:
        yield client


def _http(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test")


@pytest.fixture
async def http(world: World, receiver: AsyncGatepass) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the protected app."""
    async with _http(make_app(receiver, world.api.id)) as client:
        yield client


@pytest.fixture
async def scoped_http(world: World, receiver: AsyncGatepass) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app when it requires scopes ``api`` and one no caller holds."""
    app = make_app(receiver, world.api.id, required_scopes=[world.api.id, UNISSUED_MACHINE_ID])
    async with _http(app) as client:
        yield client


@pytest.fixture
async def nowhere() -> AsyncIterator[AsyncGatepass]:
    """A client whose server answers nothing: any verification would be unavailable."""
    async with AsyncGatepass(api_url=NOWHERE) as client:
        yield client


async def _get(
    http: httpx.AsyncClient, path: str, token: str | None = None, **headers: str
) -> Answer:
    if token is not None:
        headers.update(bearer(token))
    response = await http.get(path, headers=headers)
    return Answer(response.status_code, dict(response.headers), response.content)


def _ok(answer: Answer, world: World) -> None:
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["subject"] == world.caller.id
    assert body["scopes"] == [world.api.id]
    assert body["claims"] == CLAIMS
    assert body["token_id"].startswith("mt_")


@pytest.fixture
async def anonymous_http(nowhere: AsyncGatepass) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app verifying with the :data:`NOWHERE` client."""
    async with _http(make_app(nowhere, UNISSUED_MACHINE_ID)) as client:
        yield client


# --- over HTTP, against the real server ----------------------------------------------


async def test_valid_tokens_reach_the_app(http: httpx.AsyncClient, world: World) -> None:
    """Opaque and JWT tokens of a machine scoped to the API get 200.

    The app reads the caller's id, its scopes and the token's custom claims from
    ``request.state.gatepass``.
    """
    for token in world.tokens().values():
        _ok(await _get(http, "/machine", token), world)


async def test_requests_without_one_well_formed_bearer_token_are_refused(
    anonymous_http: httpx.AsyncClient,
) -> None:
    """No header or another scheme: 401 ``Bearer`` alone; a malformed or doubled one: 400.

    Decided before any verification: the client's server answers nothing.
    """
    http = anonymous_http
    expect(await _get(http, "/machine"), "missing")
    expect(await _get(http, "/machine", Authorization="Basic dXNlcjpwYXNz"), "missing")
    expect(await _get(http, "/machine", Authorization=MALFORMED_HEADER), "malformed")
    doubled = [("Authorization", "Bearer mt_a"), ("Authorization", "Bearer mt_b")]
    response = await http.get("/machine", headers=doubled)
    expect(Answer(response.status_code, dict(response.headers), response.content), "malformed")
    # and indeed nothing could have been verified: a token gets 503
    expect(await _get(http, "/machine", random_opaque_token()), "unavailable")


async def test_revoked_tokens_are_refused_within_two_seconds(
    http: httpx.AsyncClient, world: World, admin: Gatepass
) -> None:
    """A token accepted, then revoked: 401 ``invalid_token`` within the two-second bound."""
    for token_format in ("opaque", "jwt"):
        token, token_id = world.mint_with_id(token_format)
        _ok(await _get(http, "/machine", token), world)
        admin.m2m_tokens.revoke(token_id)
        answers = await apoll(functools.partial(_get, http, "/machine", token), refused)
        expect(answers[-1], "invalid")


async def test_expired_tokens_are_refused(
    http: httpx.AsyncClient, world: World, clock: FixedClock
) -> None:
    """Past its expiry by the server's clock a token is refused, accepted before or not.

    The server refuses an opaque token it is asked about at once; past the SDK's leeway,
    every token is refused, cached or not.
    """
    accepted = world.tokens(seconds_until_expiration=EXPIRY_TTL_SECONDS)
    unseen = world.tokens(seconds_until_expiration=EXPIRY_TTL_SECONDS)
    for token in accepted.values():
        _ok(await _get(http, "/machine", token), world)
    clock.advance(EXPIRY_ADVANCE_MS)
    expect(await _get(http, "/machine", unseen["opaque"]), "invalid")
    clock.advance(LEEWAY_ADVANCE_MS)
    for token in [*accepted.values(), *unseen.values()]:
        expect(await _get(http, "/machine", token), "invalid")


async def test_tokens_of_a_machine_not_scoped_to_the_api_are_refused(
    http: httpx.AsyncClient, world: World
) -> None:
    """A valid token whose minter may not call the API: 401, as opaque token and as JWT."""
    for token_format in ("opaque", "jwt"):
        token = world.mint(token_format, by="stranger")
        expect(await _get(http, "/machine", token), "invalid")


async def test_forged_tokens_are_refused(http: httpx.AsyncClient, world: World) -> None:
    """A never-issued ``mt_`` token, a JWT signed by another key, ``alg: none``: all 401."""
    real = world.mint("jwt")
    _ok(await _get(http, "/machine", real), world)  # the JWKS is loaded: only forgery differs
    expect(await _get(http, "/machine", random_opaque_token()), "invalid")
    for name, forge in FORGERIES.items():
        answer = await _get(http, "/machine", forge(real))
        assert answer.status == 401, name
        expect(answer, "invalid")


async def test_tokens_lacking_a_required_scope_get_403(
    scoped_http: httpx.AsyncClient, world: World
) -> None:
    """With ``required_scopes``, a valid token lacking one: 403 ``insufficient_scope``."""
    scope = f"{world.api.id} {UNISSUED_MACHINE_ID}"
    for token in world.tokens().values():
        expect(await _get(scoped_http, "/machine", token), "insufficient_scope", scope=scope)


async def test_stopped_server_answers_503_never_200(
    http: httpx.AsyncClient, world: World, live_server: Server
) -> None:
    """With the server gone, accepted and never-seen tokens alike get 503 + ``Retry-After``."""
    accepted = world.tokens()
    unseen = world.tokens()
    for token in accepted.values():
        _ok(await _get(http, "/machine", token), world)
    # The event loop keeps running meanwhile, so the client sees its feed cut.
    await asyncio.to_thread(live_server.stop)
    expect_unavailable_never_ok(
        await apoll(functools.partial(_get, http, "/machine", accepted["opaque"]), unavailable)
    )
    for token in [*accepted.values(), *unseen.values()]:
        expect(await _get(http, "/machine", token), "unavailable")


@SQLITE_ONLY
async def test_excluded_path_and_optional_mode(
    world: World, receiver: AsyncGatepass, http: httpx.AsyncClient
) -> None:
    """An excluded path runs without a state; ``optional`` lets every request reach the app.

    In optional mode the app itself sees why a request is not authenticated.
    """
    health = await _get(http, "/health")
    assert health.status == 200
    assert health.json() == {"health": "ok", "state": None}
    async with _http(make_app(receiver, world.api.id, optional=True)) as optional:
        anonymous = await _get(optional, "/machine")
        assert anonymous.status == 200
        assert anonymous.json()["reason"] == "token-missing"
        forged = await _get(optional, "/machine", random_opaque_token())
        assert forged.status == 200
        assert forged.json()["reason"] == "token-invalid"
        _ok(await _get(optional, "/machine", world.mint("opaque")), world)


# --- raw ASGI: WebSocket, lifespan, state ---------------------------------------------


class Recorder:
    """An inner ASGI app recording the scopes it was called with."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Record ``scope``; accept a WebSocket, answer HTTP with 204."""
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


async def _run(app: GatepassMiddleware, scope: Scope, incoming: Sequence[Message]) -> list[Message]:
    """Run ``app`` on ``scope`` with the ``incoming`` events; the events it sent."""
    queue = list(incoming)
    sent: list[Message] = []

    async def receive() -> Message:
        return queue.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _websocket(headers: list[tuple[bytes, bytes]], **extra: Any) -> Scope:
    return {"type": "websocket", "path": "/feed", "headers": headers, **extra}


async def test_refused_websocket_is_closed_before_accept(nowhere: AsyncGatepass) -> None:
    """Without the denial-response extension a refused WebSocket is closed with 1008."""
    inner = Recorder()
    app = GatepassMiddleware(inner, gatepass=nowhere)
    sent = await _run(app, _websocket([]), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert inner.scopes == []


async def test_refused_websocket_gets_the_http_challenge_when_the_server_can(
    nowhere: AsyncGatepass,
) -> None:
    """With ``websocket.http.response``, the handshake fails with the RFC 6750 401 itself."""
    app = GatepassMiddleware(Recorder(), gatepass=nowhere, realm="api")
    scope = _websocket([], extensions={"websocket.http.response": {}})
    start, body = await _run(app, scope, [{"type": "websocket.connect"}])
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 401
    assert (b"www-authenticate", b'Bearer realm="api"') in start["headers"]
    assert body["type"] == "websocket.http.response.body"
    assert body["body"] == b'{"error_description":"This resource requires a bearer token"}'


async def test_websocket_is_closed_with_1013_when_verification_is_unavailable(
    nowhere: AsyncGatepass,
) -> None:
    """A token that cannot be verified now: closed with 1013 (try again later), not 1008."""
    app = GatepassMiddleware(Recorder(), gatepass=nowhere)
    scope = _websocket([(b"authorization", f"Bearer {random_opaque_token()}".encode())])
    sent = await _run(app, scope, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1013}]
    assert scope["state"]["gatepass"].reason == "verification-unavailable"


async def test_websocket_with_a_valid_token_reaches_the_app(
    world: World, receiver: AsyncGatepass
) -> None:
    """An authenticated WebSocket is passed on, its state in ``scope["state"]``."""
    inner = Recorder()
    app = GatepassMiddleware(inner, gatepass=receiver, audience=world.api.id)
    token = world.mint("jwt")
    scope = _websocket([(b"authorization", f"Bearer {token}".encode())])
    sent = await _run(app, scope, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.accept"}]
    assert inner.scopes == [scope]
    state = state_of(scope)
    assert state is not None
    assert state.subject == world.caller.id


async def test_lifespan_passes_through_and_state_is_kept(nowhere: AsyncGatepass) -> None:
    """Lifespan reaches the app untouched; a request's existing state dict is extended.

    Replacing ``scope["state"]`` would lose what the lifespan stored there.
    """
    inner = Recorder()
    app = GatepassMiddleware(inner, gatepass=nowhere, optional=True)
    lifespan: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await _run(app, lifespan, [])
    assert inner.scopes == [lifespan]
    assert "state" not in lifespan

    shared: dict[str, object] = {"pool": "from lifespan"}
    request: Scope = {"type": "http", "path": "/x", "headers": [], "state": shared}
    sent = await _run(app, request, [{"type": "http.request", "body": b""}])
    assert sent[0]["status"] == 204
    assert request["state"] is shared
    assert shared["pool"] == "from lifespan"
    assert state_of(request) is shared["gatepass"]


async def test_settings_no_request_could_satisfy_fail_at_construction(
    nowhere: AsyncGatepass,
) -> None:
    """A sync client, an unknown token type, a bad scope or realm: refused at startup."""
    inner = Recorder()
    with Gatepass(api_url=NOWHERE) as sync_client, pytest.raises(TypeError):
        GatepassMiddleware(inner, gatepass=sync_client)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown token type"):
        GatepassMiddleware(inner, gatepass=nowhere, accepts_token="cookie")
    with pytest.raises(ValueError, match="scope-token"):
        GatepassMiddleware(inner, gatepass=nowhere, required_scopes=['mch_"x'])
    with pytest.raises(TypeError):
        GatepassMiddleware(inner, gatepass=nowhere, required_scopes="mch_x")
    with pytest.raises(ValueError, match="realm"):
        GatepassMiddleware(inner, gatepass=nowhere, realm="api\r\nSet-Cookie: x")
    with pytest.raises(TypeError):
        state_of(object())
