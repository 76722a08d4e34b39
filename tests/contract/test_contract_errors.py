"""CONTRACT.md §5 as Clerk's Python SDK sees it: typed errors, trace ids, content type."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from clerk_backend_api import Clerk
from contract_support import (
    NO_RETRIES,
    UNKNOWN_MACHINE_ID,
    expect_clerk_error,
    sdk,
    wait_for_log,
)

from gatepass_server.domain.keys import SecretKind, generate_secret
from helpers import auth

if TYPE_CHECKING:
    from contract_support import Contract

Call = Callable[[Clerk, str], Any]

ON_UNKNOWN_MACHINE: dict[str, Call] = {
    "get": lambda c, m: c.machines.get(machine_id=m),
    "update": lambda c, m: c.machines.update(machine_id=m, name="x"),
    "delete": lambda c, m: c.machines.delete(machine_id=m),
    "get_secret_key": lambda c, m: c.machines.get_secret_key(machine_id=m),
    "rotate_secret_key": lambda c, m: c.machines.rotate_secret_key(
        machine_id=m, previous_token_ttl=0
    ),
    "create_scope": lambda c, m: c.machines.create_scope(
        machine_id=m, to_machine_id=UNKNOWN_MACHINE_ID
    ),
    "delete_scope": lambda c, m: c.machines.delete_scope(
        machine_id=m, other_machine_id=UNKNOWN_MACHINE_ID
    ),
}


@pytest.mark.parametrize("method", sorted(ON_UNKNOWN_MACHINE))
def test_unknown_machine_is_typed_404(clerk: Clerk, method: str) -> None:
    """Every per-machine method raises ClerkErrors 404 resource_not_found for an unknown id."""
    call = ON_UNKNOWN_MACHINE[method]
    expect_clerk_error(
        lambda: call(clerk, "mch_" + "Z" * 27), status=404, code="resource_not_found"
    )


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(generate_secret(SecretKind.INSTANCE_TEST), id="unknown-well-formed"),
        pytest.param("sk_test_not_a_real_key", id="malformed"),
        pytest.param(generate_secret(SecretKind.INSTANCE_LIVE), id="unknown-live"),
    ],
)
def test_bad_instance_key_is_typed_401(contract: Contract, key: str) -> None:
    """A key the server does not know is ClerkErrors 401 clerk_key_invalid."""
    with sdk(contract.server.url, key) as client:
        expect_clerk_error(client.machines.list, status=401, code="clerk_key_invalid")


def test_machine_key_on_admin_route_is_typed_403(
    clerk: Clerk, contract: Contract, tag: str
) -> None:
    """A working ak_ key on an sk-only route is ClerkErrors 403 authorization_invalid."""
    created = clerk.machines.create(request={"name": f"{tag} caller"})
    with sdk(contract.server.url, created.secret_key) as client:
        expect_clerk_error(
            lambda: client.machines.get(machine_id=created.id),
            status=403,
            code="authorization_invalid",
        )


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"name": "x" * 256}, "name", "form_param_max_length_exceeded"),
        ({"name": ""}, "name", "form_param_*"),
        ({"name": "ttl zero", "default_token_ttl": 0}, "default_token_ttl", "form_param_*"),
        (
            {"name": "ttl big", "default_token_ttl": 315_360_001},
            "default_token_ttl",
            "form_param_*",
        ),
        ({"name": "ttl negative", "default_token_ttl": -5}, "default_token_ttl", "form_param_*"),
        (
            {"name": "too many", "scoped_machines": [UNKNOWN_MACHINE_ID] * 151},
            "scoped_machines",
            "form_param_array_size_exceeded",
        ),
    ],
    ids=["name-too-long", "name-empty", "ttl-zero", "ttl-too-big", "ttl-negative", "151-scopes"],
)
def test_invalid_create_is_typed_422(
    clerk: Clerk, body: dict[str, Any], param: str, code: str
) -> None:
    """An invalid create body is ClerkErrors 422 naming the field in meta.param_name."""
    expect_clerk_error(
        lambda: clerk.machines.create(request=body), status=422, code=code, param_name=param
    )


def test_name_of_exactly_255_characters_is_accepted(clerk: Clerk, tag: str) -> None:
    """The name limit is inclusive: 255 characters create a machine."""
    name = (tag + "x" * 255)[:255]
    assert clerk.machines.create(request={"name": name}).name == name


def test_rotate_grace_beyond_eight_hours_is_typed_422(clerk: Clerk, tag: str) -> None:
    """previous_token_ttl above 28800 is ClerkErrors 422 on previous_token_ttl."""
    created = clerk.machines.create(request={"name": f"{tag} rotating"})
    expect_clerk_error(
        lambda: clerk.machines.rotate_secret_key(machine_id=created.id, previous_token_ttl=28_801),
        status=422,
        code="form_param_value_invalid",
        param_name="previous_token_ttl",
    )


def test_unknown_order_by_is_typed_422(clerk: Clerk) -> None:
    """An order_by outside name/created_at is ClerkErrors 422 on order_by."""
    expect_clerk_error(
        lambda: clerk.machines.list(order_by="secret_key"),
        status=422,
        code="form_param_value_invalid",
        param_name="order_by",
    )


@pytest.mark.parametrize("limit", [0, 501])
def test_list_limit_out_of_range_is_typed_422(clerk: Clerk, limit: int) -> None:
    """A limit outside 1..500 is ClerkErrors 422 naming limit."""
    expect_clerk_error(
        lambda: clerk.machines.list(limit=limit),
        status=422,
        code="form_param_*",
        param_name="limit",
    )


def test_error_trace_id_appears_in_the_server_log(clerk: Clerk, contract: Contract) -> None:
    """The clerk_trace_id of an error body is the request id in that request's log line."""
    error = expect_clerk_error(
        lambda: clerk.machines.get(machine_id=UNKNOWN_MACHINE_ID),
        status=404,
        code="resource_not_found",
    )
    trace_id = error.raw_response.json()["clerk_trace_id"]
    assert len(trace_id) == 32
    assert error.raw_response.headers["x-request-id"] == trace_id
    log = wait_for_log(contract.server, trace_id)
    lines = [line for line in log.splitlines() if trace_id in line]
    assert lines, f"{trace_id} not in the server log"
    assert any(json.loads(line).get("status") == 404 for line in lines), lines


