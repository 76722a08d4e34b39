"""Attack class: object-level and cross-instance access.

One tenant's ``sk_`` key must not see, change or link to another tenant's machines, and its
404s must not reveal that they exist (SECURITY.md principles 2 and 4).
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
async def victim(client: httpx.AsyncClient, sk: str) -> dict[str, Any]:
    """A machine of the default instance, scoped to another machine of that instance."""
    target = await create_machine(client, sk, name="victim-target")
    return await create_machine(client, sk, name="victim", scoped_machines=[target["id"]])


@pytest.fixture
async def attacker(client: httpx.AsyncClient, other_sk: str) -> dict[str, Any]:
    """A machine of the second instance, owned by the attacker."""
    return await create_machine(client, other_sk, name="attacker")


async def _not_found(
    client: httpx.AsyncClient,
    runtime: Runtime,
    key: str,
    method: str,
    url: str,
    *,
    secrets: list[str],
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    response, _ = await refused(
        client,
        runtime,
        method,
        url,
        json=body,
        headers=auth(key),
        status=404,
        code="resource_not_found",
        not_echoed=secrets,
    )
    return response


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "pwned"}),
        ("DELETE", "", None),
        ("GET", "/secret_key", None),
        ("POST", "/secret_key/rotate", {"previous_token_ttl": 0}),
        ("POST", "/scopes", {"to_machine_id": "{target}"}),
        ("DELETE", "/scopes/{target}", None),
    ],
)
async def test_other_instance_cannot_touch_machine(
    client: httpx.AsyncClient,
    runtime: Runtime,
    other_sk: str,
    victim: dict[str, Any],
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
) -> None:
    """Every route naming another tenant's machine is 404, the same body as an unknown id."""
    target = victim["scoped_machines"][0]["id"]
    filled = (
        None
        if body is None
        else {k: v.format(target=target) if isinstance(v, str) else v for k, v in body.items()}
    )
    secrets = [victim["secret_key"], victim["name"]]
    foreign = await _not_found(
        client,
        runtime,
        other_sk,
        method,
        f"/v1/machines/{victim['id']}{suffix.format(target=target)}",
        secrets=secrets,
        body=filled,
    )
    unknown = await _not_found(
        client,
        runtime,
        other_sk,
        method,
        f"/v1/machines/{UNKNOWN_MACHINE_ID}{suffix.format(target=target)}",
        secrets=secrets,
        body=filled,
    )
    assert without_trace_id(foreign) == without_trace_id(unknown)


async def test_cannot_scope_own_machine_to_other_instance(
    client: httpx.AsyncClient,
    runtime: Runtime,
    other_sk: str,
    victim: dict[str, Any],
    attacker: dict[str, Any],
) -> None:
    """A tenant cannot give its machine a scope onto another tenant's machine."""
    await _not_found(
        client,
        runtime,
        other_sk,
        "POST",
        f"/v1/machines/{attacker['id']}/scopes",
        body={"to_machine_id": victim["id"]},
        secrets=[victim["secret_key"]],
    )


async def test_cannot_create_machine_scoped_to_other_instance(
    client: httpx.AsyncClient,
    runtime: Runtime,
    other_sk: str,
    victim: dict[str, Any],
) -> None:
    """``scoped_machines`` naming another tenant's machine is refused and stores nothing."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        json={"name": "sneaky", "scoped_machines": [victim["id"]]},
        headers=auth(other_sk),
        status=422,
        code="form_param_value_invalid",
        param_name="scoped_machines",
        not_echoed=[victim["secret_key"], victim["name"]],
    )


async def test_cannot_list_or_find_other_instance_machines(
    client: httpx.AsyncClient, other_sk: str, victim: dict[str, Any], attacker: dict[str, Any]
) -> None:
    """Neither the list nor a search by exact id or name shows another tenant's machines."""
    for query in (None, victim["id"], victim["name"], "%", "_"):
        params = {} if query is None else {"query": query}
        response = await client.get("/v1/machines", params=params, headers=auth(other_sk))
        assert response.status_code == 200
        ids = [m["id"] for m in response.json()["data"]]
        assert victim["id"] not in ids
        assert victim["id"] not in response.text
        assert set(ids) <= {attacker["id"]}


async def test_isolation_holds_in_both_directions(
    client: httpx.AsyncClient,
    runtime: Runtime,
    sk: str,
    other_sk: str,
    attacker: dict[str, Any],
) -> None:
    """The default instance's key cannot reach the second instance's machines either."""
    await _not_found(
        client,
        runtime,
        sk,
        "GET",
        f"/v1/machines/{attacker['id']}/secret_key",
        secrets=[attacker["secret_key"]],
    )
    mine = await client.get(f"/v1/machines/{attacker['id']}", headers=auth(other_sk))
    assert mine.status_code == 200
