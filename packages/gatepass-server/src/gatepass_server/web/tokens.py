"""Routes 10-13 of CONTRACT.md, ``GET /m2m_tokens/{id}`` and the revocation feed (§7).

Field errors here are 400, not 422 (CONTRACT.md §5: each SDK types those).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatepass_server.domain.keys import is_token_id
from gatepass_server.domain.machines import MAX_TOKEN_TTL
from gatepass_server.domain.tokens import (
    DEFAULT_TOKEN_LIST_LIMIT,
    MAX_REVOCATION_REASON_LENGTH,
    MAX_TOKEN_LENGTH,
    MAX_TOKEN_LIST_LIMIT,
    TokenFormat,
    claims_problem,
)
from gatepass_server.errors import (
    AuthenticationError,
    FormParamError,
    MachineKeyInvalid,
    NotFound,
    TokenInvalid,
)
from gatepass_server.services.auth import InstancePrincipal, MachinePrincipal, Principal
from gatepass_server.services.interfaces import TokenListQuery
from gatepass_server.services.revocations import (
    DEFAULT_FEED_LIMIT,
    MAX_FEED_LIMIT,
    MAX_WAIT_SECONDS,
)
from gatepass_server.web.auth import authenticate, source_of
from gatepass_server.web.inputs import (
    query_boolean,
    query_integer,
    require_query,
    single_query_values,
)
from gatepass_server.web.requests import read_form, runtime_of
from gatepass_server.web.responses import Handler, json_response
from gatepass_server.web.wire import (
    M2MTokenListBody,
    revocations_body,
    token_body,
    token_created_body,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


__all__ = ["ROUTES"]

_FIELD_STATUS = 400  # NOTE: CONTRACT.md §5: field errors are 400 on /m2m_tokens.


async def _caller(request: Request) -> Principal:
    return await authenticate(request, runtime_of(request).authenticator)


def _token_id(request: Request) -> str:
    token_id: str = request.path_params["token_id"]
    if not is_token_id(token_id):
        raise NotFound("Token not found")
    return token_id


async def create_token(request: Request) -> Response:
    """``POST /v1/m2m_tokens``: 201, minted by the calling machine's own key."""
    runtime = runtime_of(request)
    try:
        caller = await _caller(request)
    except AuthenticationError:
        # NOTE: CONTRACT.md §4: no key, a bad key or an sk_ key here is all one answer.
        raise MachineKeyInvalid from None
    if not isinstance(caller, MachinePrincipal):
        raise MachineKeyInvalid
    form = await read_form(
        request,
        {"token_format", "seconds_until_expiration", "claims", "min_remaining_ttl_seconds"},
        status=_FIELD_STATUS,
    )
    token_format = form.choice("token_format", [f.value for f in TokenFormat])
    seconds = form.number("seconds_until_expiration", maximum=MAX_TOKEN_TTL)
    claims = form.json_object("claims")
    if claims is not None and (problem := claims_problem(claims)) is not None:
        code, message = problem
        raise FormParamError(code, "claims", message, status=_FIELD_STATUS)
    min_remaining = form.integer("min_remaining_ttl_seconds", minimum=0, maximum=MAX_TOKEN_TTL)
    created = await runtime.tokens.create(
        caller,
        token_format=TokenFormat(token_format or TokenFormat.OPAQUE.value),
        seconds_until_expiration=seconds,
        claims=claims,
        min_remaining_ttl_seconds=min_remaining,
    )
    body = token_created_body(created.token, created.secret, runtime.clock.now_ms())
    return json_response(body, status=201)


async def list_tokens(request: Request) -> Response:
    """``GET /v1/m2m_tokens?subject=…``: newest first."""
    runtime = runtime_of(request)
    caller = await _caller(request)
    params = single_query_values(
        _FIELD_STATUS,
        request.query_params,
        ("subject", "revoked", "expired", "limit", "offset"),
    )
    subject = require_query(params, "subject")
    query = TokenListQuery(
        subject=subject,
        include_revoked=query_boolean(_FIELD_STATUS, params, "revoked"),
        include_expired=query_boolean(_FIELD_STATUS, params, "expired"),
        limit=query_integer(
            _FIELD_STATUS,
            params,
            "limit",
            default=DEFAULT_TOKEN_LIST_LIMIT,
            minimum=1,
            maximum=MAX_TOKEN_LIST_LIMIT,
        ),
        offset=query_integer(_FIELD_STATUS, params, "offset", default=0, minimum=0, maximum=2**62),
    )
    tokens, total = await runtime.tokens.list(caller, query)
    now = runtime.clock.now_ms()
    return json_response(M2MTokenListBody([token_body(t, now) for t in tokens], total))


