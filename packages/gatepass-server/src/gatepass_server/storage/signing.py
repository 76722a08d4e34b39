"""The ``signing_keys`` store: one transaction per call, the same code on both backends.

Concurrency (SECURITY.md principle 9): every write first locks the instance row
(``FOR UPDATE`` on PostgreSQL; on SQLite ``BEGIN IMMEDIATE`` already serialises writers)
and then looks at the active key again, so concurrent first signs and rotations run in
some serial order and an instance never ends up with two active keys.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, insert, or_, select, update

from gatepass_server.domain.changes import ChangeKind
from gatepass_server.services.signing import StoredSigningKey
from gatepass_server.storage.changes import change, record_changes
from gatepass_server.storage.tables import instances, m2m_tokens, signing_keys

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.ext.asyncio import AsyncConnection

    from gatepass_server.storage.database import Database

__all__ = ["SqlSigningKeyStore"]


def _key(row: Row[Any]) -> StoredSigningKey:
    return StoredSigningKey(
        kid=row.kid,
        instance_id=row.instance_id,
        algorithm=row.algorithm,
        sealed_private_key=row.sealed_private_key,
        public_jwk=json.loads(row.public_jwk),
        created_at=row.created_at,
        retired_at=row.retired_at,
    )


class SqlSigningKeyStore:
    """RS256 signing keys of each instance: one active, older ones retired."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def active_key(self, instance_id: str) -> StoredSigningKey | None:
        """The key an instance signs with now, if it has one."""
        async with self._db.read() as conn:
            return await _active(conn, instance_id)

    async def ensure_active_key(self, key: StoredSigningKey) -> StoredSigningKey | None:
        """Store ``key`` unless the instance already has an active key; return the winner.

        ``None`` if the instance does not exist.
        """
        async with self._db.write() as conn:
            if not await _lock_instance(conn, key.instance_id):
                return None
            # Re-checked under the lock: whoever got here first made the key.
            current = await _active(conn, key.instance_id)
            if current is not None:
                return current
            await _insert(conn, key)
            # The JWKS changed (from nothing): followers must not keep the empty one.
            await record_changes(
                conn,
                [change(key.instance_id, ChangeKind.SIGNING_KEY_ROTATED, key.instance_id)],
                key.created_at,
            )
            return key

    async def add_key(self, key: StoredSigningKey, *, now_ms: int) -> bool:
        """Make ``key`` active and retire the previous one; ``False`` if no such instance."""
        async with self._db.write() as conn:
            if not await _lock_instance(conn, key.instance_id):
                return False
            await conn.execute(
                update(signing_keys)
                .where(
                    signing_keys.c.instance_id == key.instance_id,
                    signing_keys.c.retired_at.is_(None),
                )
                .values(retired_at=now_ms),
            )
            await _insert(conn, key)
            await record_changes(
                conn,
                [change(key.instance_id, ChangeKind.SIGNING_KEY_ROTATED, key.instance_id)],
                now_ms,
            )
            return True

    async def published_keys(self, instance_id: str, now_ms: int) -> list[StoredSigningKey]:
        """The active key, then each retired key that signed a token not yet expired."""
        # NOTE: a retired key stays published while any token it signed can still pass
        # a verifier's exp check; dropping it earlier would break those tokens.
        signed_live_token = exists().where(
            m2m_tokens.c.kid == signing_keys.c.kid,
            m2m_tokens.c.expiration > now_ms,
        )
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(signing_keys).where(
                        signing_keys.c.instance_id == instance_id,
                        or_(signing_keys.c.retired_at.is_(None), signed_live_token),
                    ),
                )
            ).all()
        keys = [_key(row) for row in rows]
        keys.sort(key=lambda k: (k.retired_at is not None, -k.created_at, k.kid))
        return keys


async def _lock_instance(conn: AsyncConnection, instance_id: str) -> bool:
    row = (
        await conn.execute(
            select(instances.c.id).where(instances.c.id == instance_id).with_for_update(),
        )
    ).first()
    return row is not None


async def _active(conn: AsyncConnection, instance_id: str) -> StoredSigningKey | None:
    row = (
        await conn.execute(
            select(signing_keys)
            .where(
                signing_keys.c.instance_id == instance_id,
                signing_keys.c.retired_at.is_(None),
            )
            # Never more than one; should that ever break, the newest signs.
            .order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid)
            .limit(1),
        )
    ).first()
    return None if row is None else _key(row)


async def _insert(conn: AsyncConnection, key: StoredSigningKey) -> None:
    await conn.execute(
        insert(signing_keys).values(
            kid=key.kid,
            instance_id=key.instance_id,
            algorithm=key.algorithm,
            sealed_private_key=key.sealed_private_key,
            public_jwk=json.dumps(key.public_jwk, separators=(",", ":"), sort_keys=True),
            created_at=key.created_at,
            retired_at=key.retired_at,
        ),
    )
