"""The SQL stores: one transaction per call, the same code on SQLite and PostgreSQL.

Concurrency (SECURITY.md principle 9): on PostgreSQL every write that checks a rule first
locks the machine rows it is about (``FOR UPDATE``, or ``FOR NO KEY UPDATE`` for the
targets of a new machine), always in id order so that no two writers deadlock; concurrent
scope adds, rotations and deletes therefore run in some serial order. On SQLite,
``BEGIN IMMEDIATE`` serialises all writers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from gatepass_server import failpoints
from gatepass_server.domain.changes import ChangeKind
from gatepass_server.domain.instances import Instance, InstanceKey
from gatepass_server.domain.machines import (
    Machine,
    MachineListQuery,
    MachineScope,
    MachineSummary,
    OrderField,
)
from gatepass_server.domain.tokens import MACHINE_DELETED, M2MToken, TokenFormat, canonical_json
from gatepass_server.services.interfaces import (
    KeyOwner,
    NewSecret,
    ScopeOutcome,
    TokenListQuery,
)
from gatepass_server.storage.changes import change, record_changes, revoked_token_change
from gatepass_server.storage.group_commit import GroupCommit
from gatepass_server.storage.tables import (
    instance_keys,
    instances,
    m2m_tokens,
    machine_scopes,
    machine_secret_keys,
    machines,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy import ColumnElement, Row
    from sqlalchemy.ext.asyncio import AsyncConnection

    from gatepass_server.storage.database import Database

__all__ = ["SqlInstanceStore", "SqlMachineStore", "SqlTokenStore"]

_MACHINE_COLUMNS = (
    machines.c.id,
    machines.c.instance_id,
    machines.c.name,
    machines.c.default_token_ttl,
    machines.c.created_at,
    machines.c.updated_at,
)


def _live(expires_at: Any, now_ms: int) -> ColumnElement[bool]:
    return or_(expires_at.is_(None), expires_at > now_ms)


class SqlInstanceStore:
    """Instances and ``sk_`` keys."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create_instance(self, instance: Instance, key: NewSecret) -> None:
        """Store a new instance with its first key."""
        async with self._db.write() as conn:
            await conn.execute(
                insert(instances).values(
                    id=instance.id,
                    name=instance.name,
                    created_at=instance.created_at,
                ),
            )
            await _insert_instance_key(conn, instance.id, key, instance.created_at)

    async def list_instances(self) -> list[Instance]:
        """All instances, oldest first."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(instances).order_by(instances.c.created_at, instances.c.id),
            )
            return [Instance(id=r.id, name=r.name, created_at=r.created_at) for r in rows]

    async def get_instance(self, instance_id: str) -> Instance | None:
        """One instance."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(instances).where(instances.c.id == instance_id))
            ).first()
        return (
            None if row is None else Instance(id=row.id, name=row.name, created_at=row.created_at)
        )

    async def list_instance_keys(self, instance_id: str, now_ms: int) -> list[InstanceKey]:
        """The keys of an instance that still authenticate."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(instance_keys)
                .where(
                    instance_keys.c.instance_id == instance_id,
                    _live(instance_keys.c.expires_at, now_ms),
                )
                .order_by(instance_keys.c.created_at),
            )
            return [
                InstanceKey(
                    instance_id=r.instance_id,
                    hint=r.hint,
                    created_at=r.created_at,
                    expires_at=r.expires_at,
                )
                for r in rows
            ]

    async def rotate_instance_key(
        self,
        instance_id: str,
        key: NewSecret,
        now_ms: int,
        previous_expires_at: int,
    ) -> bool:
        """Add ``key``; every other live key expires at ``previous_expires_at``."""
        async with self._db.write() as conn:
            found = (
                await conn.execute(
                    select(instances.c.id).where(instances.c.id == instance_id).with_for_update(),
                )
            ).first()
            if found is None:
                return False
            await conn.execute(
                update(instance_keys)
                .where(
                    instance_keys.c.instance_id == instance_id,
                    _live(instance_keys.c.expires_at, now_ms),
                    or_(
                        instance_keys.c.expires_at.is_(None),
                        instance_keys.c.expires_at > previous_expires_at,
                    ),
                )
                .values(expires_at=previous_expires_at),
            )
            await _insert_instance_key(conn, instance_id, key, now_ms)
            await record_changes(
                conn,
                [change(instance_id, ChangeKind.INSTANCE_KEY_ROTATED, instance_id)],
                now_ms,
            )
            return True

    async def find_instance_by_key(self, digest: bytes, now_ms: int) -> KeyOwner | None:
        """The instance a live key with this digest belongs to."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(instance_keys.c.instance_id, instance_keys.c.expires_at).where(
                        instance_keys.c.digest == digest,
                        _live(instance_keys.c.expires_at, now_ms),
                    ),
                )
            ).first()
        return None if row is None else KeyOwner(row.instance_id, None, row.expires_at)


