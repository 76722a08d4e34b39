"""Machines use cases: the rules of CONTRACT.md §4 on top of a :class:`MachineStore`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gatepass_server.domain.keys import SecretKind, is_machine_id, new_machine_id
from gatepass_server.domain.machines import (
    DEFAULT_TOKEN_TTL,
    MAX_SCOPED_MACHINES,
    Machine,
    MachineListQuery,
    MachineScope,
    MachineSummary,
)
from gatepass_server.errors import Conflict, FormParamError, NotFound
from gatepass_server.services.interfaces import ScopeOutcome
from gatepass_server.services.minting import mint_secret

if TYPE_CHECKING:
    import builtins
    from collections.abc import Sequence

    from gatepass_server.domain.clock import Clock
    from gatepass_server.domain.sealing import Sealer
    from gatepass_server.services.interfaces import MachineStore

__all__ = ["CreatedMachine", "MachineService"]


@dataclass(frozen=True, slots=True)
class CreatedMachine:
    """A new machine and the plaintext of its first secret key (shown once)."""

    machine: Machine
    secret_key: str = field(repr=False)  # NOTE: a repr may be logged (SECURITY.md 3)


class MachineService:
    """Create, read, change and delete machines, their scopes and keys."""

    def __init__(self, store: MachineStore, sealer: Sealer, clock: Clock) -> None:
        self._store = store
        self._sealer = sealer
        self._clock = clock

    async def list(
        self,
        instance_id: str,
        query: MachineListQuery,
    ) -> tuple[builtins.list[Machine], int]:
        """One page of an instance's machines and the total count."""
        return await self._store.list_machines(instance_id, query)

    async def get(self, instance_id: str, machine_id: str) -> Machine:
        """One machine, or :class:`NotFound` (also for another instance's)."""
        _require_machine_id(machine_id)
        machine = await self._store.get_machine(instance_id, machine_id)
        if machine is None:
            raise NotFound("Machine not found")
        return machine

    async def create(
        self,
        instance_id: str,
        *,
        name: str,
        scoped_machine_ids: Sequence[str] = (),
        default_token_ttl: int = DEFAULT_TOKEN_TTL,
    ) -> CreatedMachine:
        """Create a machine with its scopes and first secret key, atomically."""
        now = self._clock.now_ms()
        machine_id = new_machine_id()
        secret, stored = mint_secret(SecretKind.MACHINE, sealer=self._sealer, context=machine_id)
        summary = MachineSummary(
            id=machine_id,
            instance_id=instance_id,
            name=name,
            default_token_ttl=default_token_ttl,
            created_at=now,
            updated_at=now,
        )
        machine = None
        if all(is_machine_id(target) for target in scoped_machine_ids):
            machine = await self._store.create_machine(summary, scoped_machine_ids, stored)
        if machine is None:
            # NOTE: 422, not 404: the Python SDK types only 400/401/403/422 on create.
            raise FormParamError(
                "form_param_value_invalid",
                "scoped_machines",
                "scoped_machines names a machine that does not exist in this instance",
            )
        return CreatedMachine(machine=machine, secret_key=secret)

    async def update(
        self,
        instance_id: str,
        machine_id: str,
        *,
        name: str | None = None,
        default_token_ttl: int | None = None,
    ) -> Machine:
        """Change the fields given; leave the others."""
        _require_machine_id(machine_id)
        machine = await self._store.update_machine(
            instance_id,
            machine_id,
            name=name,
            default_token_ttl=default_token_ttl,
            now_ms=self._clock.now_ms(),
        )
        if machine is None:
            raise NotFound("Machine not found")
        return machine

    async def delete(self, instance_id: str, machine_id: str) -> None:
        """Delete a machine with its scopes both ways; its keys and tokens stop working at once."""
        _require_machine_id(machine_id)
        if not await self._store.delete_machine(
            instance_id,
            machine_id,
            now_ms=self._clock.now_ms(),
        ):
            raise NotFound("Machine not found")

    async def secret_key(self, instance_id: str, machine_id: str) -> str:
        """The current secret key, decrypted."""
        _require_machine_id(machine_id)
        sealed = await self._store.current_sealed_key(instance_id, machine_id)
        if sealed is None:
            raise NotFound("Machine not found")
        return self._sealer.open(sealed, machine_id)

    async def rotate_secret_key(
        self,
        instance_id: str,
        machine_id: str,
        *,
        previous_token_ttl: int,
    ) -> str:
        """Issue a new key; the old one keeps working ``previous_token_ttl`` seconds."""
        _require_machine_id(machine_id)
        now = self._clock.now_ms()
        secret, stored = mint_secret(SecretKind.MACHINE, sealer=self._sealer, context=machine_id)
        rotated = await self._store.rotate_machine_key(
            instance_id,
            machine_id,
            stored,
            now_ms=now,
            previous_expires_at=now + previous_token_ttl * 1000,
        )
        if not rotated:
            raise NotFound("Machine not found")
        return secret

    async def add_scope(self, instance_id: str, from_id: str, to_id: str) -> MachineScope:
        """Let ``from_id`` call ``to_id``."""
        _require_machine_id(from_id)
        if from_id == to_id:
            raise FormParamError(
                "form_param_value_invalid",
                "to_machine_id",
                "A machine cannot be scoped to itself",
            )
        if not is_machine_id(to_id):
            raise NotFound("Machine not found")
        outcome, scope = await self._store.add_scope(
            instance_id,
            from_id,
            to_id,
            now_ms=self._clock.now_ms(),
            limit=MAX_SCOPED_MACHINES,
        )
        if outcome is ScopeOutcome.DONE and scope is not None:
            return scope
        if outcome is ScopeOutcome.EXISTS:
            raise Conflict("The machine scope already exists")
        if outcome is ScopeOutcome.LIMIT_REACHED:
            raise FormParamError(
                "form_param_array_size_exceeded",
                "to_machine_id",
                f"A machine can be scoped to at most {MAX_SCOPED_MACHINES} machines",
            )
        raise NotFound("Machine not found")

    async def remove_scope(self, instance_id: str, from_id: str, to_id: str) -> None:
        """Stop ``from_id`` from calling ``to_id``."""
        _require_machine_id(from_id)
        if not is_machine_id(to_id):
            raise NotFound("Machine scope not found")
        outcome = await self._store.remove_scope(
            instance_id, from_id, to_id, now_ms=self._clock.now_ms()
        )
        if outcome is ScopeOutcome.FROM_MISSING:
            raise NotFound("Machine not found")
        if outcome is not ScopeOutcome.DONE:
            raise NotFound("Machine scope not found")


def _require_machine_id(machine_id: str) -> None:
    """Ids that cannot exist are not looked up (nor can odd bytes reach the database)."""
    if not is_machine_id(machine_id):
        raise NotFound("Machine not found")