def test_content_type_is_exactly_application_json(contract: Contract, tag: str) -> None:
    """Success and error responses say application/json with no charset (the JS SDK compares)."""
    with httpx.Client(base_url=contract.server.url, headers=auth(contract.sk)) as http:
        responses = [
            http.post("/v1/machines", json={"name": f"{tag} raw"}),
            http.get("/v1/machines", params={"query": tag}),
            http.get("/machines", params={"query": tag}),
            http.get(f"/v1/machines/{UNKNOWN_MACHINE_ID}"),
            http.get("/v1/machines", headers=auth("sk_test_nope")),
            http.post("/v1/machines", json={"name": ""}),
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 401, 422]
    for response in responses:
        assert response.headers["content-type"] == "application/json", response.headers


def test_sdk_sends_its_api_version_header_and_is_accepted(contract: Contract, tag: str) -> None:
    """The SDK's own headers (Clerk-API-Version, user agent) are accepted as sent."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> None:
        seen.append(request)

    http = httpx.Client(follow_redirects=True, event_hooks={"request": [record]})
    with Clerk(
        bearer_auth=contract.sk,
        server_url=contract.api_url,
        retry_config=NO_RETRIES,
        client=http,
    ) as client:
        created = client.machines.create(request={"name": f"{tag} headers"})
    http.close()
    assert created.name == f"{tag} headers"
    (request,) = seen
    assert request.headers["clerk-api-version"] == "2025-11-10"
    assert request.headers["authorization"] == f"Bearer {contract.sk}"
    assert request.url.path == "/v1/machines"
