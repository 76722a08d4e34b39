"""Who is calling: resolve a bearer secret to an instance or a machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gatepass_server.domain.keys import SecretKind, digest, is_well_formed, kind_of

if TYPE_CHECKING:
    from gatepass_server.domain.clock import Clock
    from gatepass_server.services.interfaces import InstanceStore, MachineStore

__all__ = ["InstancePrincipal", "KeyAuthenticator", "MachinePrincipal", "Principal"]


@dataclass(frozen=True, slots=True)
class InstancePrincipal:
    """An ``sk_`` key: admin of one instance."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class MachinePrincipal:
    """An ``ak_`` key: one machine of one instance."""

    instance_id: str
    machine_id: str


Principal = InstancePrincipal | MachinePrincipal


class KeyAuthenticator:
    """Resolves keys by digest after a format and checksum check."""

    def __init__(self, instances: InstanceStore, machines: MachineStore, clock: Clock) -> None:
        self._instances = instances
        self._machines = machines
        self._clock = clock

    async def authenticate(self, secret: str) -> Principal | None:
        """Return who ``secret`` belongs to, or ``None`` for any key that does not work.

        Unknown, retired, malformed and deleted-machine keys are all ``None``: the caller
        answers each the same way (SECURITY.md principle 2).
        """
        kind = kind_of(secret)
        if kind is None or kind is SecretKind.TOKEN or not is_well_formed(secret, kind):
            return None
        now = self._clock.now_ms()
        if kind.is_instance_key:
            instance_id = await self._instances.find_instance_by_key(digest(secret), now)
            return None if instance_id is None else InstancePrincipal(instance_id)
        owner = await self._machines.find_machine_by_key(digest(secret), now)
        return None if owner is None else MachinePrincipal(owner.instance_id, owner.machine_id)
