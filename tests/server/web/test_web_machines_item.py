"""Routes 3-5: get, update and delete one machine (and what a delete takes with it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from web_support import (
    PREFIXES,
    SQLITE_ONLY,
    UNKNOWN_MACHINE_ID,
    assert_api_headers,
    assert_machine,
    create_machine,
)

from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_get_returns_the_machine(client: httpx.AsyncClient, sk: str, prefix: str) -> None:
    """``GET /machines/{id}`` is 200 with the same machine create returned, minus the key."""
    target = await create_machine(client, sk, name="API")
    created = await create_machine(client, sk, name="Email", scoped_machines=[target["id"]])
    response = await client.get(f"{prefix}/machines/{created['id']}", headers=auth(sk))
    assert response.status_code == 200
    assert_api_headers(response)
    body = response.json()
    assert_machine(body)
    assert body == {k: v for k, v in created.items() if k != "secret_key"}


@pytest.mark.parametrize("machine_id", [UNKNOWN_MACHINE_ID, "nonsense", "mch_", "MCH_" + "a" * 27])
async def test_get_unknown_is_404(client: httpx.AsyncClient, sk: str, machine_id: str) -> None:
    """An unknown or malformed machine id is 404 ``resource_not_found``."""
    response = await client.get(f"/v1/machines/{machine_id}", headers=auth(sk))
    await assert_rejected(response, status=404, code="resource_not_found")


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_update_changes_only_given_fields(
    client: httpx.AsyncClient, sk: str, clock: FixedClock, prefix: str
) -> None:
    """PATCH changes the fields present, keeps the rest and moves ``updated_at``."""
    target = await create_machine(client, sk, name="API")
    created = await create_machine(
        client, sk, name="Email", default_token_ttl=60, scoped_machines=[target["id"]]
    )
    clock.advance(5000)
    response = await client.patch(
        f"{prefix}/machines/{created['id']}", json={"name": "Mailer"}, headers=auth(sk)
    )
    assert response.status_code == 200
    assert_api_headers(response)
    body = response.json()
    assert_machine(body)
    assert body["name"] == "Mailer"
    assert body["default_token_ttl"] == 60
    assert body["created_at"] == created["created_at"]
    assert body["updated_at"] == clock.now_ms()
    assert body["scoped_machines"] == created["scoped_machines"]
    ttl_only = await client.patch(
        f"{prefix}/machines/{created['id']}", json={"default_token_ttl": 7200}, headers=auth(sk)
    )
    assert ttl_only.json()["name"] == "Mailer"
    assert ttl_only.json()["default_token_ttl"] == 7200
    got = await client.get(f"/v1/machines/{created['id']}", headers=auth(sk))
    assert got.json() == ttl_only.json()


@pytest.mark.parametrize(
    "body",
    [{}, {"name": None}, {"default_token_ttl": None}, {"name": None, "default_token_ttl": None}],
)
async def test_update_null_means_unchanged(
    client: httpx.AsyncClient, sk: str, body: dict[str, Any]
) -> None:
    """``null`` (or leaving a field out) keeps the stored value."""
    created = await create_machine(client, sk, name="Email", default_token_ttl=60)
    response = await client.patch(f"/v1/machines/{created['id']}", json=body, headers=auth(sk))
    assert response.status_code == 200
    assert response.json()["name"] == "Email"
    assert response.json()["default_token_ttl"] == 60


async def test_update_accepts_float_ttl(client: httpx.AsyncClient, sk: str) -> None:
    """An integral float TTL such as ``120.0`` is read as an integer."""
    created = await create_machine(client, sk)
    response = await client.patch(
        f"/v1/machines/{created['id']}", json={"default_token_ttl": 120.0}, headers=auth(sk)
    )
    assert response.json()["default_token_ttl"] == 120


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"name": ""}, "form_param_value_invalid", "name"),
        ({"name": "n" * 256}, "form_param_max_length_exceeded", "name"),
        ({"name": 1}, "form_param_format_invalid", "name"),
        ({"default_token_ttl": 0}, "form_param_value_invalid", "default_token_ttl"),
        ({"default_token_ttl": 1.5}, "form_param_format_invalid", "default_token_ttl"),
        ({"default_token_ttl": True}, "form_param_format_invalid", "default_token_ttl"),
        ({"scoped_machines": []}, "form_param_unknown", "scoped_machines"),
        ({"id": UNKNOWN_MACHINE_ID}, "form_param_unknown", "id"),
        ({"instance_id": "ins_x"}, "form_param_unknown", "instance_id"),
    ],
)
async def test_update_rejects_bad_fields(
    client: httpx.AsyncClient,
    sk: str,
    runtime: Runtime,
    body: dict[str, Any],
    code: str,
    param: str,
) -> None:
    """Update validates like create and refuses scopes and read-only fields."""
    created = await create_machine(client, sk)
    before = await storage_snapshot(runtime)
    response = await client.patch(f"/v1/machines/{created['id']}", json=body, headers=auth(sk))
    await assert_rejected(
        response, status=422, code=code, param_name=param, runtime=runtime, before=before
    )


async def test_update_unknown_is_404(client: httpx.AsyncClient, sk: str, runtime: Runtime) -> None:
    """Updating a machine that does not exist is 404 and stores nothing."""
    await create_machine(client, sk)
    before = await storage_snapshot(runtime)
    response = await client.patch(
        f"/v1/machines/{UNKNOWN_MACHINE_ID}", json={"name": "x"}, headers=auth(sk)
    )
    await assert_rejected(
        response, status=404, code="resource_not_found", runtime=runtime, before=before
    )


@SQLITE_ONLY
async def test_update_validates_before_lookup(client: httpx.AsyncClient, sk: str) -> None:
    """A bad body on an unknown machine is 422, not 404: validation comes first."""
    response = await client.patch(
        f"/v1/machines/{UNKNOWN_MACHINE_ID}", json={"name": 7}, headers=auth(sk)
    )
    await assert_rejected(response, status=422, code="form_param_format_invalid")


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_delete_returns_deleted_object(
    client: httpx.AsyncClient, sk: str, prefix: str
) -> None:
    """DELETE is 200 ``{"object":"machine","id":…,"deleted":true}``; the machine is gone."""
    created = await create_machine(client, sk)
    response = await client.delete(f"{prefix}/machines/{created['id']}", headers=auth(sk))
    assert response.status_code == 200
    assert_api_headers(response)
    assert response.json() == {"object": "machine", "id": created["id"], "deleted": True}
    got = await client.get(f"/v1/machines/{created['id']}", headers=auth(sk))
    await assert_rejected(got, status=404, code="resource_not_found")
    listed = await client.get("/v1/machines", headers=auth(sk))
    assert listed.json()["total_count"] == 0


async def test_delete_twice_is_404(client: httpx.AsyncClient, sk: str, runtime: Runtime) -> None:
    """A second delete of the same machine is 404."""
    created = await create_machine(client, sk)
    await client.delete(f"/v1/machines/{created['id']}", headers=auth(sk))
    before = await storage_snapshot(runtime)
    response = await client.delete(f"/v1/machines/{created['id']}", headers=auth(sk))
    await assert_rejected(
        response, status=404, code="resource_not_found", runtime=runtime, before=before
    )


async def test_delete_cascades_scopes_and_keys(client: httpx.AsyncClient, sk: str) -> None:
    """Deleting a machine removes scopes from and to it and kills its keys at once."""
    target = await create_machine(client, sk, name="target")
    doomed = await create_machine(client, sk, name="doomed", scoped_machines=[target["id"]])
    caller = await create_machine(client, sk, name="caller", scoped_machines=[doomed["id"]])
    rotated = await client.post(
        f"/v1/machines/{doomed['id']}/secret_key/rotate",
        json={"previous_token_ttl": 3600},
        headers=auth(sk),
    )
    keys = [doomed["secret_key"], rotated.json()["secret"]]
    for key in keys:  # both keys work before the delete
        alive = await client.get("/v1/machines", headers=auth(key))
        await assert_rejected(alive, status=403, code="authorization_invalid")

    response = await client.delete(f"/v1/machines/{doomed['id']}", headers=auth(sk))
    assert response.status_code == 200

    got_caller = await client.get(f"/v1/machines/{caller['id']}", headers=auth(sk))
    assert got_caller.json()["scoped_machines"] == []
    got_target = await client.get(f"/v1/machines/{target['id']}", headers=auth(sk))
    assert got_target.status_code == 200
    for key in keys:
        dead = await client.get("/v1/machines", headers=auth(key))
        await assert_rejected(dead, status=401, code="clerk_key_invalid", not_echoed=[key])
    no_key = await client.get(f"/v1/machines/{doomed['id']}/secret_key", headers=auth(sk))
    await assert_rejected(no_key, status=404, code="resource_not_found")
    no_scope = await client.delete(
        f"/v1/machines/{doomed['id']}/scopes/{target['id']}", headers=auth(sk)
    )
    await assert_rejected(no_scope, status=404, code="resource_not_found")
    listed = await client.get("/v1/machines", headers=auth(sk))
    assert sorted(m["id"] for m in listed.json()["data"]) == sorted([target["id"], caller["id"]])


async def test_delete_accepts_json_content_type_without_body(
    client: httpx.AsyncClient, sk: str
) -> None:
    """The JS SDK sends ``Content-Type: application/json`` on DELETE and GET; that is fine."""
    created = await create_machine(client, sk)
    headers = {**auth(sk), "Content-Type": "application/json"}
    got = await client.get(f"/v1/machines/{created['id']}", headers=headers)
    assert got.status_code == 200
    deleted = await client.delete(f"/v1/machines/{created['id']}", headers=headers)
    assert deleted.status_code == 200
