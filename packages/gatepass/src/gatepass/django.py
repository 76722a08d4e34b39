"""Django middleware and a view decorator that demand a valid M2M token.

::

    # settings.py (every key optional; keys and URL otherwise come from the environment)
    GATEPASS = {"MACHINE_SECRET_KEY": "ak_…", "API_URL": "https://gatepass.internal",
                "AUDIENCE": API_ID}
    MIDDLEWARE = [..., "gatepass.django.GatepassMiddleware"]

    @machine_required(scopes=[API_ID])
    def jobs(request):  # request.gatepass, or authenticate(request) for a typed read
        return JsonResponse({"caller": request.gatepass.subject})

The middleware only sets ``request.gatepass``; :func:`machine_required` refuses, with the
RFC 6750 challenge of :mod:`gatepass._challenge` (status, ``WWW-Authenticate`` or
``Retry-After``, JSON body), and works with or without the middleware. One process-wide
:class:`~gatepass.Gatepass` is built from the settings on first use; changing the
``GATEPASS`` setting (``override_settings`` in tests) or :func:`reset_client` replaces it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeAlias, overload

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from gatepass._challenge import Challenge, challenge_for, missing_scopes
from gatepass._client import Gatepass
from gatepass._exceptions import ConfigurationError
from gatepass._requests import AcceptsToken, accepted_types
from gatepass._state import AuthReason, RequestState, TokenType

__all__ = [
    "REQUEST_ATTRIBUTE",
    "SETTING",
    "AsyncView",
    "GatepassMiddleware",
    "Guard",
    "SyncView",
    "authenticate",
    "get_client",
    "machine_required",
    "reset_client",
]

SETTING: Final = "GATEPASS"
"""The name of the settings dict."""
REQUEST_ATTRIBUTE: Final = "gatepass"
"""The attribute of the request that holds its :class:`~gatepass.RequestState`."""

P = ParamSpec("P")
SyncView: TypeAlias = Callable[Concatenate[HttpRequest, P], HttpResponseBase]
"""A synchronous Django view function."""
AsyncView: TypeAlias = Callable[Concatenate[HttpRequest, P], Coroutine[Any, Any, HttpResponseBase]]
"""An asynchronous Django view function."""


class Guard(Protocol):
    """What ``machine_required(scopes=...)`` returns: a decorator for sync or async views."""

    @overload
    def __call__(self, view: AsyncView[P], /) -> AsyncView[P]: ...
    @overload
    def __call__(self, view: SyncView[P], /) -> SyncView[P]: ...


_KEYS: Final = frozenset(
    {"SECRET_KEY", "MACHINE_SECRET_KEY", "API_URL", "AUDIENCE", "ACCEPTS_TOKEN", "REALM"}
)
_PROBE: Final = RequestState.rejected(AuthReason.TOKEN_MISSING, "configuration check")


@dataclass(frozen=True, slots=True)
class _Integration:
    """The client and request settings built from ``settings.GATEPASS``."""

    client: Gatepass = field(repr=False)
    accepts_token: AcceptsToken
    audience: str | None
    realm: str | None

    @classmethod
    def from_settings(cls) -> _Integration:
        """Read and check ``settings.GATEPASS``; ``ImproperlyConfigured`` when it is wrong."""
        config: object = getattr(settings, SETTING, None) or {}
        if not isinstance(config, Mapping):
            raise ImproperlyConfigured(f"settings.{SETTING} must be a dict")
        # NOTE: a misspelt key (AUDIANCE) would silently drop a check; refuse it instead.
        if unknown := sorted(set(config) - _KEYS):
            raise ImproperlyConfigured(
                f"settings.{SETTING} has unknown keys {unknown}; known: {sorted(_KEYS)}"
            )
        accepts_token = config.get("ACCEPTS_TOKEN", TokenType.M2M_TOKEN)
        realm = config.get("REALM")
        try:
            accepted_types(accepts_token)
            challenge_for(_PROBE, realm=realm)
            client = Gatepass(
                secret_key=config.get("SECRET_KEY"),
                machine_secret_key=config.get("MACHINE_SECRET_KEY"),
                api_url=config.get("API_URL"),
            )
        except (TypeError, ValueError, ConfigurationError) as error:
            raise ImproperlyConfigured(f"settings.{SETTING}: {error}") from error
        return cls(client, accepts_token, config.get("AUDIENCE"), realm)


_lock = threading.Lock()
_integration: _Integration | None = None


def _current() -> _Integration:
    global _integration  # noqa: PLW0603 - the one process-wide client, built on first use
    integration = _integration
    if integration is None:
        with _lock:
            integration = _integration
            if integration is None:
                integration = _integration = _Integration.from_settings()
    return integration


def get_client() -> Gatepass:
    """The process-wide client, built from ``settings.GATEPASS`` on first use."""
    return _current().client


def reset_client() -> None:
    """Close the process-wide client; the next request builds one from the settings.

    For tests and settings changes: a request verifying with the old client meanwhile
    may fail.
    """
    global _integration
    with _lock:
        integration, _integration = _integration, None
    if integration is not None:
        integration.client.close()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    """Rebuild the client when ``GATEPASS`` changes (``override_settings``)."""
    del kwargs
    if setting == SETTING:
        reset_client()


setting_changed.connect(_on_setting_changed, dispatch_uid="gatepass.django.reset_client")


def authenticate(request: HttpRequest) -> RequestState:
    """The state of ``request``; set by the middleware, else computed and kept on it."""
    state = getattr(request, REQUEST_ATTRIBUTE, None)
    if isinstance(state, RequestState):
        return state
    integration = _current()
    state = integration.client.authenticate_request(
        request, accepts_token=integration.accepts_token, audience=integration.audience
    )
    setattr(request, REQUEST_ATTRIBUTE, state)
    return state


class GatepassMiddleware:
    """Set ``request.gatepass`` to the request's :class:`~gatepass.RequestState`.

    It refuses nothing: decorate views with :func:`machine_required`, or read the state.
    Authenticating a request without an ``Authorization`` header costs no network call,
    and a token is verified once for all the requests that carry it within the cache TTL.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        """Authenticate ``request``, then handle it."""
        authenticate(request)
        return self.get_response(request)


