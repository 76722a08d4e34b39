"""What the services need from storage, as protocols; ``storage.sql`` implements them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gatepass_server.domain.instances import Instance, InstanceKey
    from gatepass_server.domain.machines import (
        Machine,
        MachineListQuery,
        MachineScope,
        MachineSummary,
    )
    from gatepass_server.domain.tokens import M2MToken

__all__ = [
    "InstanceStore",
    "KeyOwner",
    "MachineStore",
    "NewSecret",
    "ScopeOutcome",
    "TokenListQuery",
    "TokenStore",
]


@dataclass(frozen=True, slots=True)
class NewSecret:
    """A freshly generated secret as storage keeps it: digest, and maybe a sealed copy."""

    digest: bytes
    sealed: bytes
    hint: str


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who a live key authenticates, and until when.

    ``machine_id`` is ``None`` for an ``sk_`` key; ``expires_at`` is ``None`` until the key
    is rotated.
    """

    instance_id: str
    machine_id: str | None
    expires_at: int | None


class ScopeOutcome(Enum):
    """Why a scope change did or did not happen (expected outcomes are values)."""

    DONE = "done"
    FROM_MISSING = "from_missing"
    TO_MISSING = "to_missing"
    EXISTS = "exists"
    ABSENT = "absent"
    LIMIT_REACHED = "limit_reached"


class InstanceStore(Protocol):
    """Instances and their ``sk_`` keys."""

    async def create_instance(self, instance: Instance, key: NewSecret) -> None:
        """Store a new instance with its first key."""
        ...

    async def list_instances(self) -> list[Instance]:
        """All instances, oldest first."""
        ...

    async def get_instance(self, instance_id: str) -> Instance | None:
        """One instance."""
        ...

    async def list_instance_keys(self, instance_id: str, now_ms: int) -> list[InstanceKey]:
        """The keys of an instance that still authenticate."""
        ...

    async def rotate_instance_key(
        self,
        instance_id: str,
        key: NewSecret,
        now_ms: int,
        previous_expires_at: int,
    ) -> bool:
        """Add ``key`` and make every other live key expire at ``previous_expires_at``."""
        ...

    async def find_instance_by_key(self, digest: bytes, now_ms: int) -> KeyOwner | None:
        """The instance a live key with this digest belongs to."""
        ...


class MachineStore(Protocol):
    """Machines, their scopes and their ``ak_`` keys, each call one transaction."""

    async def list_machines(
        self,
        instance_id: str,
        query: MachineListQuery,
    ) -> tuple[list[Machine], int]:
        """One page of machines and the total count matching the query."""
        ...

    async def get_machine(self, instance_id: str, machine_id: str) -> Machine | None:
        """One machine with its scoped machines."""
        ...

    async def create_machine(
        self,
        machine: MachineSummary,
        scoped_machine_ids: Sequence[str],
        key: NewSecret,
    ) -> Machine | None:
        """Create a machine, its scopes and its key atomically; ``None`` if a target is unknown."""
        ...

    async def update_machine(
        self,
        instance_id: str,
        machine_id: str,
        *,
        name: str | None,
        default_token_ttl: int | None,
        now_ms: int,
    ) -> Machine | None:
        """Change the given fields; ``None`` if there is no such machine."""
        ...

    async def delete_machine(self, instance_id: str, machine_id: str, *, now_ms: int) -> bool:
        """Delete a machine, its scopes (both ways) and keys; revoke its live tokens."""
        ...

    async def current_sealed_key(self, instance_id: str, machine_id: str) -> bytes | None:
        """The sealed current ``ak_`` key of a machine."""
        ...

    async def rotate_machine_key(
        self,
        instance_id: str,
        machine_id: str,
        key: NewSecret,
        *,
        now_ms: int,
        previous_expires_at: int,
    ) -> bool:
        """Make ``key`` current; older live keys expire at ``previous_expires_at``."""
        ...

    async def add_scope(
        self,
        instance_id: str,
        from_machine_id: str,
        to_machine_id: str,
        *,
        now_ms: int,
        limit: int,
    ) -> tuple[ScopeOutcome, MachineScope | None]:
        """Let ``from`` call ``to``, unless a rule says no."""
        ...

    async def remove_scope(
        self,
        instance_id: str,
        from_machine_id: str,
        to_machine_id: str,
        *,
        now_ms: int,
    ) -> ScopeOutcome:
        """Remove a scope."""
        ...

    async def find_machine_by_key(self, digest: bytes, now_ms: int) -> KeyOwner | None:
        """The machine a live ``ak_`` key with this digest belongs to."""
        ...


@dataclass(frozen=True, slots=True)
class TokenListQuery:
    """``GET /m2m_tokens``: one subject, include-filters, a page, newest first."""

    subject: str
    include_revoked: bool
    include_expired: bool
    limit: int
    offset: int


class TokenStore(Protocol):
    """M2M token records, each call one transaction."""

    async def insert_token(
        self,
        token: M2MToken,
        *,
        digest: bytes | None,
        sealed: bytes | None,
        kid: str | None,
    ) -> bool:
        """Store a new token (committed before the caller returns it).

        ``False``, and nothing stored, if its machine no longer exists.
        """
        ...

    async def token_by_digest(self, digest: bytes) -> M2MToken | None:
        """The opaque token with this secret digest, in any instance."""
        ...

    async def get_token(self, instance_id: str, token_id: str) -> M2MToken | None:
        """One token of an instance."""
        ...

    async def list_tokens(
        self,
        instance_id: str,
        query: TokenListQuery,
        now_ms: int,
    ) -> tuple[list[M2MToken], int]:
        """A page of tokens and the total matching."""
        ...

    async def revoke_token(
        self,
        instance_id: str,
        token_id: str,
        *,
        reason: str | None,
        now_ms: int,
    ) -> M2MToken | None:
        """Revoke once (a second revoke keeps the first reason); ``None`` if unknown."""
        ...

    async def reusable_token(
        self,
        instance_id: str,
        subject: str,
        *,
        claims: str | None,
        scopes: str,
        live_until: int,
    ) -> tuple[M2MToken, bytes] | None:
        """A reusable live opaque token with these claims and scopes, and its sealed secret.

        Only tokens minted with ``min_remaining_ttl_seconds`` keep a sealed copy, and only
        those lasting past ``live_until`` qualify.
        """
        ...

    async def scope_exists(self, from_machine_id: str, to_machine_id: str) -> bool:
        """Whether ``from`` may still call ``to``."""
        ...

    async def record_last_used(self, used: dict[str, int]) -> None:
        """Advance ``last_used_at`` of many tokens in one write."""
        ...
