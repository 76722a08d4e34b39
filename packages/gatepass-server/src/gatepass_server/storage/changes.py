"""The change log in SQL: append inside a write, read after a cursor, prune.

Ids must become visible in order, or a reader could see id 11, move its cursor past 10,
and miss 10 when it commits. SQLite serialises every writer already; on PostgreSQL each
appending transaction first takes one transaction-scoped advisory lock, so ids are
allocated and committed one transaction at a time. The lock is always the last one a
writer takes, so it cannot be part of a deadlock.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import delete, func, insert, select, text

from gatepass_server.domain.changes import (
    NON_TOKEN_RETENTION_MS,
    Change,
    ChangeKind,
    Revocation,
    RevocationPage,
)
from gatepass_server.storage.database import CHANGED
from gatepass_server.storage.tables import changes

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.ext.asyncio import AsyncConnection

    from gatepass_server.storage.database import Database

__all__ = ["NOTIFY_CHANNEL", "SqlChangeStore", "change", "record_changes", "revoked_token_change"]

NOTIFY_CHANNEL: Final = "gatepass_changes"
"""The PostgreSQL NOTIFY channel (and Redis pub/sub channel) that wakes followers."""

_CHANGE_LOG_LOCK: Final = 0x6761746570617374  # any constant of our own


def revoked_token_change(
    instance_id: str,
    token_id: str,
    subject: str,
    scopes_json: str,
    expiration: int,
) -> dict[str, Any]:
    """The log row of one revoked token; it lives as long as the token could verify."""
    return {
        "instance_id": instance_id,
        "kind": ChangeKind.TOKEN_REVOKED.value,
        "subject": token_id,
        "target": subject,
        "scopes": scopes_json,
        "expires_at": expiration,
    }


def change(
    instance_id: str, kind: ChangeKind, subject: str, target: str | None = None
) -> dict[str, Any]:
    """The log row of a change that only followers' caches care about."""
    return {
        "instance_id": instance_id,
        "kind": kind.value,
        "subject": subject,
        "target": target,
        "scopes": None,
        "expires_at": None,
    }


async def record_changes(
    conn: AsyncConnection, rows: Iterable[dict[str, Any]], now_ms: int
) -> None:
    """Append ``rows`` inside the caller's write transaction and wake every follower."""
    values = [
        {
            **row,
            "created_at": now_ms,
            "expires_at": row["expires_at"] or now_ms + NON_TOKEN_RETENTION_MS,
        }
        for row in rows
    ]
    if not values:
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_LOG_LOCK})
    await conn.execute(insert(changes), values)
    if conn.dialect.name == "postgresql":
        # Delivered to listeners on commit, and not at all on rollback.
        await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    conn.info[CHANGED] = True


def _kind(value: str) -> ChangeKind | None:
    try:
        return ChangeKind(value)
    except ValueError:  # written by a newer release
        return None


class SqlChangeStore:
    """Reads of the change log."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def last_id(self) -> int:
        """The newest entry's id (0 for an empty log)."""
        async with self._db.read() as conn:
            return int((await conn.execute(select(func.max(changes.c.id)))).scalar_one() or 0)

    async def changes_after(self, cursor: int, limit: int) -> list[Change]:
        """Up to ``limit`` entries after ``cursor``, oldest first."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(
                    changes.c.id,
                    changes.c.instance_id,
                    changes.c.kind,
                    changes.c.subject,
                    changes.c.target,
                )
                .where(changes.c.id > cursor)
                .order_by(changes.c.id)
                .limit(limit),
            )
            return [
                Change(
                    id=r.id,
                    instance_id=r.instance_id,
                    kind=_kind(r.kind),
                    subject=r.subject,
                    target=r.target,
                )
                for r in rows
            ]

    async def revocations_after(
        self,
        instance_id: str,
        cursor: int,
        *,
        limit: int,
        now_ms: int,
    ) -> RevocationPage:
        """An instance's revocations of unexpired tokens after ``cursor``, oldest first."""
        async with self._db.read() as conn:
            # NOTE: the log's end is read first, and rows only up to it. Ids commit in order,
            # so everything up to it is visible; read after the rows instead, it could take
            # in (and let the cursor skip) a revocation committed between the two statements,
            # as each statement of a PostgreSQL READ COMMITTED transaction sees anew.
            newest = int((await conn.execute(select(func.max(changes.c.id)))).scalar_one() or 0)
            rows = (
                await conn.execute(
                    select(
                        changes.c.id,
                        changes.c.subject,
                        changes.c.target,
                        changes.c.scopes,
                        changes.c.created_at,
                        changes.c.expires_at,
                    )
                    .where(
                        changes.c.instance_id == instance_id,
                        changes.c.kind == ChangeKind.TOKEN_REVOKED.value,
                        changes.c.id > cursor,
                        changes.c.id <= newest,
                    )
                    .order_by(changes.c.id)
                    .limit(limit + 1),
                )
            ).all()
        has_more = len(rows) > limit
        rows = rows[:limit]
        # With nothing more for this instance up to the log's end, the cursor moves there.
        next_cursor = rows[-1].id if has_more else max(cursor, newest)
        revocations = tuple(
            Revocation(
                token_id=r.subject,
                subject=r.target,
                scopes=tuple(json.loads(r.scopes or "[]")),
                revoked_at=r.created_at,
                expiration=r.expires_at,
            )
            for r in rows
            if r.expires_at > now_ms
        )
        return RevocationPage(revocations, next_cursor, has_more)

    async def prune(self, now_ms: int) -> int:
        """Drop entries nobody needs any more; return how many."""
        # NOTE: background housekeeping over possibly many rows: not bound by the deadline
        # meant for requests (the driver's command timeout still is).
        async with self._db.write(deadline=None) as conn:
            result = await conn.execute(delete(changes).where(changes.c.expires_at <= now_ms))
            return int(result.rowcount or 0)
