"""A Flask extension whose decorator lets through only requests with a valid M2M token.

::

    from flask import Flask
    from gatepass.flask import GatepassFlask

    app = Flask(__name__)  # GATEPASS_MACHINE_SECRET_KEY, GATEPASS_API_URL in app.config or env
    auth = GatepassFlask(app, audience=API_ID)

    @app.get("/jobs")
    @auth.required(scopes=[API_ID])
    def jobs() -> dict[str, str | None]:
        return {"caller": auth.authenticate().subject}  # the state, computed once per request

A refused request gets the RFC 6750 challenge of :mod:`gatepass._challenge` as its
response (status, ``WWW-Authenticate`` or ``Retry-After``, JSON body); the view never runs.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, ParamSpec, Protocol, TypeAlias, overload

from flask import Flask, Response, current_app, g
from flask import request as flask_request
from flask.typing import ResponseReturnValue

from gatepass._challenge import Challenge, challenge_for, missing_scopes
from gatepass._client import Gatepass
from gatepass._requests import AcceptsToken, accepted_types
from gatepass._state import AuthReason, RequestState, TokenType

__all__ = ["EXTENSION_KEY", "GatepassFlask", "Guard", "View", "current_state"]

EXTENSION_KEY: Final = "gatepass"
"""Where :meth:`GatepassFlask.init_app` puts the app's :class:`~gatepass.Gatepass` client."""

P = ParamSpec("P")
View: TypeAlias = Callable[P, ResponseReturnValue | Awaitable[ResponseReturnValue]]
"""A Flask view function, sync or async."""


class Guard(Protocol):
    """What ``required(scopes=...)`` returns: a decorator keeping the view's parameters."""

    def __call__(self, view: View[P], /) -> Callable[P, ResponseReturnValue]:
        """``view``, guarded."""
        ...


_PROBE: Final = RequestState.rejected(AuthReason.TOKEN_MISSING, "configuration check")


class GatepassFlask:
    """Gatepass for one or more Flask apps (``init_app`` for the app-factory pattern).

    ``gatepass`` is the client verifying tokens; when it is ``None``, :meth:`init_app`
    builds one per app from ``app.config`` (``GATEPASS_SECRET_KEY``,
    ``GATEPASS_MACHINE_SECRET_KEY``, ``GATEPASS_API_URL``), falling back to the
    environment as :class:`~gatepass.Gatepass` does. ``accepts_token`` and ``audience`` go
    to :meth:`~gatepass.Gatepass.authenticate_request`; ``audience`` is this service's
    machine id, so a token of a machine not scoped to it is refused even when it is a JWT.
    ``realm`` goes into ``WWW-Authenticate``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        gatepass: Gatepass | None = None,
        accepts_token: AcceptsToken = TokenType.M2M_TOKEN,
        audience: str | None = None,
        realm: str | None = None,
    ) -> None:
        if gatepass is not None and not isinstance(gatepass, Gatepass):
            raise TypeError("GatepassFlask needs a (synchronous) Gatepass client")
        accepted_types(accepts_token)
        challenge_for(_PROBE, realm=realm)  # a realm unfit for a header fails now, not later
        self.gatepass = gatepass
        self.accepts_token = accepts_token
        self.audience = audience
        self.realm = realm
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Give ``app`` its client, in ``app.extensions["gatepass"]``.

        A client built here lives as long as the process (its revocation-feed thread is a
        daemon); call its ``close()`` to stop it earlier.
        """
        client = self.gatepass
        if client is None:
            client = Gatepass(
                secret_key=app.config.get("GATEPASS_SECRET_KEY"),
                machine_secret_key=app.config.get("GATEPASS_MACHINE_SECRET_KEY"),
                api_url=app.config.get("GATEPASS_API_URL"),
            )
        app.extensions[EXTENSION_KEY] = client

    @property
    def client(self) -> Gatepass:
        """The client of the current app (needs an app context)."""
        client = current_app.extensions.get(EXTENSION_KEY)
        if isinstance(client, Gatepass):
            return client
        raise RuntimeError("GatepassFlask.init_app was not called for this app")

    def authenticate(self) -> RequestState:
        """The state of the current request, also kept in ``flask.g.gatepass``.

        Never refuses: for views that decide themselves. Computed once per request.
        """
        state = current_state()
        if state is None:
            state = self.client.authenticate_request(
                flask_request, accepts_token=self.accepts_token, audience=self.audience
            )
            g.gatepass = state
        return state

    @overload
    def required(self, view: View[P], /) -> Callable[P, ResponseReturnValue]: ...
    @overload
    def required(self, /, *, scopes: Sequence[str] = ()) -> Guard: ...

    def required(
        self, view: View[...] | None = None, /, *, scopes: Sequence[str] = ()
    ) -> Callable[..., ResponseReturnValue] | Guard:
        """Run the view only for a valid token holding every one of ``scopes``.

        Bare (``@ext.required``) or called (``@ext.required(scopes=[API_ID])``); place it
        below ``@app.route``. A valid token lacking a scope gets 403 ``insufficient_scope``.
        """
        required = tuple(scopes)
        challenge_for(_PROBE, realm=self.realm, required_scopes=required)

        def decorate(view: View[P]) -> Callable[P, ResponseReturnValue]:
            @functools.wraps(view)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
                state = self.authenticate()
                if not state.is_authenticated or missing_scopes(state, required):
                    challenge = challenge_for(state, realm=self.realm, required_scopes=required)
                    return _response(challenge)
                result: ResponseReturnValue = current_app.ensure_sync(view)(*args, **kwargs)
                return result

            return guarded

        return decorate if view is None else decorate(view)


def current_state() -> RequestState | None:
    """The state of the current request, once a Gatepass decorator or ``authenticate`` ran."""
    state: Any = g.get("gatepass")
    return state if isinstance(state, RequestState) else None


def _response(challenge: Challenge) -> Response:
    """``challenge`` as a Flask response, headers and body unchanged."""
    return Response(challenge.body, status=challenge.status, headers=list(challenge.headers))
