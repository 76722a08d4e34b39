"""``gatepass.django``: a real Django project using ``machine_required``, against the real server.

Django is configured once for the session (no database), with this module as its URLconf;
each test points ``settings.GATEPASS`` at its own API machine with ``override_settings``
and drives the views with ``django.test.Client``. The process-wide sync ``Gatepass`` talks
to the live server over TCP (SQLite and PostgreSQL) and is replaced between tests.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import django
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.test import Client, override_settings
from django.urls import path
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

from gatepass.django import authenticate, get_client, machine_required, reset_client

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gatepass import Gatepass, RequestState
    from gatepass_server.domain.clock import FixedClock

MIDDLEWARE = "gatepass.django.GatepassMiddleware"


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


def _state_view(request: HttpRequest) -> HttpResponseBase:
    return JsonResponse(_described(authenticate(request)))


machine = machine_required(_state_view)


@machine_required
async def async_machine(request: HttpRequest) -> HttpResponseBase:
    """An async view, guarded the same way."""
    return JsonResponse(_described(authenticate(request)))


@machine_required(scopes=[UNISSUED_MACHINE_ID])
def billing(request: HttpRequest) -> HttpResponseBase:
    """Requires a scope no caller holds."""
    return _state_view(request)


def jobs(request: HttpRequest) -> HttpResponseBase:
    """Requires the API's own id as scope, which only exists at run time."""
    return machine_required(scopes=[settings.GATEPASS["AUDIENCE"]])(_state_view)(request)


def whoami(request: HttpRequest) -> HttpResponseBase:
    """Open: reports what the middleware found, if it ran."""
    return JsonResponse(_described(getattr(request, "gatepass", None)))


urlpatterns = [
    path("machine", machine),
    path("async-machine", async_machine),
    path("billing", billing),
    path("jobs", jobs),
    path("whoami", whoami),
]


@pytest.fixture(scope="session")
def django_configured() -> None:
    """Django, configured once for the whole session, with no database."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="not-secret-django-test-key",
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[MIDDLEWARE],
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()


@pytest.fixture
def world(admin: Gatepass, live_server: Server) -> Iterator[World]:
    """The machines of this test."""
    with build_world(admin, live_server.url) as built:
        yield built


@pytest.fixture
def project(django_configured: None, world: World, clock: FixedClock) -> Iterator[Client]:
    """Django's test client, ``settings.GATEPASS`` pointing at this test's API machine."""
    del django_configured
    gatepass = {
        "MACHINE_SECRET_KEY": world.api_secret_key,
        "API_URL": world.api_url,
        "AUDIENCE": world.api.id,
    }
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[MIDDLEWARE], GATEPASS=gatepass):
        on_clock(get_client(), clock)
        try:
            yield Client()
        finally:
            reset_client()


@pytest.fixture
def anonymous_project(django_configured: None) -> Iterator[Client]:
    """Django's test client, ``settings.GATEPASS`` pointing at the :data:`NOWHERE` server."""
    del django_configured
    gatepass = {"API_URL": NOWHERE}
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[MIDDLEWARE], GATEPASS=gatepass):
        try:
            yield Client()
        finally:
            reset_client()


def _get(client: Client, url: str, token: str | None = None, **headers: str) -> Answer:
    if token is not None:
        headers.update(bearer(token))
    response = client.get(url, headers=headers)
    return Answer(
        response.status_code,
        {name.lower(): value for name, value in response.headers.items()},
        response.content,
    )


def _ok(answer: Answer, world: World) -> None:
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["subject"] == world.caller.id
    assert body["scopes"] == [world.api.id]
    assert body["claims"] == CLAIMS
    assert body["token_id"].startswith("mt_")


def test_valid_tokens_reach_the_view(project: Client, world: World) -> None:
    """Opaque and JWT tokens of a machine scoped to the API get 200, sync and async views.

    The view reads the caller's id, its scopes and the token's custom claims.
    """
    for token in world.tokens().values():
        _ok(_get(project, "/machine", token), world)
        _ok(_get(project, "/async-machine", token), world)
        _ok(_get(project, "/jobs", token), world)


def test_requests_without_one_well_formed_bearer_token_are_refused(
    anonymous_project: Client,
) -> None:
    """No header or another scheme: 401 ``Bearer`` alone; a malformed one: 400.

    Decided before any verification: the client's server answers nothing. The middleware
    itself refuses nothing: an open view sees why.
    """
    project = anonymous_project
    expect(_get(project, "/machine"), "missing")
    expect(_get(project, "/async-machine"), "missing")
    expect(_get(project, "/machine", Authorization="Basic dXNlcjpwYXNz"), "missing")
    expect(_get(project, "/machine", Authorization=MALFORMED_HEADER), "malformed")
    anonymous = _get(project, "/whoami")
    assert anonymous.status == 200
    assert anonymous.json()["reason"] == "token-missing"
    # and indeed nothing could have been verified: a token gets 503
    expect(_get(project, "/machine", random_opaque_token()), "unavailable")


