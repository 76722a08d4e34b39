"""Routes 1-5 (CONTRACT.md §2-4) through Clerk's Python SDK against a live server."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from clerk_backend_api import models
from contract_support import (
    MACHINE_FIELDS,
    UNKNOWN_MACHINE_ID,
    expect_clerk_error,
    machine_key_state,
    sdk,
)

from helpers import auth

if TYPE_CHECKING:
    from clerk_backend_api import Clerk
    from contract_support import Contract

MACHINE_ID = re.compile(r"mch_[A-Za-z0-9]{27}")
INSTANCE_ID = re.compile(r"ins_[A-Za-z0-9]{27}")


def _create(clerk: Clerk, name: str, **fields: Any) -> models.MachineCreated:
    return clerk.machines.create(request={"name": name, **fields})


def _listed(clerk: Clerk, **params: Any) -> models.MachineList:
    return clerk.machines.list(**params)


def _dump(machine: Any) -> dict[str, Any]:
    body: dict[str, Any] = machine.model_dump(mode="json", by_alias=True)
    return body


def test_create_returns_machine_with_scopes_ttl_and_secret_key(
    clerk: Clerk, contract: Contract, tag: str
) -> None:
    """Create answers 200 with the full Machine, its scoped machines and a working ak_ key."""
    api = _create(clerk, f"{tag} api")
    email = _create(clerk, f"{tag} email", scoped_machines=[api.id], default_token_ttl=60)

    assert MACHINE_ID.fullmatch(email.id)
    assert INSTANCE_ID.fullmatch(email.instance_id)
    assert email.object is models.MachineCreatedObject.MACHINE
    assert email.name == f"{tag} email"
    assert email.default_token_ttl == 60
    assert email.created_at == email.updated_at
    assert email.created_at > 10**12, "timestamps are Unix milliseconds"
    assert [s.id for s in email.scoped_machines] == [api.id]
    nested = email.scoped_machines[0]
    assert (nested.name, nested.instance_id, nested.default_token_ttl) == (
        f"{tag} api",
        api.instance_id,
        3600,
    )
    assert email.secret_key.startswith("ak_")
    assert email.secret_key != api.secret_key
    assert machine_key_state(contract.server.url, email.secret_key) == "works"


def test_create_defaults_to_no_scopes_and_an_hour(
    clerk: Clerk, contract: Contract, tag: str
) -> None:
    """Without scoped_machines the machine has []; without a TTL the server picks 3600."""
    created = _create(clerk, f"{tag} plain")
    assert created.scoped_machines == []
    assert created.default_token_ttl == 3600
    # NOTE: the SDK always sends its model default "default_token_ttl": 3600, so only a
    # raw request shows the server's own default.
    raw = httpx.post(
        f"{contract.api_url}/machines", json={"name": f"{tag} raw"}, headers=auth(contract.sk)
    )
    assert raw.status_code == 200, raw.text
    assert raw.json()["default_token_ttl"] == 3600
    assert raw.json()["scoped_machines"] == []


def test_get_returns_what_create_returned(clerk: Clerk, tag: str) -> None:
    """Get returns the same Machine as create, minus the secret key."""
    target = _create(clerk, f"{tag} target")
    created = _create(clerk, f"{tag} caller", scoped_machines=[target.id])
    got = clerk.machines.get(machine_id=created.id)
    assert isinstance(got, models.Machine)
    expected = _dump(created)
    del expected["secret_key"]
    assert _dump(got) == expected
    assert set(_dump(got)) == MACHINE_FIELDS


def test_update_changes_only_the_fields_given(clerk: Clerk, tag: str) -> None:
    """Update with a name keeps the TTL, with a TTL keeps the name; get sees both."""
    created = _create(clerk, f"{tag} before", default_token_ttl=90)

    renamed = clerk.machines.update(machine_id=created.id, name=f"{tag} after")
    assert (renamed.name, renamed.default_token_ttl) == (f"{tag} after", 90)
    assert renamed.updated_at >= created.updated_at
    assert renamed.created_at == created.created_at

    retimed = clerk.machines.update(machine_id=created.id, default_token_ttl=7200)
    assert (retimed.name, retimed.default_token_ttl) == (f"{tag} after", 7200)
    assert _dump(clerk.machines.get(machine_id=created.id)) == _dump(retimed)

    unchanged = clerk.machines.update(machine_id=created.id)  # the SDK sends {}
    assert (unchanged.name, unchanged.default_token_ttl) == (f"{tag} after", 7200)


def test_update_keeps_scoped_machines(clerk: Clerk, tag: str) -> None:
    """Scopes change only through the scope routes, never through update."""
    target = _create(clerk, f"{tag} target")
    created = _create(clerk, f"{tag} caller", scoped_machines=[target.id])
    updated = clerk.machines.update(machine_id=created.id, name=f"{tag} renamed")
    assert [s.id for s in updated.scoped_machines] == [target.id]


def test_delete_removes_machine_scopes_and_key(clerk: Clerk, contract: Contract, tag: str) -> None:
    """Delete answers the deleted marker; the machine, its scopes and its key are gone."""
    doomed = _create(clerk, f"{tag} doomed")
    caller = _create(clerk, f"{tag} caller", scoped_machines=[doomed.id])

    deleted = clerk.machines.delete(machine_id=doomed.id)
    assert isinstance(deleted, models.MachineDeleted)
    assert (deleted.object, deleted.id, deleted.DELETED) == (
        models.MachineDeletedObject.MACHINE,
        doomed.id,
        True,
    )
    expect_clerk_error(
        lambda: clerk.machines.get(machine_id=doomed.id), status=404, code="resource_not_found"
    )
    assert clerk.machines.get(machine_id=caller.id).scoped_machines == []
    assert _listed(clerk, query=doomed.id).total_count == 0
    assert machine_key_state(contract.server.url, doomed.secret_key) == "dead"


def test_list_pages_with_limit_and_offset(clerk: Clerk, tag: str) -> None:
    """limit/offset walk the matches without overlap; total_count counts all of them."""
    made = [_create(clerk, f"{tag} {n}") for n in range(5)]
    pages = [_listed(clerk, query=tag, order_by="name", limit=2, offset=o) for o in (0, 2, 4)]
    assert [len(p.data) for p in pages] == [2, 2, 1]
    assert all(p.total_count == 5 for p in pages)
    seen = [m.id for p in pages for m in p.data]
    assert seen == [m.id for m in made]  # names "<tag> 0".."<tag> 4" sort as created
    beyond = _listed(clerk, query=tag, limit=2, offset=5)
    assert (beyond.data, beyond.total_count) == ([], 5)


def test_list_default_is_newest_first_limit_ten(clerk: Clerk, tag: str) -> None:
    """The SDK's defaults (limit 10, -created_at) give at most ten, newest first."""
    made = [_create(clerk, f"{tag} {n:02d}") for n in range(11)]
    listed = _listed(clerk, query=tag)
    assert listed.total_count == 11
    assert len(listed.data) == 10
    stamps = [m.created_at for m in listed.data]
    assert stamps == sorted(stamps, reverse=True)
    assert {m.id for m in listed.data} <= {m.id for m in made}