async def _insert_instance_key(
    conn: AsyncConnection,
    instance_id: str,
    key: NewSecret,
    now_ms: int,
) -> None:
    await conn.execute(
        insert(instance_keys).values(
            digest=key.digest,
            instance_id=instance_id,
            hint=key.hint,
            created_at=now_ms,
            expires_at=None,
        ),
    )


def _summary(row: Row[*tuple[Any, ...]]) -> MachineSummary:
    return MachineSummary(
        id=row.id,
        instance_id=row.instance_id,
        name=row.name,
        default_token_ttl=row.default_token_ttl,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlMachineStore:
    """Machines, scopes and ``ak_`` keys."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- reads ---------------------------------------------------------------------------

    async def list_machines(
        self,
        instance_id: str,
        query: MachineListQuery,
    ) -> tuple[list[Machine], int]:
        """One page of machines and the total count matching the query."""
        where: list[ColumnElement[bool]] = [machines.c.instance_id == instance_id]
        if query.query:
            where.append(
                or_(
                    machines.c.id == query.query,
                    machines.c.name_search.contains(query.query.casefold(), autoescape=True),
                ),
            )
        if query.order_by.field is OrderField.NAME:
            # NOTE: byte order ("C" collation) so both backends page identically.
            key: Any = (
                machines.c.name.collate("C")
                if self._db.dialect == "postgresql"
                else machines.c.name
            )
        else:
            key = machines.c.created_at
        ordering = (
            (key.desc(), machines.c.id.desc())
            if query.order_by.descending
            else (
                key.asc(),
                machines.c.id.asc(),
            )
        )
        async with self._db.read() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(machines).where(*where))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(*_MACHINE_COLUMNS)
                    .where(*where)
                    .order_by(*ordering)
                    .limit(query.limit)
                    .offset(query.offset),
                )
            ).all()
            found = await _with_scopes(conn, [_summary(r) for r in rows])
        return found, total

    async def get_machine(self, instance_id: str, machine_id: str) -> Machine | None:
        """One machine with its scoped machines."""
        async with self._db.read() as conn:
            return await _load_machine(conn, instance_id, machine_id)

    async def current_sealed_key(self, instance_id: str, machine_id: str) -> bytes | None:
        """The sealed current ``ak_`` key of a machine."""
        async with self._db.read() as conn:
            return (
                await conn.execute(
                    select(machine_secret_keys.c.sealed)
                    .join(machines, machines.c.id == machine_secret_keys.c.machine_id)
                    .where(
                        machines.c.instance_id == instance_id,
                        machines.c.id == machine_id,
                        machine_secret_keys.c.expires_at.is_(None),
                    ),
                )
            ).scalar_one_or_none()

    async def find_machine_by_key(self, digest: bytes, now_ms: int) -> KeyOwner | None:
        """The machine a live ``ak_`` key with this digest belongs to."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        machines.c.instance_id,
                        machines.c.id,
                        machine_secret_keys.c.expires_at,
                    )
                    .join(machine_secret_keys, machines.c.id == machine_secret_keys.c.machine_id)
                    .where(
                        machine_secret_keys.c.digest == digest,
                        _live(machine_secret_keys.c.expires_at, now_ms),
                    ),
                )
            ).first()
        return None if row is None else KeyOwner(row.instance_id, row.id, row.expires_at)

    # -- writes --------------------------------------------------------------------------

    async def create_machine(
        self,
        machine: MachineSummary,
        scoped_machine_ids: Sequence[str],
        key: NewSecret,
    ) -> Machine | None:
        """Create a machine, its scopes and its key atomically; ``None`` if a target is unknown."""
        targets = list(dict.fromkeys(scoped_machine_ids))
        async with self._db.write() as conn:
            if targets:
                found = (
                    await conn.execute(
                        select(machines.c.id)
                        .where(
                            machines.c.instance_id == machine.instance_id,
                            machines.c.id.in_(targets),
                        )
                        .order_by(machines.c.id)  # the lock order add_scope uses too
                        .with_for_update(key_share=True),
                    )
                ).all()
                if len(found) != len(targets):
                    return None
            await conn.execute(
                insert(machines).values(
                    id=machine.id,
                    instance_id=machine.instance_id,
                    name=machine.name,
                    name_search=machine.name.casefold(),
                    default_token_ttl=machine.default_token_ttl,
                    created_at=machine.created_at,
                    updated_at=machine.updated_at,
                ),
            )
            if targets:
                await conn.execute(
                    insert(machine_scopes),
                    [
                        {
                            "from_machine_id": machine.id,
                            "to_machine_id": target,
                            "created_at": machine.created_at,
                        }
                        for target in targets
                    ],
                )
            await _insert_machine_key(conn, machine.id, key, machine.created_at)
            return await _load_machine(conn, machine.instance_id, machine.id)

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
        values: dict[str, Any] = {"updated_at": now_ms}
        if name is not None:
            values["name"] = name
            values["name_search"] = name.casefold()
        if default_token_ttl is not None:
            values["default_token_ttl"] = default_token_ttl
        async with self._db.write() as conn:
            result = await conn.execute(
                update(machines)
                .where(machines.c.instance_id == instance_id, machines.c.id == machine_id)
                .values(**values),
            )
            if result.rowcount == 0:
                return None
            if default_token_ttl is not None:  # what minting reads, through the cache
                await record_changes(
                    conn, [change(instance_id, ChangeKind.MACHINE_UPDATED, machine_id)], now_ms
                )
            return await _load_machine(conn, instance_id, machine_id)

    async def delete_machine(self, instance_id: str, machine_id: str, *, now_ms: int) -> bool:
        """Delete a machine, its scopes (both ways) and keys; revoke its live tokens."""
        async with self._db.write() as conn:
            if not await _lock_machine(conn, instance_id, machine_id):
                return False
            revoked = await conn.execute(
                update(m2m_tokens)
                .where(
                    m2m_tokens.c.instance_id == instance_id,
                    m2m_tokens.c.subject == machine_id,
                    m2m_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now_ms, revocation_reason=MACHINE_DELETED, updated_at=now_ms)
                .returning(m2m_tokens.c.id, m2m_tokens.c.scopes, m2m_tokens.c.expiration),
            )
            logged = [
                revoked_token_change(instance_id, r.id, machine_id, r.scopes, r.expiration)
                for r in revoked
                if r.expiration > now_ms
            ]
            await conn.execute(
                delete(machine_scopes).where(
                    or_(
                        machine_scopes.c.from_machine_id == machine_id,
                        machine_scopes.c.to_machine_id == machine_id,
                    ),
                ),
            )
            await conn.execute(
                delete(machine_secret_keys).where(machine_secret_keys.c.machine_id == machine_id),
            )
            await conn.execute(delete(machines).where(machines.c.id == machine_id))
            logged.append(change(instance_id, ChangeKind.MACHINE_DELETED, machine_id))
            await record_changes(conn, logged, now_ms)
            return True

    async def rotate_machine_key(
        self,
        instance_id: str,
        machine_id: str,
        key: NewSecret,
        *,
        now_ms: int,
        previous_expires_at: int,
    ) -> bool:
        """Make ``key`` current; older live keys expire at ``previous_expires_at`` at the latest."""
        async with self._db.write() as conn:
            if not await _lock_machine(conn, instance_id, machine_id):
                return False
            # Keys whose grace is over are of no use to anyone: drop them.
            await conn.execute(
                delete(machine_secret_keys).where(
                    machine_secret_keys.c.machine_id == machine_id,
                    machine_secret_keys.c.expires_at <= now_ms,
                ),
            )
            await conn.execute(
                update(machine_secret_keys)
                .where(
                    machine_secret_keys.c.machine_id == machine_id,
                    or_(
                        machine_secret_keys.c.expires_at.is_(None),
                        machine_secret_keys.c.expires_at > previous_expires_at,
                    ),
                )
                .values(expires_at=previous_expires_at),
            )
            await _insert_machine_key(conn, machine_id, key, now_ms)
            await record_changes(
                conn,
                [change(instance_id, ChangeKind.MACHINE_KEY_ROTATED, machine_id)],
                now_ms,
            )
            return True

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
        async with self._db.write() as conn:
            # NOTE: both machines are locked by one statement in id order: locking `from`
            # first and `to` second deadlocked on PostgreSQL when a→b and b→a were added at
            # once (SECURITY.md principle 9).
            locked = set(
                (
                    await conn.execute(
                        select(machines.c.id)
                        .where(
                            machines.c.instance_id == instance_id,
                            machines.c.id.in_([from_machine_id, to_machine_id]),
                        )
                        .order_by(machines.c.id)
                        .with_for_update(),
                    )
                ).scalars(),
            )
            if from_machine_id not in locked:
                return ScopeOutcome.FROM_MISSING, None
            if to_machine_id not in locked:
                return ScopeOutcome.TO_MISSING, None
            pair = and_(
                machine_scopes.c.from_machine_id == from_machine_id,
                machine_scopes.c.to_machine_id == to_machine_id,
            )
            if (await conn.execute(select(machine_scopes.c.created_at).where(pair))).first():
                return ScopeOutcome.EXISTS, None
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(machine_scopes)
                    .where(machine_scopes.c.from_machine_id == from_machine_id),
                )
            ).scalar_one()
            if count >= limit:
                return ScopeOutcome.LIMIT_REACHED, None
            try:
                await conn.execute(
                    insert(machine_scopes).values(
                        from_machine_id=from_machine_id,
                        to_machine_id=to_machine_id,
                        created_at=now_ms,
                    ),
                )
            except IntegrityError:  # pragma: no cover - the row lock above prevents it
                return ScopeOutcome.EXISTS, None
            await record_changes(
                conn,
                [change(instance_id, ChangeKind.SCOPE_ADDED, from_machine_id, to_machine_id)],
                now_ms,
            )
            return ScopeOutcome.DONE, MachineScope(from_machine_id, to_machine_id, now_ms)

    async def remove_scope(
        self,
        instance_id: str,
        from_machine_id: str,
        to_machine_id: str,
        *,
        now_ms: int,
    ) -> ScopeOutcome:
        """Remove a scope."""
        async with self._db.write() as conn:
            if not await _lock_machine(conn, instance_id, from_machine_id):
                return ScopeOutcome.FROM_MISSING
            result = await conn.execute(
                delete(machine_scopes).where(
                    machine_scopes.c.from_machine_id == from_machine_id,
                    machine_scopes.c.to_machine_id == to_machine_id,
                ),
            )
            if not result.rowcount:
                return ScopeOutcome.ABSENT
            await record_changes(
                conn,
                [change(instance_id, ChangeKind.SCOPE_REMOVED, from_machine_id, to_machine_id)],
                now_ms,
            )
            return ScopeOutcome.DONE