def test_revoked_tokens_are_refused_within_two_seconds(
    project: Client, world: World, admin: Gatepass
) -> None:
    """A token accepted, then revoked: 401 ``invalid_token`` within the two-second bound."""
    for token_format in ("opaque", "jwt"):
        token, token_id = world.mint_with_id(token_format)
        _ok(_get(project, "/machine", token), world)
        admin.m2m_tokens.revoke(token_id)
        expect(poll(functools.partial(_get, project, "/machine", token), refused)[-1], "invalid")


def test_expired_tokens_are_refused(project: Client, world: World, clock: FixedClock) -> None:
    """Past its expiry by the server's clock a token is refused, accepted before or not.

    The server refuses an opaque token it is asked about at once; past the SDK's leeway,
    every token is refused, cached or not.
    """
    accepted = world.tokens(seconds_until_expiration=EXPIRY_TTL_SECONDS)
    unseen = world.tokens(seconds_until_expiration=EXPIRY_TTL_SECONDS)
    for token in accepted.values():
        _ok(_get(project, "/machine", token), world)
    clock.advance(EXPIRY_ADVANCE_MS)
    expect(_get(project, "/machine", unseen["opaque"]), "invalid")
    clock.advance(LEEWAY_ADVANCE_MS)
    for token in [*accepted.values(), *unseen.values()]:
        expect(_get(project, "/machine", token), "invalid")


def test_tokens_of_a_machine_not_scoped_to_the_api_are_refused(
    project: Client, world: World
) -> None:
    """A valid token whose minter may not call the API: 401, as opaque token and as JWT."""
    for token_format in ("opaque", "jwt"):
        expect(_get(project, "/machine", world.mint(token_format, by="stranger")), "invalid")


def test_forged_tokens_are_refused(project: Client, world: World) -> None:
    """A never-issued ``mt_`` token, a JWT signed by another key, ``alg: none``: all 401."""
    real = world.mint("jwt")
    _ok(_get(project, "/machine", real), world)  # the JWKS is loaded: only the forgery differs
    expect(_get(project, "/machine", random_opaque_token()), "invalid")
    for name, forge in FORGERIES.items():
        answer = _get(project, "/machine", forge(real))
        assert answer.status == 401, name
        expect(answer, "invalid")


def test_tokens_lacking_a_required_scope_get_403(project: Client, world: World) -> None:
    """A valid token without every scope the view requires: 403 ``insufficient_scope``."""
    for token in world.tokens().values():
        expect(_get(project, "/billing", token), "insufficient_scope", scope=UNISSUED_MACHINE_ID)


def test_stopped_server_answers_503_never_200(
    project: Client, world: World, live_server: Server
) -> None:
    """With the server gone, accepted and never-seen tokens alike get 503 + ``Retry-After``."""
    accepted = world.tokens()
    unseen = world.tokens()
    for token in accepted.values():
        _ok(_get(project, "/machine", token), world)
    live_server.stop()
    expect_unavailable_never_ok(
        poll(functools.partial(_get, project, "/machine", accepted["opaque"]), unavailable)
    )
    for token in [*accepted.values(), *unseen.values()]:
        expect(_get(project, "/machine", token), "unavailable")


@SQLITE_ONLY
@pytest.mark.usefixtures("project")
def test_decorator_works_without_the_middleware(world: World) -> None:
    """Without the middleware the decorator authenticates by itself; open views get no state."""
    with override_settings(MIDDLEWARE=[]):
        client = Client()
        _ok(_get(client, "/machine", world.mint("opaque")), world)
        _ok(_get(client, "/async-machine", world.mint("jwt")), world)
        expect(_get(client, "/machine", random_opaque_token()), "invalid")
        assert _get(client, "/whoami", world.mint("opaque")).json() == {"state": None}


def test_settings_are_checked_and_a_change_replaces_the_client(django_configured: None) -> None:
    """A misspelt key or a bad value in ``GATEPASS`` is refused; a new value, a new client."""
    del django_configured
    with (
        override_settings(GATEPASS={"AUDIANCE": UNISSUED_MACHINE_ID}),
        pytest.raises(ImproperlyConfigured, match="AUDIANCE"),
    ):
        get_client()
    with (
        override_settings(GATEPASS={"REALM": "api\r\nx"}),
        pytest.raises(ImproperlyConfigured, match="realm"),
    ):
        get_client()
    with (
        override_settings(GATEPASS={"MACHINE_SECRET_KEY": "sk_test_not_a_machine_key"}),
        pytest.raises(ImproperlyConfigured, match="machine_secret_key"),
    ):
        get_client()
    with override_settings(GATEPASS={"API_URL": "http://127.0.0.1:9"}):
        first = get_client()
        assert get_client() is first
        with override_settings(GATEPASS={"API_URL": "http://127.0.0.1:10"}):
            second = get_client()
            assert second is not first
            assert second.api_url == "http://127.0.0.1:10"
    reset_client()
