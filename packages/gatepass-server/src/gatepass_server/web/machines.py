"""Routes 1-9 of CONTRACT.md: machines, their secret keys and scopes (``sk_`` only).

Each handler runs the checks in the contract's order: authenticate → this key may use
this route → validate the input → call the service (which looks the object up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatepass_server.domain.machines import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_TOKEN_TTL,
    MAX_LIST_LIMIT,
    MAX_NAME_LENGTH,
    MAX_PREVIOUS_TOKEN_TTL,
    MAX_SCOPED_MACHINES,
    MAX_TOKEN_TTL,
    MIN_TOKEN_TTL,
    MachineListQuery,
    parse_order_by,
)
from gatepass_server.errors import FormParamError
from gatepass_server.web.auth import authenticate, require_instance
from gatepass_server.web.inputs import Form, query_integer, single_query_values
from gatepass_server.web.requests import read_form, runtime_of
from gatepass_server.web.responses import Handler, json_response
from gatepass_server.web.wire import (
    MachineDeletedBody,
    MachineListBody,
    MachineScopeDeletedBody,
    MachineSecretKeyBody,
    machine_body,
    machine_created_body,
    scope_body,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


__all__ = ["ROUTES"]

_FIELD_STATUS = 422  # NOTE: CONTRACT.md §5: field errors are 422 on /machines.


async def _instance_id(request: Request) -> str:
    runtime = runtime_of(request)
    return require_instance(await authenticate(request, runtime.authenticator))


async def list_machines(request: Request) -> Response:
    """``GET /v1/machines``."""
    instance_id = await _instance_id(request)
    params = single_query_values(
        _FIELD_STATUS, request.query_params, ("limit", "offset", "query", "order_by")
    )
    order_text = params.get("order_by") or "-created_at"
    order_by = parse_order_by(order_text)
    if order_by is None:
        raise FormParamError(
            "form_param_value_invalid",
            "order_by",
            "order_by must be name or created_at, optionally prefixed with + or -",
        )
    search = params.get("query") or None
    if search is not None:
        Form({}, allowed=()).check_text(
            "query", search, max_length=MAX_NAME_LENGTH, allow_blank=True
        )
    query = MachineListQuery(
        limit=query_integer(
            _FIELD_STATUS,
            params,
            "limit",
            default=DEFAULT_LIST_LIMIT,
            minimum=1,
            maximum=MAX_LIST_LIMIT,
        ),
        offset=query_integer(_FIELD_STATUS, params, "offset", default=0, minimum=0, maximum=2**62),
        query=search,
        order_by=order_by,
    )
    machines, total = await runtime_of(request).machines.list(instance_id, query)
    return json_response(MachineListBody([machine_body(m) for m in machines], total))


async def create_machine(request: Request) -> Response:
    """``POST /v1/machines``: 200 (not 201) with the only copy of ``secret_key``."""
    instance_id = await _instance_id(request)
    form = await read_form(
        request, {"name", "scoped_machines", "default_token_ttl"}, status=_FIELD_STATUS
    )
    name = form.string("name", required=True, max_length=MAX_NAME_LENGTH)
    scoped = form.string_list("scoped_machines", max_items=MAX_SCOPED_MACHINES) or []
    ttl = form.integer("default_token_ttl", minimum=MIN_TOKEN_TTL, maximum=MAX_TOKEN_TTL)
    created = await runtime_of(request).machines.create(
        instance_id,
        name=name or "",
        scoped_machine_ids=scoped,
        default_token_ttl=DEFAULT_TOKEN_TTL if ttl is None else ttl,
    )
    return json_response(machine_created_body(created.machine, created.secret_key))


async def get_machine(request: Request) -> Response:
    """``GET /v1/machines/{machine_id}``."""
    instance_id = await _instance_id(request)
    machine = await runtime_of(request).machines.get(instance_id, request.path_params["machine_id"])
    return json_response(machine_body(machine))


async def update_machine(request: Request) -> Response:
    """``PATCH /v1/machines/{machine_id}``: only the fields present change."""
    instance_id = await _instance_id(request)
    form = await read_form(request, {"name", "default_token_ttl"}, status=_FIELD_STATUS)
    name = form.string("name", max_length=MAX_NAME_LENGTH)
    ttl = form.integer("default_token_ttl", minimum=MIN_TOKEN_TTL, maximum=MAX_TOKEN_TTL)
    machine = await runtime_of(request).machines.update(
        instance_id,
        request.path_params["machine_id"],
        name=name,
        default_token_ttl=ttl,
    )
    return json_response(machine_body(machine))


async def delete_machine(request: Request) -> Response:
    """``DELETE /v1/machines/{machine_id}``."""
    instance_id = await _instance_id(request)
    machine_id = request.path_params["machine_id"]
    await runtime_of(request).machines.delete(instance_id, machine_id)
    return json_response(MachineDeletedBody(id=machine_id))


async def get_secret_key(request: Request) -> Response:
    """``GET /v1/machines/{machine_id}/secret_key``."""
    instance_id = await _instance_id(request)
    secret = await runtime_of(request).machines.secret_key(
        instance_id,
        request.path_params["machine_id"],
    )
    return json_response(MachineSecretKeyBody(secret=secret))


async def rotate_secret_key(request: Request) -> Response:
    """``POST /v1/machines/{machine_id}/secret_key/rotate``."""
    instance_id = await _instance_id(request)
    form = await read_form(request, {"previous_token_ttl"}, status=_FIELD_STATUS)
    grace = form.integer(
        "previous_token_ttl",
        required=True,
        minimum=0,
        maximum=MAX_PREVIOUS_TOKEN_TTL,
    )
    secret = await runtime_of(request).machines.rotate_secret_key(
        instance_id,
        request.path_params["machine_id"],
        previous_token_ttl=grace or 0,
    )
    return json_response(MachineSecretKeyBody(secret=secret))


async def create_scope(request: Request) -> Response:
    """``POST /v1/machines/{machine_id}/scopes``."""
    instance_id = await _instance_id(request)
    form = await read_form(request, {"to_machine_id"}, status=_FIELD_STATUS)
    to_id = form.string("to_machine_id", required=True, max_length=64)
    scope = await runtime_of(request).machines.add_scope(
        instance_id,
        request.path_params["machine_id"],
        to_id or "",
    )
    return json_response(scope_body(scope))


async def delete_scope(request: Request) -> Response:
    """``DELETE /v1/machines/{machine_id}/scopes/{other_machine_id}``."""
    instance_id = await _instance_id(request)
    from_id = request.path_params["machine_id"]
    to_id = request.path_params["other_machine_id"]
    await runtime_of(request).machines.remove_scope(instance_id, from_id, to_id)
    return json_response(MachineScopeDeletedBody(from_machine_id=from_id, to_machine_id=to_id))


ROUTES: dict[str, dict[str, Handler]] = {
    "/machines": {"GET": list_machines, "POST": create_machine},
    "/machines/{machine_id}": {
        "GET": get_machine,
        "PATCH": update_machine,
        "DELETE": delete_machine,
    },
    "/machines/{machine_id}/secret_key": {"GET": get_secret_key},
    "/machines/{machine_id}/secret_key/rotate": {"POST": rotate_secret_key},
    "/machines/{machine_id}/scopes": {"POST": create_scope},
    "/machines/{machine_id}/scopes/{other_machine_id}": {"DELETE": delete_scope},
}