async def _lock_machine(
    conn: AsyncConnection,
    instance_id: str,
    machine_id: str,
    *,
    share: bool = False,
) -> bool:
    """Lock a machine's row (``FOR UPDATE``, or ``FOR SHARE``); ``False`` if it is gone."""
    row = (
        await conn.execute(
            select(machines.c.id)
            .where(machines.c.instance_id == instance_id, machines.c.id == machine_id)
            .with_for_update(read=share),
        )
    ).first()
    return row is not None


async def _insert_machine_key(
    conn: AsyncConnection,
    machine_id: str,
    key: NewSecret,
    now_ms: int,
) -> None:
    await conn.execute(
        insert(machine_secret_keys).values(
            digest=key.digest,
            machine_id=machine_id,
            sealed=key.sealed,
            created_at=now_ms,
            expires_at=None,
        ),
    )


async def _load_machine(conn: AsyncConnection, instance_id: str, machine_id: str) -> Machine | None:
    row = (
        await conn.execute(
            select(*_MACHINE_COLUMNS).where(
                machines.c.instance_id == instance_id,
                machines.c.id == machine_id,
            ),
        )
    ).first()
    if row is None:
        return None
    return (await _with_scopes(conn, [_summary(row)]))[0]


async def _with_scopes(conn: AsyncConnection, summaries: Iterable[MachineSummary]) -> list[Machine]:
    """Attach ``scoped_machines`` to each machine with one query for the whole page."""
    page = list(summaries)
    if not page:
        return []
    rows = await conn.execute(
        select(machine_scopes.c.from_machine_id, *_MACHINE_COLUMNS)
        .join(machines, machines.c.id == machine_scopes.c.to_machine_id)
        .where(machine_scopes.c.from_machine_id.in_([m.id for m in page]))
        .order_by(machine_scopes.c.created_at, machines.c.id),
    )
    scoped: dict[str, list[MachineSummary]] = {}
    for row in rows:
        scoped.setdefault(row.from_machine_id, []).append(_summary(row))
    return [
        Machine(
            id=m.id,
            instance_id=m.instance_id,
            name=m.name,
            default_token_ttl=m.default_token_ttl,
            created_at=m.created_at,
            updated_at=m.updated_at,
            scoped_machines=tuple(scoped.get(m.id, ())),
        )
        for m in page
    ]


