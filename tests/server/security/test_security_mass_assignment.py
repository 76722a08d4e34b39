"""Attack class: mass assignment and scope escalation through request bodies.

Only the documented fields are read; ``id``, ``instance_id``, ``scopes``, ``subject`` and
friends are refused, never silently applied (CONTRACT.md §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from security_support import SQLITE_ONLY, UNKNOWN_MACHINE_ID, create_machine, refused

from helpers import auth

if TYPE_CHECKING:
    import httpx

    from gatepass_server.runtime import Runtime

SMUGGLED = {
    "id": UNKNOWN_MACHINE_ID,
    "instance_id": "ins_" + "1" * 27,
    "scopes": [UNKNOWN_MACHINE_ID],
    "subject": UNKNOWN_MACHINE_ID,
    "secret_key": "ak_chosen_by_the_attacker",
    "object": "instance",
    "created_at": 0,
    "updated_at": 0,
    "deleted": True,
    "__proto__": {"admin": True},
    "constructor": {"prototype": {}},
}


@SQLITE_ONLY
@pytest.mark.parametrize("field", sorted(SMUGGLED))
async def test_create_refuses_smuggled_fields(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, field: str
) -> None:
    """A create with a read-only or foreign field next to a valid name is refused whole."""
    await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        json={"name": "ok", field: SMUGGLED[field]},
        headers=auth(sk),
        status=422,
        code="form_param_unknown",
        param_name=field,
        not_echoed=[sk],
    )


@pytest.mark.parametrize("field", ["instance_id", "id", "scoped_machines", "scopes", "secret_key"])
async def test_update_refuses_smuggled_fields(
    client: httpx.AsyncClient, sk: str, other_sk: str, runtime: Runtime, field: str
) -> None:
    """PATCH cannot move a machine to another tenant, re-id it, set its key or its scopes."""
    machine = await create_machine(client, sk)
    theirs = await create_machine(client, other_sk)
    value = {
        "instance_id": theirs["instance_id"],
        "id": theirs["id"],
        "scoped_machines": [theirs["id"]],
        "scopes": [theirs["id"]],
        "secret_key": theirs["secret_key"],
    }[field]
    await refused(
        client,
        runtime,
        "PATCH",
        f"/v1/machines/{machine['id']}",
        json={"name": "renamed", field: value},
        headers=auth(sk),
        status=422,
        code="form_param_unknown",
        param_name=field,
        not_echoed=[theirs["secret_key"]],
    )


async def test_scope_create_refuses_from_machine_override(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """The scope's source is the path's machine; a body ``from_machine_id`` is refused."""
    one = await create_machine(client, sk)
    two = await create_machine(client, sk)
    three = await create_machine(client, sk)
    await refused(
        client,
        runtime,
        "POST",
        f"/v1/machines/{one['id']}/scopes",
        json={"to_machine_id": two["id"], "from_machine_id": three["id"]},
        headers=auth(sk),
        status=422,
        code="form_param_unknown",
        param_name="from_machine_id",
    )


async def test_rotate_refuses_a_chosen_secret(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """The caller cannot choose the new key: ``secret`` in the rotate body is refused."""
    machine = await create_machine(client, sk)
    await refused(
        client,
        runtime,
        "POST",
        f"/v1/machines/{machine['id']}/secret_key/rotate",
        json={"previous_token_ttl": 0, "secret": machine["secret_key"]},
        headers=auth(sk),
        status=422,
        code="form_param_unknown",
        param_name="secret",
        not_echoed=[machine["secret_key"]],
    )


@SQLITE_ONLY
@pytest.mark.parametrize("field", ["Name", "name ", "NAME", "name\x00", "scoped_machines[]"])
async def test_field_name_lookalikes_are_unknown(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, field: str
) -> None:
    """Field names match exactly: case or padding variants are unknown fields, not aliases."""
    _, error = await refused(
        client,
        runtime,
        "POST",
        "/v1/machines",
        json={"name": "ok", field: "x"},
        headers=auth(sk),
        status=422,
        code="form_param_unknown",
    )
    assert "\x00" not in error["meta"]["param_name"]


@pytest.fixture
async def minted(client: httpx.AsyncClient, sk: str) -> dict[str, Any]:
    """A caller scoped to a receiver, one live opaque token of the caller, and their keys."""
    receiver = await create_machine(client, sk, name="receiver")
    caller = await create_machine(client, sk, name="caller", scoped_machines=[receiver["id"]])
    token = await client.post("/v1/m2m_tokens", json={}, headers=auth(caller["secret_key"]))
    assert token.status_code == 201, token.text
    return {"caller": caller, "receiver": receiver, "token": token.json()}


TOKEN_SMUGGLED = {
    "scopes": ["{receiver}", UNKNOWN_MACHINE_ID],
    "subject": "{receiver}",
    "id": "mt_" + "1" * 32,
    "instance_id": "ins_" + "1" * 27,
    "revoked": False,
    "revoked_at": None,
    "expiration": 2**62,
    "claims": {"role": "admin"},
    "token_format": "opaque",
}


def _fill(field: str, receiver_id: str) -> Any:
    """The smuggled value of ``field``, naming the real receiver where it names a machine."""
    value = TOKEN_SMUGGLED[field]
    if isinstance(value, list):
        return [v.format(receiver=receiver_id) for v in value]
    if isinstance(value, str):
        return value.format(receiver=receiver_id)
    return value


@SQLITE_ONLY
@pytest.mark.parametrize("field", sorted(TOKEN_SMUGGLED))
async def test_token_revoke_refuses_smuggled_fields(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, minted: dict[str, Any], field: str
) -> None:
    """A revoke body is ``revocation_reason`` only: anything else refuses the whole revoke."""
    value = _fill(field, minted["receiver"]["id"])
    for key in (sk, minted["caller"]["secret_key"]):
        await refused(
            client,
            runtime,
            "POST",
            f"/v1/m2m_tokens/{minted['token']['id']}/revoke",
            json={"revocation_reason": "ok", field: value},
            headers=auth(key),
            status=400,
            code="form_param_unknown",
            param_name=field,
        )


@SQLITE_ONLY
@pytest.mark.parametrize("field", sorted(TOKEN_SMUGGLED))
async def test_token_verify_refuses_smuggled_fields(
    client: httpx.AsyncClient, sk: str, runtime: Runtime, minted: dict[str, Any], field: str
) -> None:
    """A verify body cannot widen or redirect the check (``scopes``, ``subject``, ``id`` …)."""
    value = _fill(field, minted["receiver"]["id"])
    for key in (sk, minted["receiver"]["secret_key"]):
        await refused(
            client,
            runtime,
            "POST",
            "/v1/m2m_tokens/verify",
            json={"token": minted["token"]["token"], field: value},
            headers=auth(key),
            status=400,
            code="form_param_unknown",
            param_name=field,
        )


@SQLITE_ONLY
async def test_token_create_refuses_every_smuggled_field(
    client: httpx.AsyncClient, runtime: Runtime, minted: dict[str, Any]
) -> None:
    """Minting takes no ``subject``, ``scopes``, ``id``, ``instance_id`` or state fields."""
    for field in sorted(TOKEN_SMUGGLED.keys() - {"claims", "token_format"}):  # real mint inputs
        filled = _fill(field, minted["receiver"]["id"])
        await refused(
            client,
            runtime,
            "POST",
            "/v1/m2m_tokens",
            json={field: filled},
            headers=auth(minted["caller"]["secret_key"]),
            status=400,
            code="form_param_unknown",
            param_name=field,
        )
