"""``gatepass.flask``: a real Flask app behind ``GatepassFlask``, against the real server.

Each test builds a tiny app whose views are guarded by ``@gatepass.required``, drives it
with Flask's test client, and verifies tokens with a sync ``Gatepass`` talking to the live
server over TCP (SQLite and PostgreSQL). ``integration_support`` describes the machines.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
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
    build_world,
    expect,
    expect_unavailable_never_ok,
    poll,
    random_opaque_token,
    refused,
    unavailable,
)
from sdk_support import bearer, on_clock

from gatepass import Gatepass, RequestState
from gatepass.flask import EXTENSION_KEY, GatepassFlask, current_state

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flask.testing import FlaskClient

    from gatepass_server.domain.clock import FixedClock


def _described(state: RequestState | None) -> dict[str, Any]:
    assert state is not None
    return {
        "authenticated": state.is_authenticated,
        "reason": state.reason,
        "subject": state.subject,
        "scopes": list(state.scopes),
        "claims": dict(state.claims),
        "token_id": state.token_id,
    }


def make_app(api_id: str, ext: GatepassFlask) -> Flask:
    """The protected app.

    ``/machine`` (and its async twin) needs a valid token, ``/billing`` also the scopes
    ``api`` and one no caller holds; ``/whoami`` is open and reports what it was told.
    """
    app = Flask(__name__)
    ext.init_app(app)

    @app.get("/machine")
    @ext.required
    def machine() -> dict[str, Any]:
        return _described(current_state())

    @app.get("/async-machine")
    @ext.required
    async def async_machine() -> dict[str, Any]:
        return _described(current_state())

    @app.get("/billing")
    @ext.required(scopes=[api_id, UNISSUED_MACHINE_ID])
    def billing() -> dict[str, Any]:
        return _described(current_state())

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return _described(ext.authenticate())

    return app


@pytest.fixture
def world(admin: Gatepass, live_server: Server) -> Iterator[World]:
    """The machines of this test."""
    with build_world(admin, live_server.url) as built:
        yield built


@pytest.fixture
def receiver(world: World, clock: FixedClock) -> Iterator[Gatepass]:
    """The protected app's client, verifying as the API machine."""
    with world.receiver(clock) as client:
        yield client


@pytest.fixture
def http(world: World, receiver: Gatepass) -> FlaskClient:
    """Flask's test client for the protected app."""
    ext = GatepassFlask(gatepass=receiver, audience=world.api.id)
    return make_app(world.api.id, ext).test_client()


@pytest.fixture
def anonymous_http() -> Iterator[FlaskClient]:
    """Flask's test client for the app verifying with a client of the :data:`NOWHERE` server."""
    with Gatepass(api_url=NOWHERE) as client:
        yield make_app(UNISSUED_MACHINE_ID, GatepassFlask(gatepass=client)).test_client()


def _get(http: FlaskClient, path: str, token: str | None = None, **headers: str) -> Answer:
    if token is not None:
        headers.update(bearer(token))
    response = http.get(path, headers=headers)
    return Answer(
        response.status_code,
        {name.lower(): value for name, value in response.headers.items()},
        response.get_data(),
    )


def _ok(answer: Answer, world: World) -> None:
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["subject"] == world.caller.id
    assert body["scopes"] == [world.api.id]
    assert body["claims"] == CLAIMS
    assert body["token_id"].startswith("mt_")


def test_valid_tokens_reach_the_view(http: FlaskClient, world: World) -> None:
    """Opaque and JWT tokens of a machine scoped to the API get 200, sync and async views.

    The view reads the caller's id, its scopes and the token's custom claims.
    """
    for token in world.tokens().values():
        _ok(_get(http, "/machine", token), world)
        _ok(_get(http, "/async-machine", token), world)


def test_requests_without_one_well_formed_bearer_token_are_refused(
    anonymous_http: FlaskClient,
) -> None:
    """No header or another scheme: 401 ``Bearer`` alone; a malformed or doubled one: 400.

    Decided before any verification: the client's server answers nothing.
    """
    http = anonymous_http
    expect(_get(http, "/machine"), "missing")
    expect(_get(http, "/machine", Authorization="Basic dXNlcjpwYXNz"), "missing")
    expect(_get(http, "/machine", Authorization=MALFORMED_HEADER), "malformed")
    expect(_get(http, "/machine", Authorization="Bearer mt_a, Bearer mt_b"), "malformed")
    # and indeed nothing could have been verified: a token gets 503
    expect(_get(http, "/machine", random_opaque_token()), "unavailable")


