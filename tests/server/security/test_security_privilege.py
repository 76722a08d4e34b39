"""Attack class: key type and privilege.

A machine's ``ak_`` key may not administer anything, not even itself: every attempt is 403
and nothing changes (CONTRACT.md §5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from security_support import UNKNOWN_MACHINE_ID, create_machine, refused, without_trace_id

from helpers import auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.runtime import Runtime


@pytest.fixture
async def machines(client: httpx.AsyncClient, sk: str) -> dict[str, dict[str, Any]]:
    """An attacker machine, a victim it is scoped to, and a bystander."""
    victim = await create_machine(client, sk, name="victim")
    attacker = await create_machine(client, sk, name="attacker", scoped_machines=[victim["id"]])
    bystander = await create_machine(client, sk, name="bystander")
    return {"attacker": attacker, "victim": victim, "bystander": bystander}


async def _forbidden(
    client: httpx.AsyncClient,
    runtime: Runtime,
    key: str,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    response, error = await refused(
        client,
        runtime,
        method,
        url,
        json=body,
        headers=auth(key),
        status=403,
        code="authorization_invalid",
        not_echoed=[key],
    )
    assert error["meta"] == {}
    return response


async def test_machine_key_cannot_list_machines(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """An ``ak_`` key cannot enumerate the instance's machines."""
    await _forbidden(client, runtime, machines["attacker"]["secret_key"], "GET", "/v1/machines")


async def test_machine_key_cannot_create_machines(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """An ``ak_`` key cannot mint a new machine (and with it a new key)."""
    await _forbidden(
        client,
        runtime,
        machines["attacker"]["secret_key"],
        "POST",
        "/machines",
        {"name": "evil", "scoped_machines": [machines["bystander"]["id"]]},
    )


async def test_machine_key_cannot_read_any_secret_key(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """An ``ak_`` key cannot read its own key, its target's, or anyone else's."""
    key = machines["attacker"]["secret_key"]
    for name in ("attacker", "victim", "bystander"):
        response = await _forbidden(
            client, runtime, key, "GET", f"/v1/machines/{machines[name]['id']}/secret_key"
        )
        assert machines[name]["secret_key"] not in response.text


async def test_machine_key_cannot_rotate_keys(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """An ``ak_`` key cannot rotate its own key nor lock another machine out by rotating."""
    key = machines["attacker"]["secret_key"]
    for name in ("attacker", "victim"):
        await _forbidden(
            client,
            runtime,
            key,
            "POST",
            f"/machines/{machines[name]['id']}/secret_key/rotate",
            {"previous_token_ttl": 0},
        )


async def test_machine_key_cannot_widen_its_own_scopes(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """Scope escalation: an ``ak_`` key cannot add a scope, from itself or to itself."""
    key = machines["attacker"]["secret_key"]
    attacker, bystander = machines["attacker"]["id"], machines["bystander"]["id"]
    await _forbidden(
        client,
        runtime,
        key,
        "POST",
        f"/v1/machines/{attacker}/scopes",
        {"to_machine_id": bystander},
    )
    await _forbidden(
        client,
        runtime,
        key,
        "POST",
        f"/v1/machines/{bystander}/scopes",
        {"to_machine_id": attacker},
    )


async def test_machine_key_cannot_remove_scopes(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """An ``ak_`` key cannot remove a scope, not even one of its own."""
    await _forbidden(
        client,
        runtime,
        machines["victim"]["secret_key"],
        "DELETE",
        f"/v1/machines/{machines['attacker']['id']}/scopes/{machines['victim']['id']}",
    )


async def test_machine_key_cannot_rename_or_retune_machines(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """An ``ak_`` key cannot change any machine, e.g. stretch its own token lifetime."""
    key = machines["attacker"]["secret_key"]
    for name in ("attacker", "victim"):
        await _forbidden(
            client,
            runtime,
            key,
            "PATCH",
            f"/v1/machines/{machines[name]['id']}",
            {"default_token_ttl": 315_360_000},
        )


async def test_machine_key_cannot_delete_machines(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """An ``ak_`` key cannot delete itself or another machine."""
    key = machines["attacker"]["secret_key"]
    for name in ("attacker", "bystander"):
        await _forbidden(client, runtime, key, "DELETE", f"/machines/{machines[name]['id']}")


async def test_machine_key_403_does_not_reveal_existence(
    client: httpx.AsyncClient, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """The 403 body is the same for an existing and a made-up machine id."""
    key = machines["attacker"]["secret_key"]
    existing = await _forbidden(
        client, runtime, key, "GET", f"/v1/machines/{machines['victim']['id']}"
    )
    made_up = await _forbidden(client, runtime, key, "GET", f"/v1/machines/{UNKNOWN_MACHINE_ID}")
    assert without_trace_id(existing) == without_trace_id(made_up)


async def test_machine_key_in_grace_is_still_only_a_machine_key(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, machines: dict[str, dict[str, Any]]
) -> None:
    """A rotated-out key in its grace period authenticates, but gains no admin rights."""
    old = machines["attacker"]["secret_key"]
    await client.post(
        f"/v1/machines/{machines['attacker']['id']}/secret_key/rotate",
        json={"previous_token_ttl": 600},
        headers=auth(sk),
    )
    await _forbidden(client, runtime, old, "GET", f"/v1/machines/{machines['attacker']['id']}")