async def get_token(request: Request) -> Response:
    """``GET /v1/m2m_tokens/{token_id}`` (Gatepass extension)."""
    runtime = runtime_of(request)
    caller = await _caller(request)
    token = await runtime.tokens.get(caller, _token_id(request))
    return json_response(token_body(token, runtime.clock.now_ms()))


async def revoke_token(request: Request) -> Response:
    """``POST /v1/m2m_tokens/{token_id}/revoke``."""
    runtime = runtime_of(request)
    caller = await _caller(request)
    form = await read_form(request, {"revocation_reason"}, status=_FIELD_STATUS)
    reason = form.string(
        "revocation_reason",
        max_length=MAX_REVOCATION_REASON_LENGTH,
        allow_blank=True,
    )
    token = await runtime.tokens.revoke(caller, _token_id(request), reason)
    return json_response(token_body(token, runtime.clock.now_ms()))


def _caller_id(caller: Principal) -> str:
    """The verify-miss bucket of a caller: its machine (or instance), whichever key it used.

    NOTE: per principal rather than per key digest, so that rotating a key does not hand
    the caller a fresh budget.
    """
    if isinstance(caller, InstancePrincipal):
        return caller.instance_id
    return caller.machine_id


async def verify_token(request: Request) -> Response:
    """``POST /v1/m2m_tokens/verify``: the token's record, or the one 404 for every "no".

    Every 404 counts as a verify miss of the source and of the caller; a source or caller
    over the limit gets 429 before the body is read or any token looked up.
    """
    runtime = runtime_of(request)
    caller = await _caller(request)
    limiter = runtime.verify_misses
    if limiter.blocked:
        limiter.check(source_of(request), _caller_id(caller))
    try:
        token = await runtime.tokens.verify(caller, await _presented_token(request))
    except TokenInvalid:
        await limiter.failed(source_of(request), _caller_id(caller))
        raise
    return json_response(token_body(token, runtime.clock.now_ms()))


async def _presented_token(request: Request) -> str:
    """The token of a verify body; a string no token can look like is a TokenInvalid."""
    # NOTE: the Python SDK's request-auth helper still sends the legacy {"secret": …}.
    form = await read_form(request, {"token", "secret"}, status=_FIELD_STATUS)
    # NOTE: both fields are type-checked, so a mistyped "secret" beside a "token" is a 400
    # like any other mistyped field, not silently ignored.
    token, legacy = form.raw_string("token"), form.raw_string("secret")
    presented = token if token is not None else legacy
    if presented is None:
        raise FormParamError(
            "form_param_missing", "token", "token is required", status=_FIELD_STATUS
        )
    # NOTE: a string no token can look like (too long, non-ASCII, NUL, control characters)
    # is just another invalid token: the same 404 as every other "no" (CONTRACT.md §4),
    # never a 400 that tells a malformed string from a well-formed unknown one.
    if len(presented) > MAX_TOKEN_LENGTH or not (presented.isascii() and presented.isprintable()):
        raise TokenInvalid
    return presented


async def revocations(request: Request) -> Response:
    """``GET /v1/m2m_tokens/revocations?after=…&wait=…`` (Gatepass extension, §7)."""
    runtime = runtime_of(request)
    caller = await _caller(request)
    params = single_query_values(_FIELD_STATUS, request.query_params, ("after", "limit", "wait"))
    page = await runtime.revocations.page(
        caller,
        after=query_integer(_FIELD_STATUS, params, "after", default=0, minimum=0, maximum=2**62),
        limit=query_integer(
            _FIELD_STATUS,
            params,
            "limit",
            default=DEFAULT_FEED_LIMIT,
            minimum=1,
            maximum=MAX_FEED_LIMIT,
        ),
        wait_seconds=query_integer(
            _FIELD_STATUS, params, "wait", default=0, minimum=0, maximum=MAX_WAIT_SECONDS
        ),
    )
    return json_response(revocations_body(page))


ROUTES: dict[str, dict[str, Handler]] = {
    "/m2m_tokens": {"GET": list_tokens, "POST": create_token},
    "/m2m_tokens/verify": {"POST": verify_token},
    # NOTE: before /m2m_tokens/{token_id}, which would otherwise take "revocations" as an id.
    "/m2m_tokens/revocations": {"GET": revocations},
    "/m2m_tokens/{token_id}": {"GET": get_token},
    "/m2m_tokens/{token_id}/revoke": {"POST": revoke_token},
}
