"""Pure ASGI middleware that lets through only requests carrying a valid M2M token.

It works under any ASGI framework (Starlette, FastAPI, Litestar, Quart…) and imports
none of them::

    from starlette.applications import Starlette
    from gatepass import AsyncGatepass
    from gatepass.asgi import GatepassMiddleware, state_of

    gatepass = AsyncGatepass()  # GATEPASS_MACHINE_SECRET_KEY, GATEPASS_API_URL from the env
    app = GatepassMiddleware(Starlette(routes=...), gatepass=gatepass, audience=API_ID)
    # in a view: state_of(request).subject == "mch_…" (or request.state.gatepass)
    # on shutdown: await gatepass.aclose()

Each ``http`` and ``websocket`` scope is authenticated; its
:class:`~gatepass.RequestState` is stored in ``scope["state"]["gatepass"]``, where
Starlette's ``request.state.gatepass`` finds it. A refused HTTP request gets the RFC 6750
challenge of :mod:`gatepass._challenge` and never reaches the app; a refused WebSocket is
closed before it is accepted. ``lifespan`` and other scopes pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from typing import Any, Final, TypeAlias

from gatepass._challenge import Challenge, challenge_for, missing_scopes
from gatepass._client import AsyncGatepass
from gatepass._requests import AcceptsToken, accepted_types
from gatepass._state import AuthReason, RequestState, TokenType

__all__ = [
    "STATE_KEY",
    "ASGIApp",
    "GatepassMiddleware",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "state_of",
]

Scope: TypeAlias = MutableMapping[str, Any]
"""An ASGI connection scope (the same shape as ``starlette.types.Scope``)."""
Message: TypeAlias = MutableMapping[str, Any]
"""An ASGI event."""
Receive: TypeAlias = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""
Send: TypeAlias = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

STATE_KEY: Final = "gatepass"
"""The key of the :class:`~gatepass.RequestState` in ``scope["state"]``."""

_AUTHENTICATED: Final = frozenset({"http", "websocket"})
_DENIAL_EXTENSION: Final = "websocket.http.response"
# NOTE: RFC 6455 §7.4.1: 1008 is "policy violation", the close code for a refused
# credential; IANA's 1013 "try again later" keeps a verifier outage apart from it, as 503
# does for HTTP, so a client retries instead of discarding its token.
_WS_REFUSED: Final = 1008
_WS_UNAVAILABLE: Final = 1013
_PROBE: Final = RequestState.rejected(AuthReason.TOKEN_MISSING, "configuration check")


class GatepassMiddleware:
    """Authenticate every HTTP and WebSocket request with ``gatepass`` before ``app`` runs.

    ``accepts_token`` and ``audience`` are passed to
    :meth:`~gatepass.AsyncGatepass.authenticate_request`; ``audience`` is the receiving
    machine's id, which makes a token minted by a machine not scoped to it fail even when
    it is a JWT verified locally. ``required_scopes`` (machine ids) must all be in the
    token, else 403 ``insufficient_scope``. Requests whose ``scope["path"]`` is exactly one
    of ``exclude_paths`` (health checks…) pass through without authentication, and without
    a state. ``realm`` goes into ``WWW-Authenticate``. With ``optional`` nothing is refused:
    the app gets every request and decides from the state.

    ``ValueError`` or ``TypeError`` at construction for a setting no request could satisfy
    (an unknown token type, a scope or realm that cannot be written into a header).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        gatepass: AsyncGatepass,
        accepts_token: AcceptsToken = TokenType.M2M_TOKEN,
        audience: str | None = None,
        required_scopes: Sequence[str] = (),
        exclude_paths: Collection[str] = (),
        realm: str | None = None,
        optional: bool = False,
    ) -> None:
        if not isinstance(gatepass, AsyncGatepass):
            raise TypeError("GatepassMiddleware needs an AsyncGatepass client")
        accepted_types(accepts_token)
        # NOTE: a realm or scope that cannot be written into WWW-Authenticate would only
        # fail on the first refused request, as a 500; building one challenge now fails
        # at startup instead.
        challenge_for(_PROBE, realm=realm, required_scopes=required_scopes)
        self.app = app
        self.gatepass = gatepass
        self.accepts_token = accepts_token
        self.audience = audience
        self.required_scopes = tuple(required_scopes)
        self.exclude_paths = frozenset(exclude_paths)
        self.realm = realm
        self.optional = optional

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` for an authenticated request; answer a refused one with its challenge."""
        if scope["type"] not in _AUTHENTICATED or scope.get("path") in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        state = await self.gatepass.authenticate_request(
            scope, accepts_token=self.accepts_token, audience=self.audience
        )
        # NOTE: Starlette and uvicorn share one state dict between lifespan and requests;
        # replacing it would hide what the lifespan put there.
        scope.setdefault("state", {})[STATE_KEY] = state
        if self.optional or (
            state.is_authenticated
            and (not self.required_scopes or not missing_scopes(state, self.required_scopes))
        ):
            await self.app(scope, receive, send)
            return
        challenge = challenge_for(state, realm=self.realm, required_scopes=self.required_scopes)
        if scope["type"] == "http":
            await _send_http(challenge, send, "http.response")
        else:
            await _refuse_websocket(scope, challenge, receive, send)


def state_of(scope_or_request: object) -> RequestState | None:
    """The state :class:`GatepassMiddleware` stored for a scope or a request, if any.

    Takes an ASGI scope or anything with a ``.scope`` (a Starlette or FastAPI request or
    WebSocket). ``None`` when the middleware did not authenticate it (not installed, an
    excluded path).
    """
    scope = scope_or_request
    if not isinstance(scope, Mapping):
        scope = getattr(scope_or_request, "scope", None)
    if not isinstance(scope, Mapping):
        raise TypeError("state_of takes an ASGI scope or an object with a .scope")
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    return found if isinstance(found, RequestState) else None


async def _send_http(challenge: Challenge, send: Send, prefix: str) -> None:
    """Send ``challenge`` as an HTTP response (``prefix`` names the ASGI event family)."""
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in challenge.headers
    ]
    headers.append((b"content-length", str(len(challenge.body)).encode("ascii")))
    await send({"type": f"{prefix}.start", "status": challenge.status, "headers": headers})
    await send({"type": f"{prefix}.body", "body": challenge.body})


async def _refuse_websocket(
    scope: Scope, challenge: Challenge, receive: Receive, send: Send
) -> None:
    """Refuse a WebSocket before accepting it: with the HTTP challenge if the server can."""
    # NOTE: ASGI WebSocket spec: the connection opens with websocket.connect, answered by
    # accept or close; a client that already left needs no answer.
    if (await receive())["type"] != "websocket.connect":
        return
    extensions = scope.get("extensions") or {}
    if _DENIAL_EXTENSION in extensions:
        # NOTE: the ASGI "WebSocket Denial Response" extension lets the handshake fail
        # with the real 401/403/503 and its WWW-Authenticate, as RFC 6750 expects.
        await _send_http(challenge, send, "websocket.http.response")
        return
    code = _WS_UNAVAILABLE if challenge.status == 503 else _WS_REFUSED  # noqa: PLR2004 - HTTP 503
    await send({"type": "websocket.close", "code": code})