_TOKEN_COLUMNS = (
    m2m_tokens.c.id,
    m2m_tokens.c.instance_id,
    m2m_tokens.c.subject,
    m2m_tokens.c.token_format,
    m2m_tokens.c.claims,
    m2m_tokens.c.scopes,
    m2m_tokens.c.expiration,
    m2m_tokens.c.revoked_at,
    m2m_tokens.c.revocation_reason,
    m2m_tokens.c.last_used_at,
    m2m_tokens.c.created_at,
    m2m_tokens.c.updated_at,
)


def _token(row: Any) -> M2MToken:  # a Row of _TOKEN_COLUMNS
    return M2MToken(
        id=row.id,
        instance_id=row.instance_id,
        subject=row.subject,
        token_format=TokenFormat(row.token_format),
        claims=None if row.claims is None else json.loads(row.claims),
        scopes=tuple(json.loads(row.scopes)),
        expiration=row.expiration,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
        last_used_at=row.last_used_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_LAST_USED_CHUNK: Final = 1_000
"""``last_used_at`` updates per transaction: short enough not to stall minting."""


@dataclass(frozen=True, slots=True)
class _NewToken:
    token: M2MToken
    digest: bytes | None
    sealed: bytes | None
    kid: str | None


def _token_row(new: _NewToken) -> dict[str, Any]:
    token = new.token
    return {
        "id": token.id,
        "instance_id": token.instance_id,
        "subject": token.subject,
        "token_format": token.token_format.value,
        "digest": new.digest,
        "sealed": new.sealed,
        "kid": new.kid,
        "claims": None if token.claims is None else canonical_json(token.claims),
        "scopes": canonical_json(list(token.scopes)),
        "expiration": token.expiration,
        "revoked_at": None,
        "revocation_reason": None,
        "last_used_at": None,
        "created_at": token.created_at,
        "updated_at": token.updated_at,
    }


class SqlTokenStore:
    """M2M token records."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._inserts = GroupCommit(self._insert_batch)

    async def insert_token(
        self,
        token: M2MToken,
        *,
        digest: bytes | None,
        sealed: bytes | None,
        kid: str | None,
    ) -> bool:
        """Store a new token; committed when this returns.

        ``False``, and nothing stored, if the token's machine no longer exists. Concurrent
        inserts share a transaction (:mod:`gatepass_server.storage.group_commit`).
        """
        return await self._inserts.submit(_NewToken(token, digest, sealed, kid))

    async def _insert_batch(self, batch: Sequence[_NewToken]) -> list[bool]:
        async with self._db.write() as conn:
            # NOTE: each machine is checked in the inserting transaction, under a share lock
            # that a concurrent delete (FOR UPDATE) must wait for. Checked only before it,
            # a delete committing in between would leave a live token of a deleted machine
            # (SECURITY.md principle 9: delete-while-minting). Locks are taken in id order.
            owners = sorted({(new.token.instance_id, new.token.subject) for new in batch})
            alive = {owner for owner in owners if await _lock_machine(conn, *owner, share=True)}
            stored = [(new.token.instance_id, new.token.subject) in alive for new in batch]
            rows = [_token_row(new) for new, keep in zip(batch, stored, strict=True) if keep]
            if rows:
                await conn.execute(insert(m2m_tokens), rows)
            failpoints.hit("token_insert_before_commit")
            return stored

    async def token_by_digest(self, digest: bytes) -> M2MToken | None:
        """The opaque token with this secret digest, in any instance."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(*_TOKEN_COLUMNS).where(m2m_tokens.c.digest == digest))
            ).first()
        return None if row is None else _token(row)

    async def get_token(self, instance_id: str, token_id: str) -> M2MToken | None:
        """One token of an instance."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(*_TOKEN_COLUMNS).where(
                        m2m_tokens.c.instance_id == instance_id,
                        m2m_tokens.c.id == token_id,
                    ),
                )
            ).first()
        return None if row is None else _token(row)

    async def list_tokens(
        self,
        instance_id: str,
        query: TokenListQuery,
        now_ms: int,
    ) -> tuple[list[M2MToken], int]:
        """A page of one subject's tokens, newest first, and the total matching."""
        # NOTE: JWT-format tokens are not listed (CONTRACT.md §4; the Python SDK's
        # list_tokens: "Only tokens created with the opaque token format are returned").
        where: list[ColumnElement[bool]] = [
            m2m_tokens.c.instance_id == instance_id,
            m2m_tokens.c.subject == query.subject,
            m2m_tokens.c.token_format == TokenFormat.OPAQUE.value,
        ]
        if not query.include_revoked:
            where.append(m2m_tokens.c.revoked_at.is_(None))
        if not query.include_expired:
            where.append(m2m_tokens.c.expiration > now_ms)
        async with self._db.read() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(m2m_tokens).where(*where))
            ).scalar_one()
            rows = await conn.execute(
                select(*_TOKEN_COLUMNS)
                .where(*where)
                .order_by(m2m_tokens.c.created_at.desc(), m2m_tokens.c.id.desc())
                .limit(query.limit)
                .offset(query.offset),
            )
            return [_token(r) for r in rows], total

    async def revoke_token(
        self,
        instance_id: str,
        token_id: str,
        *,
        reason: str | None,
        now_ms: int,
    ) -> M2MToken | None:
        """Revoke once; a second revoke keeps the first time and reason."""
        async with self._db.write() as conn:
            revoked = (
                await conn.execute(
                    update(m2m_tokens)
                    .where(
                        m2m_tokens.c.instance_id == instance_id,
                        m2m_tokens.c.id == token_id,
                        m2m_tokens.c.revoked_at.is_(None),
                    )
                    .values(revoked_at=now_ms, revocation_reason=reason, updated_at=now_ms)
                    .returning(m2m_tokens.c.subject, m2m_tokens.c.scopes, m2m_tokens.c.expiration),
                )
            ).first()
            if revoked is not None:
                await record_changes(
                    conn,
                    [
                        revoked_token_change(
                            instance_id,
                            token_id,
                            revoked.subject,
                            revoked.scopes,
                            revoked.expiration,
                        ),
                    ],
                    now_ms,
                )
            row = (
                await conn.execute(
                    select(*_TOKEN_COLUMNS).where(
                        m2m_tokens.c.instance_id == instance_id,
                        m2m_tokens.c.id == token_id,
                    ),
                )
            ).first()
        return None if row is None else _token(row)

    async def reusable_token(
        self,
        instance_id: str,
        subject: str,
        *,
        claims: str | None,
        scopes: str,
        live_until: int,
    ) -> tuple[M2MToken, bytes] | None:
        """The longest-lived reusable opaque token with these claims and scopes."""
        same_claims = (
            m2m_tokens.c.claims.is_(None) if claims is None else m2m_tokens.c.claims == claims
        )
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(*_TOKEN_COLUMNS, m2m_tokens.c.sealed)
                    .where(
                        m2m_tokens.c.instance_id == instance_id,
                        m2m_tokens.c.subject == subject,
                        m2m_tokens.c.token_format == TokenFormat.OPAQUE.value,
                        m2m_tokens.c.sealed.is_not(None),
                        m2m_tokens.c.revoked_at.is_(None),
                        m2m_tokens.c.expiration > live_until,
                        m2m_tokens.c.scopes == scopes,
                        same_claims,
                    )
                    .order_by(m2m_tokens.c.expiration.desc())
                    .limit(1),
                )
            ).first()
        return None if row is None else (_token(row), row.sealed)

    async def scope_exists(self, from_machine_id: str, to_machine_id: str) -> bool:
        """Whether ``from`` may still call ``to``."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(machine_scopes.c.created_at).where(
                        machine_scopes.c.from_machine_id == from_machine_id,
                        machine_scopes.c.to_machine_id == to_machine_id,
                    ),
                )
            ).first()
        return row is not None

    async def record_last_used(self, used: dict[str, int]) -> None:
        """Advance ``last_used_at`` (never backwards) of many tokens.

        One statement executed for a chunk of rows per transaction: a statement per token
        would hold SQLite's write lock, which minting waits for, across thousands of
        round trips.
        """
        if not used:
            return
        statement = (
            update(m2m_tokens)
            .where(
                m2m_tokens.c.id == bindparam("token_id"),
                or_(
                    m2m_tokens.c.last_used_at.is_(None),
                    m2m_tokens.c.last_used_at < bindparam("at"),
                ),
            )
            .values(last_used_at=bindparam("at"))
        )
        rows = [{"token_id": token_id, "at": at} for token_id, at in sorted(used.items())]
        for start in range(0, len(rows), _LAST_USED_CHUNK):
            async with self._db.write() as conn:
                await conn.execute(statement, rows[start : start + _LAST_USED_CHUNK])