ORDERS = ["name", "+name", "-name", "created_at", "+created_at", "-created_at"]


@pytest.mark.parametrize("order_by", ORDERS)
def test_list_orders_by_each_allowed_value(clerk: Clerk, tag: str, order_by: str) -> None:
    """order_by name/created_at, with +, - or no sign (ascending), sorts accordingly."""
    made = [_create(clerk, f"{tag} {letter}") for letter in ("charlie", "alpha", "bravo")]
    listed = _listed(clerk, query=tag, order_by=order_by).data
    assert {m.id for m in listed} == {m.id for m in made}
    descending = order_by.startswith("-")
    field = order_by.lstrip("+-")
    keys = [getattr(m, field) for m in listed]
    assert keys == sorted(keys, reverse=descending)
    if field == "name":
        letters = [m.name.split()[-1] for m in listed]
        expected = ["alpha", "bravo", "charlie"]
        assert letters == (expected[::-1] if descending else expected)


def test_list_query_matches_exact_id_or_part_of_name_ignoring_case(clerk: Clerk, tag: str) -> None:
    """A query finds one machine by its exact id, or by a case-insensitive name fragment."""
    email = _create(clerk, f"{tag} Email Server")
    billing = _create(clerk, f"{tag} Billing")

    by_id = _listed(clerk, query=email.id)
    assert ([m.id for m in by_id.data], by_id.total_count) == ([email.id], 1)
    by_name = _listed(clerk, query=f"{tag.upper()} eMAIL")
    assert [m.id for m in by_name.data] == [email.id]
    both = _listed(clerk, query=tag, order_by="name")
    assert [m.id for m in both.data] == [billing.id, email.id]
    assert _listed(clerk, query=email.id[:-1]).total_count == 0, "ids match exactly only"


def test_list_entries_are_complete_machines(clerk: Clerk, tag: str) -> None:
    """Listed machines carry every Machine key, scoped machines included."""
    target = _create(clerk, f"{tag} target")
    caller = _create(clerk, f"{tag} caller", scoped_machines=[target.id])
    listed = {m.id: m for m in _listed(clerk, query=tag).data}
    assert set(_dump(listed[caller.id])) == MACHINE_FIELDS
    assert [s.id for s in listed[caller.id].scoped_machines] == [target.id]
    assert listed[target.id].scoped_machines == []


async def test_async_variants(contract: Contract, tag: str) -> None:
    """The SDK's async methods work the same: create, get, update, list, delete."""
    async with sdk(contract.server.url, contract.sk) as client:
        created = await client.machines.create_async(request={"name": f"{tag} async"})
        got = await client.machines.get_async(machine_id=created.id)
        assert got.id == created.id
        updated = await client.machines.update_async(machine_id=created.id, default_token_ttl=5)
        assert updated.default_token_ttl == 5
        listed = await client.machines.list_async(query=tag)
        assert [m.id for m in listed.data] == [created.id]
        secret = await client.machines.get_secret_key_async(machine_id=created.id)
        assert secret.secret == created.secret_key
        deleted = await client.machines.delete_async(machine_id=created.id)
        assert deleted.id == created.id
        with pytest.raises(models.ClerkErrors) as caught:
            await client.machines.get_async(machine_id=created.id)
        assert caught.value.status_code == 404
        assert caught.value.data.errors[0].code == "resource_not_found"


def test_unknown_machine_on_get_is_typed_404(clerk: Clerk) -> None:
    """An unknown machine id is the SDK's ClerkErrors with 404 resource_not_found."""
    expect_clerk_error(
        lambda: clerk.machines.get(machine_id=UNKNOWN_MACHINE_ID),
        status=404,
        code="resource_not_found",
    )
