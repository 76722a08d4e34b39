"""Routes 8-9: adding and removing machine scopes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from web_support import (
    PREFIXES,
    SQLITE_ONLY,
    UNKNOWN_MACHINE_ID,
    assert_api_headers,
    create_machine,
)

from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


async def _add_scope(
    client: httpx.AsyncClient, sk: str, from_id: str, body: Any, prefix: str = "/v1"
) -> httpx.Response:
    return await client.post(f"{prefix}/machines/{from_id}/scopes", json=body, headers=auth(sk))


async def _scoped_ids(client: httpx.AsyncClient, sk: str, machine_id: str) -> list[str]:
    response = await client.get(f"/v1/machines/{machine_id}", headers=auth(sk))
    return [m["id"] for m in response.json()["scoped_machines"]]


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_create_scope_returns_machine_scope(
    client: httpx.AsyncClient, sk: str, clock: FixedClock, prefix: str
) -> None:
    """Adding a scope is 200 MachineScope; the target appears in ``scoped_machines``."""
    caller = await create_machine(client, sk, name="caller")
    target = await create_machine(client, sk, name="target")
    clock.advance(2500)
    response = await _add_scope(client, sk, caller["id"], {"to_machine_id": target["id"]}, prefix)
    assert response.status_code == 200
    assert_api_headers(response)
    assert response.json() == {
        "object": "machine_scope",
        "from_machine_id": caller["id"],
        "to_machine_id": target["id"],
        "created_at": clock.now_ms(),
    }
    assert await _scoped_ids(client, sk, caller["id"]) == [target["id"]]
    assert await _scoped_ids(client, sk, target["id"]) == []


async def test_create_scope_twice_is_409(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """An existing scope is 409 ``conflict``."""
    target = await create_machine(client, sk)
    caller = await create_machine(client, sk, scoped_machines=[target["id"]])
    before = await storage_snapshot(runtime)
    response = await _add_scope(client, sk, caller["id"], {"to_machine_id": target["id"]})
    await assert_rejected(response, status=409, code="conflict", runtime=runtime, before=before)


@pytest.mark.parametrize("target", ["unknown", "malformed", "other_instance"])
async def test_create_scope_unknown_target_is_404(
    client: httpx.AsyncClient, sk: str, other_sk: str, runtime: Runtime, target: str
) -> None:
    """A target that is not a machine of this instance is 404."""
    caller = await create_machine(client, sk)
    theirs = await create_machine(client, other_sk)
    to_id = {"unknown": UNKNOWN_MACHINE_ID, "malformed": "mch_?", "other_instance": theirs["id"]}
    before = await storage_snapshot(runtime)
    response = await _add_scope(client, sk, caller["id"], {"to_machine_id": to_id[target]})
    await assert_rejected(
        response, status=404, code="resource_not_found", runtime=runtime, before=before
    )


async def test_create_scope_unknown_source_is_404(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Adding a scope from a machine that does not exist is 404."""
    target = await create_machine(client, sk)
    before = await storage_snapshot(runtime)
    response = await _add_scope(client, sk, UNKNOWN_MACHINE_ID, {"to_machine_id": target["id"]})
    await assert_rejected(
        response, status=404, code="resource_not_found", runtime=runtime, before=before
    )


async def test_create_scope_to_itself_is_422(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A machine cannot be scoped to itself: 422 ``form_param_value_invalid``."""
    machine = await create_machine(client, sk)
    before = await storage_snapshot(runtime)
    response = await _add_scope(client, sk, machine["id"], {"to_machine_id": machine["id"]})
    await assert_rejected(
        response,
        status=422,
        code="form_param_value_invalid",
        param_name="to_machine_id",
        runtime=runtime,
        before=before,
    )


async def test_create_scope_151st_is_422(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A machine already scoped to 150 machines cannot get a 151st."""
    instance_id = (await create_machine(client, sk))["instance_id"]
    targets = [
        (await runtime.machines.create(instance_id, name=f"t{i}")).machine.id for i in range(151)
    ]
    caller = await create_machine(client, sk, scoped_machines=targets[:149])
    added = await _add_scope(client, sk, caller["id"], {"to_machine_id": targets[149]})
    assert added.status_code == 200
    before = await storage_snapshot(runtime)
    response = await _add_scope(client, sk, caller["id"], {"to_machine_id": targets[150]})
    await assert_rejected(
        response,
        status=422,
        code="form_param_array_size_exceeded",
        runtime=runtime,
        before=before,
    )
    assert len(await _scoped_ids(client, sk, caller["id"])) == 150


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "form_param_missing", "to_machine_id"),
        ({"to_machine_id": None}, "form_param_missing", "to_machine_id"),
        ({"to_machine_id": 5}, "form_param_format_invalid", "to_machine_id"),
        ({"to_machine_id": [UNKNOWN_MACHINE_ID]}, "form_param_format_invalid", "to_machine_id"),
        ({"to_machine_id": ""}, "form_param_value_invalid", "to_machine_id"),
        ({"to_machine_id": "m" * 65}, "form_param_max_length_exceeded", "to_machine_id"),
        ({"to_machine_id": "mch_\x00"}, "form_param_value_invalid", "to_machine_id"),
        ({"from_machine_id": UNKNOWN_MACHINE_ID}, "form_param_unknown", "from_machine_id"),
    ],
)
async def test_create_scope_rejects_bad_body(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    body: dict[str, Any],
    code: str,
    param: str,
) -> None:
    """``to_machine_id`` is a required id string and the only field."""
    caller = await create_machine(client, sk)
    before = await storage_snapshot(runtime)
    response = await _add_scope(client, sk, caller["id"], body)
    await assert_rejected(
        response, status=422, code=code, param_name=param, runtime=runtime, before=before
    )


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_delete_scope_returns_deleted_scope(
    client: httpx.AsyncClient, sk: str, prefix: str
) -> None:
    """Removing a scope is 200 MachineScope with ``deleted: true`` instead of ``created_at``."""
    target = await create_machine(client, sk)
    caller = await create_machine(client, sk, scoped_machines=[target["id"]])
    response = await client.delete(
        f"{prefix}/machines/{caller['id']}/scopes/{target['id']}", headers=auth(sk)
    )
    assert response.status_code == 200
    assert_api_headers(response)
    assert response.json() == {
        "object": "machine_scope",
        "from_machine_id": caller["id"],
        "to_machine_id": target["id"],
        "deleted": True,
    }
    assert await _scoped_ids(client, sk, caller["id"]) == []
    again = await _add_scope(client, sk, caller["id"], {"to_machine_id": target["id"]})
    assert again.status_code == 200


@pytest.mark.parametrize("case", ["no_scope", "reverse_direction", "unknown_from", "unknown_to"])
async def test_delete_missing_scope_is_404(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, case: str
) -> None:
    """Removing a scope that does not exist (either machine unknown, or no such pair) is 404."""
    target = await create_machine(client, sk)
    caller = await create_machine(client, sk, scoped_machines=[target["id"]])
    loner = await create_machine(client, sk)
    from_id, to_id = {
        "no_scope": (caller["id"], loner["id"]),
        "reverse_direction": (target["id"], caller["id"]),
        "unknown_from": (UNKNOWN_MACHINE_ID, target["id"]),
        "unknown_to": (caller["id"], "nonsense"),
    }[case]
    before = await storage_snapshot(runtime)
    response = await client.delete(f"/v1/machines/{from_id}/scopes/{to_id}", headers=auth(sk))
    await assert_rejected(
        response, status=404, code="resource_not_found", runtime=runtime, before=before
    )