@overload
def machine_required(view: AsyncView[P], /) -> AsyncView[P]: ...
@overload
def machine_required(view: SyncView[P], /) -> SyncView[P]: ...
@overload
def machine_required(*, scopes: Sequence[str] = ()) -> Guard: ...


def machine_required(
    view: Callable[..., Any] | None = None, /, *, scopes: Sequence[str] = ()
) -> Any:
    """Run the view only for a valid M2M token holding every one of ``scopes``.

    Bare (``@machine_required``) or called (``@machine_required(scopes=[API_ID])``), on
    sync or async views. The view finds the state in ``request.gatepass``. A valid token
    lacking a scope gets 403 ``insufficient_scope``; any other refusal its own challenge.
    """
    required = tuple(scopes)
    challenge_for(_PROBE, required_scopes=required)  # a scope unfit for a header fails now

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        # NOTE: asgiref's test, as Django's own: it also sees markcoroutinefunction().
        if iscoroutinefunction(view):
            return _guard_async(view, required)
        return _guard_sync(view, required)

    return decorate if view is None else decorate(view)


def _guard_sync(view: SyncView[P], required: tuple[str, ...]) -> SyncView[P]:
    @functools.wraps(view)
    def guarded(request: HttpRequest, /, *args: P.args, **kwargs: P.kwargs) -> HttpResponseBase:
        refusal = _refusal(authenticate(request), required)
        if refusal is not None:
            return refusal
        return view(request, *args, **kwargs)

    return guarded


def _guard_async(view: AsyncView[P], required: tuple[str, ...]) -> AsyncView[P]:
    @functools.wraps(view)
    async def guarded(
        request: HttpRequest, /, *args: P.args, **kwargs: P.kwargs
    ) -> HttpResponseBase:
        # NOTE: the client is synchronous; a thread keeps the event loop free meanwhile.
        state = await sync_to_async(authenticate)(request)
        refusal = _refusal(state, required)
        if refusal is not None:
            return refusal
        return await view(request, *args, **kwargs)

    return guarded


def _refusal(state: RequestState, required: tuple[str, ...]) -> HttpResponse | None:
    """The response refusing ``state``, or ``None`` when the view may run."""
    if state.is_authenticated and not missing_scopes(state, required):
        return None
    return _response(challenge_for(state, realm=_current().realm, required_scopes=required))


def _response(challenge: Challenge) -> HttpResponse:
    """``challenge`` as a Django response, headers and body unchanged."""
    response = HttpResponse(challenge.body, status=challenge.status)
    for name, value in challenge.headers:
        response[name] = value
    return response
