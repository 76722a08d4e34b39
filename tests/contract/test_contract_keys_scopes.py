"""Routes 6-9 (CONTRACT.md §2-4): secret keys and scopes through Clerk's Python SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clerk_backend_api import models
from contract_support import UNKNOWN_MACHINE_ID, expect_clerk_error, machine_key_state

if TYPE_CHECKING:
    from clerk_backend_api import Clerk
    from contract_support import Contract


def test_get_secret_key_returns_the_key_create_showed(clerk: Clerk, tag: str) -> None:
    """get_secret_key answers the machine_secret_key object with the current ak_ key."""
    created = clerk.machines.create(request={"name": f"{tag} keyed"})
    shown = clerk.machines.get_secret_key(machine_id=created.id)
    assert isinstance(shown, models.MachineSecretKey)
    assert shown.object is models.MachineSecretKeyObject.MACHINE_SECRET_KEY
    assert shown.secret == created.secret_key


def test_rotate_keeps_the_old_key_during_the_grace_period(
    clerk: Clerk, contract: Contract, tag: str
) -> None:
    """After rotation with previous_token_ttl=600 the old and the new key both work."""
    created = clerk.machines.create(request={"name": f"{tag} rotating"})
    rotated = clerk.machines.rotate_secret_key(machine_id=created.id, previous_token_ttl=600)
    assert isinstance(rotated, models.MachineSecretKey)
    assert rotated.secret.startswith("ak_")
    assert rotated.secret != created.secret_key
    assert machine_key_state(contract.server.url, created.secret_key) == "works"
    assert machine_key_state(contract.server.url, rotated.secret) == "works"
    assert clerk.machines.get_secret_key(machine_id=created.id).secret == rotated.secret


def test_rotate_with_zero_grace_kills_the_old_key_at_once(
    clerk: Clerk, contract: Contract, tag: str
) -> None:
    """previous_token_ttl=0: the old key gets 401 clerk_key_invalid right away."""
    created = clerk.machines.create(request={"name": f"{tag} rotating"})
    rotated = clerk.machines.rotate_secret_key(machine_id=created.id, previous_token_ttl=0)
    assert machine_key_state(contract.server.url, created.secret_key) == "dead"
    assert machine_key_state(contract.server.url, rotated.secret) == "works"


def test_rotating_twice_keeps_only_keys_within_grace(
    clerk: Clerk, contract: Contract, tag: str
) -> None:
    """A second rotation with zero grace ends every older key, graced or not."""
    created = clerk.machines.create(request={"name": f"{tag} twice"})
    first = clerk.machines.rotate_secret_key(machine_id=created.id, previous_token_ttl=600)
    second = clerk.machines.rotate_secret_key(machine_id=created.id, previous_token_ttl=0)
    states = [
        machine_key_state(contract.server.url, key)
        for key in (created.secret_key, first.secret, second.secret)
    ]
    assert states == ["dead", "dead", "works"]


def test_create_scope_then_delete_scope(clerk: Clerk, tag: str) -> None:
    """create_scope adds the target to scoped_machines; delete_scope removes it again."""
    caller = clerk.machines.create(request={"name": f"{tag} caller"})
    target = clerk.machines.create(request={"name": f"{tag} target"})

    scope = clerk.machines.create_scope(machine_id=caller.id, to_machine_id=target.id)
    assert isinstance(scope, models.MachineScope)
    assert scope.object is models.MachineScopeObject.MACHINE_SCOPE
    assert (scope.from_machine_id, scope.to_machine_id) == (caller.id, target.id)
    assert scope.created_at > 10**12
    assert [s.id for s in clerk.machines.get(machine_id=caller.id).scoped_machines] == [target.id]
    assert clerk.machines.get(machine_id=target.id).scoped_machines == [], "scopes are one-way"

    removed = clerk.machines.delete_scope(machine_id=caller.id, other_machine_id=target.id)
    assert isinstance(removed, models.MachineScopeDeleted)
    assert (removed.from_machine_id, removed.to_machine_id, removed.DELETED) == (
        caller.id,
        target.id,
        True,
    )
    assert clerk.machines.get(machine_id=caller.id).scoped_machines == []


def test_duplicate_scope_is_typed_409(clerk: Clerk, tag: str) -> None:
    """Adding a scope that exists is ClerkErrors 409 conflict and changes nothing."""
    target = clerk.machines.create(request={"name": f"{tag} target"})
    caller = clerk.machines.create(
        request={"name": f"{tag} caller", "scoped_machines": [target.id]}
    )
    expect_clerk_error(
        lambda: clerk.machines.create_scope(machine_id=caller.id, to_machine_id=target.id),
        status=409,
        code="conflict",
    )
    assert [s.id for s in clerk.machines.get(machine_id=caller.id).scoped_machines] == [target.id]


def test_scope_to_unknown_machine_is_typed_404(clerk: Clerk, tag: str) -> None:
    """A scope to a machine that does not exist is ClerkErrors 404."""
    caller = clerk.machines.create(request={"name": f"{tag} caller"})
    expect_clerk_error(
        lambda: clerk.machines.create_scope(machine_id=caller.id, to_machine_id=UNKNOWN_MACHINE_ID),
        status=404,
        code="resource_not_found",
    )


def test_self_scope_is_typed_422(clerk: Clerk, tag: str) -> None:
    """A machine cannot be scoped to itself: ClerkErrors 422 form_param_value_invalid."""
    caller = clerk.machines.create(request={"name": f"{tag} caller"})
    expect_clerk_error(
        lambda: clerk.machines.create_scope(machine_id=caller.id, to_machine_id=caller.id),
        status=422,
        code="form_param_value_invalid",
    )


def test_deleting_a_missing_scope_is_typed_404(clerk: Clerk, tag: str) -> None:
    """delete_scope for two machines without a scope between them is ClerkErrors 404."""
    caller = clerk.machines.create(request={"name": f"{tag} caller"})
    target = clerk.machines.create(request={"name": f"{tag} target"})
    expect_clerk_error(
        lambda: clerk.machines.delete_scope(machine_id=caller.id, other_machine_id=target.id),
        status=404,
        code="resource_not_found",
    )
