"""The change log: what other nodes' caches and local JWT verifiers must learn about.

Every write that can turn a "yes" into a "no" (a revoked token, a deleted machine, a
rotated key, a removed scope) appends a :class:`Change` in the same transaction. Nodes
follow the log to invalidate their verification caches; the revocation feed (CONTRACT.md
§7) serves its ``token_revoked`` entries to SDKs that verify JWTs locally.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = ["NON_TOKEN_RETENTION_MS", "Change", "ChangeKind", "Revocation", "RevocationPage"]

NON_TOKEN_RETENTION_MS: Final = 24 * 60 * 60 * 1000
"""How long entries that are not token revocations stay in the log (cache sync only)."""


class ChangeKind(Enum):
    """What happened; ``subject`` and ``target`` are read according to the kind."""

    TOKEN_REVOKED = "token_revoked"  # noqa: S105 - a name; subject: token id, target: machine  # nosec B105
    MACHINE_DELETED = "machine_deleted"  # subject: machine id
    MACHINE_UPDATED = "machine_updated"  # subject: machine id (its default token lifetime)
    MACHINE_KEY_ROTATED = "machine_key_rotated"  # subject: machine id
    INSTANCE_KEY_ROTATED = "instance_key_rotated"  # subject: instance id
    SCOPE_ADDED = "scope_added"  # subject: from machine; target: to machine
    SCOPE_REMOVED = "scope_removed"  # subject: from machine; target: to machine
    SIGNING_KEY_ROTATED = "signing_key_rotated"  # subject: instance id


@dataclass(frozen=True, slots=True)
class Change:
    """One log entry. ``kind`` is ``None`` for a kind this release does not know."""

    id: int
    instance_id: str
    kind: ChangeKind | None
    subject: str
    target: str | None


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked token, as the revocation feed shows it (no secret, only the handle)."""

    token_id: str
    subject: str
    scopes: tuple[str, ...]
    revoked_at: int
    expiration: int


@dataclass(frozen=True, slots=True)
class RevocationPage:
    """Revocations after a cursor, the cursor to ask from next, and whether more wait."""

    revocations: tuple[Revocation, ...]
    cursor: int
    has_more: bool