@SQLITE_ONLY
def test_authenticate_reports_without_refusing(http: FlaskClient, world: World) -> None:
    """``ext.authenticate()`` gives an open view the state, valid or not, and never refuses."""
    anonymous = _get(http, "/whoami")
    assert anonymous.status == 200
    assert anonymous.json()["authenticated"] is False
    assert anonymous.json()["reason"] == "token-missing"
    _ok(_get(http, "/whoami", world.mint("opaque")), world)


def test_revoked_tokens_are_refused_within_two_seconds(
    http: FlaskClient, world: World, admin: Gatepass
) -> None:
    """A token accepted, then revoked: 401 ``invalid_token`` within the two-second bound."""
    for token_format in ("opaque", "jwt"):
        token, token_id = world.mint_with_id(token_format)
        _ok(_get(http, "/machine", token), world)
        admin.m2m_tokens.revoke(token_id)
        expect(poll(functools.partial(_get, http, "/machine", token), refused)[-1], "invalid")


def test_expired_tokens_are_refused(http: FlaskClient, world: World, clock: FixedClock) -> None:
    """Past its expiry by the server's clock a token is refused, accepted before or not.

    The server refuses an opaque token it is asked about at once; past the SDK's leeway,
    every token is refused, cached or not.
    """
    accepted = world.tokens(seconds_until_expiration=EXPIRY_TTL_SECONDS)
    unseen = world.tokens(seconds_until_expiration=EXPIRY_TTL_SECONDS)
    for token in accepted.values():
        _ok(_get(http, "/machine", token), world)
    clock.advance(EXPIRY_ADVANCE_MS)
    expect(_get(http, "/machine", unseen["opaque"]), "invalid")
    clock.advance(LEEWAY_ADVANCE_MS)
    for token in [*accepted.values(), *unseen.values()]:
        expect(_get(http, "/machine", token), "invalid")


def test_tokens_of_a_machine_not_scoped_to_the_api_are_refused(
    http: FlaskClient, world: World
) -> None:
    """A valid token whose minter may not call the API: 401, as opaque token and as JWT."""
    for token_format in ("opaque", "jwt"):
        expect(_get(http, "/machine", world.mint(token_format, by="stranger")), "invalid")


def test_forged_tokens_are_refused(http: FlaskClient, world: World) -> None:
    """A never-issued ``mt_`` token, a JWT signed by another key, ``alg: none``: all 401."""
    real = world.mint("jwt")
    _ok(_get(http, "/machine", real), world)  # the JWKS is loaded: only the forgery differs
    expect(_get(http, "/machine", random_opaque_token()), "invalid")
    for name, forge in FORGERIES.items():
        answer = _get(http, "/machine", forge(real))
        assert answer.status == 401, name
        expect(answer, "invalid")


def test_tokens_lacking_a_required_scope_get_403(http: FlaskClient, world: World) -> None:
    """A valid token without every scope the view requires: 403 ``insufficient_scope``."""
    scope = f"{world.api.id} {UNISSUED_MACHINE_ID}"
    for token in world.tokens().values():
        expect(_get(http, "/billing", token), "insufficient_scope", scope=scope)


def test_stopped_server_answers_503_never_200(
    http: FlaskClient, world: World, live_server: Server
) -> None:
    """With the server gone, accepted and never-seen tokens alike get 503 + ``Retry-After``."""
    accepted = world.tokens()
    unseen = world.tokens()
    for token in accepted.values():
        _ok(_get(http, "/machine", token), world)
    live_server.stop()
    expect_unavailable_never_ok(
        poll(functools.partial(_get, http, "/machine", accepted["opaque"]), unavailable)
    )
    for token in [*accepted.values(), *unseen.values()]:
        expect(_get(http, "/machine", token), "unavailable")


@SQLITE_ONLY
def test_client_built_from_app_config(world: World, clock: FixedClock) -> None:
    """Without a client, ``init_app`` builds one from ``app.config`` for that app."""
    ext = GatepassFlask(audience=world.api.id)
    app = Flask(__name__)
    app.config["GATEPASS_MACHINE_SECRET_KEY"] = world.api_secret_key
    app.config["GATEPASS_API_URL"] = world.api_url
    ext.init_app(app)

    @app.get("/machine")
    @ext.required()
    def machine() -> dict[str, Any]:
        return _described(current_state())

    with on_clock(app.extensions[EXTENSION_KEY], clock) as client:
        assert isinstance(client, Gatepass)
        _ok(_get(app.test_client(), "/machine", world.mint("jwt")), world)
        expect(_get(app.test_client(), "/machine", random_opaque_token()), "invalid")
