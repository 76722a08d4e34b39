"""FastAPI dependencies that demand a valid M2M token, documented as HTTP bearer auth.

::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from gatepass import AsyncGatepass, RequestState
    from gatepass.fastapi import GatepassAuth

    auth = GatepassAuth(AsyncGatepass(), audience=API_ID)
    Machine = Annotated[RequestState, Depends(auth)]

    @app.get("/jobs")
    async def jobs(machine: Machine) -> dict[str, str]: ...

    @app.post("/refunds", dependencies=[Depends(auth.requires(BILLING_ID))])
    async def refund() -> None: ...

A refused request raises ``fastapi.HTTPException`` carrying the status and headers
(``WWW-Authenticate``, ``Retry-After``…) of the RFC 6750 challenge from
:mod:`gatepass._challenge`; its ``detail`` is the challenge's JSON body. The operations
list an HTTP bearer security scheme named ``Gatepass`` in the OpenAPI document.
"""

# NOTE: no `from __future__ import annotations` here: FastAPI reads the annotations of
# dependencies at runtime, and the one in GatepassAuth.requires refers to a local.
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gatepass._challenge import Challenge, challenge_for, insufficient_scope, missing_scopes
from gatepass._client import AsyncGatepass
from gatepass._requests import AcceptsToken, accepted_types
from gatepass._state import AuthReason, RequestState, TokenType
from gatepass.asgi import state_of

__all__ = ["GatepassAuth", "bearer_scheme"]

bearer_scheme: Final = HTTPBearer(
    auto_error=False,
    scheme_name="Gatepass",
    description="A Gatepass M2M token: an opaque mt_… token or a JWT.",
)
"""The OpenAPI security scheme; it only documents, it never refuses a request."""

_PROBE: Final = RequestState.rejected(AuthReason.TOKEN_MISSING, "configuration check")
# Everything but Content-Type: HTTPException's handler writes its own JSON body.
_PASSED_HEADERS: Final = frozenset({"www-authenticate", "retry-after", "cache-control"})


class GatepassAuth:
    """A FastAPI dependency: the caller's :class:`~gatepass.RequestState`, or a refusal.

    ``accepts_token`` and ``audience`` are passed to
    :meth:`~gatepass.AsyncGatepass.authenticate_request`; ``audience`` is this service's
    machine id, so a token of a machine not scoped to it is refused even when it is a JWT.
    ``realm`` goes into ``WWW-Authenticate``. When :class:`gatepass.asgi.GatepassMiddleware`
    already authenticated the request, its state is reused if it satisfies these settings.
    """

    def __init__(
        self,
        gatepass: AsyncGatepass,
        *,
        accepts_token: AcceptsToken = TokenType.M2M_TOKEN,
        audience: str | None = None,
        realm: str | None = None,
    ) -> None:
        if not isinstance(gatepass, AsyncGatepass):
            raise TypeError("GatepassAuth needs an AsyncGatepass client")
        self._accepted = accepted_types(accepts_token)
        challenge_for(_PROBE, realm=realm)  # a realm unfit for a header fails now, not later
        self.gatepass = gatepass
        self.accepts_token = accepts_token
        self.audience = audience
        self.realm = realm

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    ) -> RequestState:
        """The state of an authenticated request; ``HTTPException`` for any other."""
        # NOTE: the header is read again by authenticate_request, which also refuses
        # duplicated and malformed headers that HTTPBearer would pass or drop.
        del credentials
        state = self._reusable(state_of(request))
        if state is None:
            state = await self.gatepass.authenticate_request(
                request, accepts_token=self.accepts_token, audience=self.audience
            )
        if not state.is_authenticated:
            raise _refusal(challenge_for(state, realm=self.realm))
        return state

    def requires(self, *machine_ids: str) -> Callable[..., Awaitable[RequestState]]:
        """A dependency like this one that also demands every scope in ``machine_ids``.

        A valid token lacking one of them gets 403 ``insufficient_scope``. Within one
        request FastAPI runs this object once, however many dependencies use it.
        """
        challenge_for(_PROBE, realm=self.realm, required_scopes=machine_ids)

        async def scoped(state: Annotated[RequestState, Depends(self)]) -> RequestState:
            if missing_scopes(state, machine_ids):
                raise _refusal(insufficient_scope(state, machine_ids, realm=self.realm))
            return state

        scoped.__doc__ = f"An M2M token scoped to {', '.join(machine_ids) or 'any machine'}."
        return scoped

    def _reusable(self, state: RequestState | None) -> RequestState | None:
        """The middleware's state if it is a success this dependency would also grant."""
        if state is None or not state.is_authenticated:
            return None
        if state.token_type not in self._accepted:
            return None
        if self.audience is not None and self.audience not in state.scopes:
            return None
        return state


def _refusal(challenge: Challenge) -> HTTPException:
    """The ``HTTPException`` that answers with ``challenge``'s status, headers and body."""
    detail: Any = json.loads(challenge.body)
    headers = {name: value for name, value in challenge.headers if name.lower() in _PASSED_HEADERS}
    return HTTPException(status_code=challenge.status, detail=detail, headers=headers)
