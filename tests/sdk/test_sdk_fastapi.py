"""``gatepass.fastapi``: a real FastAPI app using ``GatepassAuth``, against the real server.

The app is driven through ``httpx.ASGITransport`` and verifies tokens with an
``AsyncGatepass`` talking to the live server over TCP (SQLite and PostgreSQL). A refusal
is FastAPI's ``HTTPException``: the challenge's status and headers, its body in ``detail``.
"""

# NOTE: no `from __future__ import annotations`: FastAPI reads the annotations of the
# routes at runtime, and those refer to names local to make_app.
import asyncio
import functools
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
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

from gatepass import AsyncGatepass, Gatepass, RequestState
from gatepass.asgi import GatepassMiddleware
from gatepass.fastapi import GatepassAuth
from gatepass_server.domain.clock import FixedClock


def _described(state: RequestState) -> dict[str, Any]:
    return {
        "subject": state.subject,
        "scopes": list(state.scopes),
        "claims": dict(state.claims),
        "token_id": state.token_id,
    }


def make_app(auth: GatepassAuth, api_id: str) -> FastAPI:
    """The protected app.

    ``/machine`` needs a valid token; ``/jobs`` the scope ``api`` (which callers hold);
    ``/billing`` also one no caller holds.
    """
    app = FastAPI()
    machine_state = Annotated[RequestState, Depends(auth)]

    @app.get("/machine")
    async def machine(caller: machine_state) -> dict[str, Any]:
        return _described(caller)

    @app.get("/jobs")
    async def jobs(caller: Annotated[RequestState, Depends(auth.requires(api_id))]) -> Any:
        return _described(caller)

    @app.get("/billing", dependencies=[Depends(auth.requires(api_id, UNISSUED_MACHINE_ID))])
    async def billing(caller: machine_state) -> dict[str, Any]:
        return _described(caller)

    return app


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


def _http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test")


@pytest.fixture
async def http(world: World, receiver: AsyncGatepass) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the protected app."""
    app = make_app(GatepassAuth(receiver, audience=world.api.id), world.api.id)
    async with _http(app) as client:
        yield client


@pytest.fixture
async def anonymous_http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app verifying with a client of the :data:`NOWHERE` server."""
    async with AsyncGatepass(api_url=NOWHERE) as client:
        app = make_app(GatepassAuth(client), UNISSUED_MACHINE_ID)
        async with _http(app) as http:
            yield http


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


async def test_valid_tokens_reach_the_route(http: httpx.AsyncClient, world: World) -> None:
    """Opaque and JWT tokens of a machine scoped to the API get 200, scoped routes too.

    The route receives the caller's id, its scopes and the token's custom claims.
    """
    for token in world.tokens().values():
        _ok(await _get(http, "/machine", token), world)
        _ok(await _get(http, "/jobs", token), world)


async def test_requests_without_one_well_formed_bearer_token_are_refused(
    anonymous_http: httpx.AsyncClient,
) -> None:
    """No header or another scheme: 401 ``Bearer`` alone; a malformed or doubled one: 400.

    Decided before any verification: the client's server answers nothing. ``HTTPBearer``
    only documents the scheme: it would pass the doubled header on.
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
    http: httpx.AsyncClient, world: World
) -> None:
    """``auth.requires(...)``: a valid token lacking one of the scopes gets 403."""
    scope = f"{world.api.id} {UNISSUED_MACHINE_ID}"
    for token in world.tokens().values():
        expect(await _get(http, "/billing", token), "insufficient_scope", scope=scope)


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
async def test_state_of_the_middleware_is_reused_only_when_it_qualifies(
    world: World, receiver: AsyncGatepass
) -> None:
    """Behind ``GatepassMiddleware`` a token is verified once, unless settings differ.

    The middleware here has no audience, so it accepts a stranger's JWT; the dependency,
    which names the API as its audience, must verify again and refuse it.
    """
    calls: list[object] = []
    authenticate = receiver.authenticate_request

    async def counted(request: object, **options: Any) -> RequestState:
        calls.append(request)
        return await authenticate(request, **options)

    receiver.authenticate_request = counted  # type: ignore[method-assign]
    inner = make_app(GatepassAuth(receiver, audience=world.api.id), world.api.id)
    app = GatepassMiddleware(inner, gatepass=receiver, optional=True)
    async with _http(app) as http:
        _ok(await _get(http, "/machine", world.mint("opaque")), world)
        assert len(calls) == 1
        expect(await _get(http, "/machine", world.mint("jwt", by="stranger")), "invalid")
        assert len(calls) == 3


async def test_openapi_documents_the_bearer_scheme() -> None:
    """Every protected operation requires the ``Gatepass`` HTTP bearer scheme in OpenAPI."""
    async with AsyncGatepass(api_url=NOWHERE) as client:
        document = make_app(GatepassAuth(client), UNISSUED_MACHINE_ID).openapi()
    assert document["components"]["securitySchemes"] == {
        "Gatepass": {
            "type": "http",
            "scheme": "bearer",
            "description": "A Gatepass M2M token: an opaque mt_… token or a JWT.",
        }
    }
    for path in ("/machine", "/jobs", "/billing"):
        assert document["paths"][path]["get"]["security"] == [{"Gatepass": []}], path


async def test_settings_no_request_could_satisfy_fail_at_construction() -> None:
    """A sync client, an unknown token type, a bad realm or scope: refused at startup."""
    async with AsyncGatepass(api_url=NOWHERE) as client:
        with Gatepass(api_url=NOWHERE) as sync_client, pytest.raises(TypeError):
            GatepassAuth(sync_client)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown token type"):
            GatepassAuth(client, accepts_token="cookie")
        with pytest.raises(ValueError, match="realm"):
            GatepassAuth(client, realm="api\nx")
        with pytest.raises(ValueError, match="scope-token"):
            GatepassAuth(client).requires("mch_ x")
