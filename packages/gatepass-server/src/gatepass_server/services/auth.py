"""Who is calling: resolve a bearer secret to an instance or a machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gatepass_server.domain.keys import (
    MAX_SECRET_LENGTH,
    SecretKind,
    digest,
    is_well_formed,
    kind_of,
)

if TYPE_CHECKING:
    from gatepass_server.domain.clock import Clock
    from gatepass_server.services.cache import VerifyCache
    from gatepass_server.services.interfaces import InstanceStore, KeyOwner, MachineStore

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
    """Resolves keys by digest after a format and checksum check, through the cache."""

    def __init__(
        self,
        instances: InstanceStore,
        machines: MachineStore,
        clock: Clock,
        cache: VerifyCache,
    ) -> None:
        self._instances = instances
        self._machines = machines
        self._clock = clock
        self._cache = cache

    async def authenticate(self, secret: str) -> Principal | None:
        """Return who ``secret`` belongs to, or ``None`` for any key that does not work.

        Unknown, retired, malformed and deleted-machine keys are all ``None``: the caller
        answers each the same way (SECURITY.md principle 2).
        """
        # NOTE: SECURITY.md principle 5: no key is longer or non-ASCII; such a string (from
        # the CLI or the bootstrap setting: the header parser allows neither) never reaches
        # the digest, whose UTF-8 encoding would raise on a lone surrogate.
        if len(secret) > MAX_SECRET_LENGTH or not secret.isascii():
            return None
        now = self._clock.now_ms()
        key_digest = digest(secret)
        # NOTE: a cache hit needs no format check: only the digest of a stored, hence
        # well-formed, key can be cached. A miss is checked before storage is asked.
        owner = self._cache.peek(self._cache.keys, key_digest)
        if owner is None:
            kind = kind_of(secret)
            if kind is None or kind is SecretKind.TOKEN or not is_well_formed(secret, kind):
                return None
            find = (
                self._instances.find_instance_by_key
                if kind.is_instance_key
                else self._machines.find_machine_by_key
            )
            owner = await self._cache.through(
                self._cache.keys,
                key_digest,
                lambda: find(key_digest, now),
            )
        # NOTE: a cached key in its rotation grace still ends on time: its expiry is
        # checked here on every call, against the one clock.
        if owner is None or (owner.expires_at is not None and owner.expires_at <= now):
            return None
        return _principal(owner)


def _principal(owner: KeyOwner) -> Principal:
    if owner.machine_id is None:
        return InstancePrincipal(owner.instance_id)
    return MachinePrincipal(owner.instance_id, owner.machine_id)
