"""The change log on real SQLite and PostgreSQL: what each write records, and how it is read.

Writes go through the runtime's services, as a request would make them; the log is read
with :class:`SqlChangeStore`. Ids are compared to each other, never to literals: the
PostgreSQL sequence is not reset between tests.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from sqlalchemy import event, select
from sqlalchemy.util import await_only

from gatepass_server.domain.changes import NON_TOKEN_RETENTION_MS, Change, ChangeKind, Revocation
from gatepass_server.domain.tokens import TokenFormat
from gatepass_server.errors import Conflict, NotFound
from gatepass_server.services.auth import InstancePrincipal, MachinePrincipal
from gatepass_server.storage.changes import (
    SqlChangeStore,
    change,
    record_changes,
    revoked_token_change,
)
from gatepass_server.storage.database import Database
from gatepass_server.storage.tables import changes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime
    from gatepass_server.services.tokens import CreatedToken

Entry = tuple[str, ChangeKind | None, str, str | None]
"""A change without its id: (instance, kind, subject, target)."""


@dataclass
class Env:
    """The runtime whose services write, the log reader, and the default instance."""

    runtime: Runtime
    clock: FixedClock
    log: SqlChangeStore
    instance_id: str

    @property
    def admin(self) -> InstancePrincipal:
        """The default instance's ``sk_`` caller."""
        return InstancePrincipal(self.instance_id)


@pytest.fixture
async def env(runtime: Runtime, clock: FixedClock) -> Env:
    """The runtime's services over a clean database, and a reader of its change log."""
    return Env(
        runtime=runtime,
        clock=clock,
        log=SqlChangeStore(runtime.database),
        instance_id=(await runtime.instances.default()).id,
    )


@pytest.fixture
async def after_change_calls(env: Env) -> AsyncIterator[list[int]]:
    """Record each ``after_change`` call as the log's last id another connection sees then.

    The runtime's own hook (the follower) still runs after the recording.
    """
    database = env.runtime.database
    original = database.after_change
    calls: list[int] = []

    async def recorder() -> None:
        calls.append(await env.log.last_id())
        if original is not None:
            await original()

    database.after_change = recorder
    yield calls
    database.after_change = original


@pytest.fixture
async def other_node(runtime: Runtime) -> AsyncIterator[Database]:
    """A second engine on the same database, like another server process."""
    database = Database(runtime.database.url)
    yield database
    await database.dispose()


async def _machine(env: Env, name: str = "machine", *, scoped: Sequence[str] = ()) -> str:
    created = await env.runtime.machines.create(
        env.instance_id, name=name, scoped_machine_ids=scoped
    )
    return created.machine.id


async def _mint(
    env: Env,
    machine_id: str,
    *,
    token_format: TokenFormat = TokenFormat.OPAQUE,
    seconds: float | None = None,
    instance_id: str | None = None,
) -> CreatedToken:
    return await env.runtime.tokens.create(
        MachinePrincipal(instance_id or env.instance_id, machine_id),
        token_format=token_format,
        seconds_until_expiration=seconds,
        claims=None,
        min_remaining_ttl_seconds=None,
    )


async def _revoke(env: Env, token: CreatedToken) -> None:
    await env.runtime.tokens.revoke(env.admin, token.token.id, None)


async def _after(env: Env, cursor: int) -> list[Change]:
    """Every entry after ``cursor``."""
    return await env.log.changes_after(cursor, 10_000)


def _entries(found: Iterable[Change]) -> list[Entry]:
    return [(c.instance_id, c.kind, c.subject, c.target) for c in found]


async def _recorded_after(env: Env, cursor: int) -> list[Entry]:
    return _entries(await _after(env, cursor))


async def _rows(env: Env, cursor: int) -> list[Any]:
    """The raw log rows after ``cursor``, with the columns Change leaves out."""
    async with env.runtime.database.read() as conn:
        return list(
            (
                await conn.execute(
                    select(changes).where(changes.c.id > cursor).order_by(changes.c.id),
                )
            ).all(),
        )


# -- what each write records ---------------------------------------------------------------


async def test_the_log_starts_empty(env: Env) -> None:
    """A new database's log has no entries and its last id is 0."""
    assert await env.log.last_id() == 0
    assert await _after(env, 0) == []


async def test_revoking_a_token_records_one_token_revoked(env: Env) -> None:
    """A revoke appends token_revoked naming the token and its machine, kept until expiry."""
    receiver = await _machine(env, "receiver")
    caller = await _machine(env, "caller", scoped=[receiver])
    token = await _mint(env, caller)
    cursor = await env.log.last_id()
    env.clock.advance(5)
    await _revoke(env, token)
    assert await _recorded_after(env, cursor) == [
        (env.instance_id, ChangeKind.TOKEN_REVOKED, token.token.id, caller),
    ]
    (row,) = await _rows(env, cursor)
    assert json.loads(row.scopes) == [receiver]
    assert row.created_at == env.clock.now_ms()
    assert row.expires_at == token.token.expiration
    assert await env.log.last_id() == row.id


async def test_a_second_revoke_records_nothing(env: Env) -> None:
    """Revoking an already revoked token appends no entry."""
    token = await _mint(env, await _machine(env))
    await _revoke(env, token)
    cursor = await env.log.last_id()
    env.clock.advance(5)
    await _revoke(env, token)
    assert await _after(env, cursor) == []


async def test_deleting_a_machine_records_its_unexpired_revocations_then_the_deletion(
    env: Env,
) -> None:
    """Three live tokens and an expired one: three token_revoked, then machine_deleted."""
    machine = await _machine(env)
    partner = await _machine(env, "partner", scoped=[machine])
    expired = await _mint(env, machine, seconds=1)
    live = [await _mint(env, machine, seconds=3600) for _ in range(3)]
    env.clock.advance(1000)  # `expired` expires exactly now
    cursor = await env.log.last_id()
    await env.runtime.machines.delete(env.instance_id, machine)
    recorded = await _recorded_after(env, cursor)
    assert sorted(recorded[:3]) == sorted(
        (env.instance_id, ChangeKind.TOKEN_REVOKED, t.token.id, machine) for t in live
    )
    assert recorded[3:] == [(env.instance_id, ChangeKind.MACHINE_DELETED, machine, None)]
    assert expired.token.id not in {subject for _, _, subject, _ in recorded}
    assert partner not in {subject for _, _, subject, _ in recorded}  # no scope_removed


async def test_deleting_a_machine_does_not_log_a_token_revoked_before(env: Env) -> None:
    """A token revoked earlier already has its entry: the delete does not add another."""
    machine = await _machine(env)
    revoked = await _mint(env, machine)
    live = await _mint(env, machine)
    await _revoke(env, revoked)
    cursor = await env.log.last_id()
    await env.runtime.machines.delete(env.instance_id, machine)
    assert await _recorded_after(env, cursor) == [
        (env.instance_id, ChangeKind.TOKEN_REVOKED, live.token.id, machine),
        (env.instance_id, ChangeKind.MACHINE_DELETED, machine, None),
    ]


async def test_deleting_a_machine_without_tokens_records_only_the_deletion(env: Env) -> None:
    """No tokens: the one entry is machine_deleted."""
    machine = await _machine(env)
    await env.runtime.machines.delete(env.instance_id, machine)
    assert await _recorded_after(env, 0) == [
        (env.instance_id, ChangeKind.MACHINE_DELETED, machine, None),
    ]


async def test_deleting_an_unknown_machine_records_nothing(env: Env) -> None:
    """A delete that finds nothing appends nothing."""
    with pytest.raises(NotFound):
        await env.runtime.machines.delete(env.instance_id, "mch_" + "0" * 27)
    assert await _after(env, 0) == []


async def test_rotating_a_machine_key_records_machine_key_rotated(env: Env) -> None:
    """A machine key rotation appends machine_key_rotated naming the machine."""
    machine = await _machine(env)
    await env.runtime.machines.rotate_secret_key(env.instance_id, machine, previous_token_ttl=60)
    assert await _recorded_after(env, 0) == [
        (env.instance_id, ChangeKind.MACHINE_KEY_ROTATED, machine, None),
    ]


async def test_rotating_an_instance_key_records_instance_key_rotated(env: Env) -> None:
    """An instance key rotation appends instance_key_rotated naming the instance."""
    await env.runtime.instances.rotate_key(env.instance_id, grace_seconds=60)
    assert await _recorded_after(env, 0) == [
        (env.instance_id, ChangeKind.INSTANCE_KEY_ROTATED, env.instance_id, None),
    ]


async def test_adding_a_scope_records_scope_added(env: Env) -> None:
    """A new scope appends scope_added: subject the caller, target the callee."""
    caller = await _machine(env, "caller")
    callee = await _machine(env, "callee")
    await env.runtime.machines.add_scope(env.instance_id, caller, callee)
    assert await _recorded_after(env, 0) == [
        (env.instance_id, ChangeKind.SCOPE_ADDED, caller, callee),
    ]


async def test_adding_an_existing_scope_records_nothing(env: Env) -> None:
    """A refused scope add (it exists) appends nothing."""
    callee = await _machine(env, "callee")
    caller = await _machine(env, "caller", scoped=[callee])
    with pytest.raises(Conflict):
        await env.runtime.machines.add_scope(env.instance_id, caller, callee)
    assert await _after(env, 0) == []


async def test_removing_a_scope_records_scope_removed(env: Env) -> None:
    """A removed scope appends scope_removed: subject the caller, target the callee."""
    callee = await _machine(env, "callee")
    caller = await _machine(env, "caller", scoped=[callee])
    await env.runtime.machines.remove_scope(env.instance_id, caller, callee)
    assert await _recorded_after(env, 0) == [
        (env.instance_id, ChangeKind.SCOPE_REMOVED, caller, callee),
    ]


async def test_removing_an_absent_scope_records_nothing(env: Env) -> None:
    """No row removed (no such scope, or no such machine): nothing appended."""
    caller = await _machine(env, "caller")
    callee = await _machine(env, "callee")
    with pytest.raises(NotFound):
        await env.runtime.machines.remove_scope(env.instance_id, caller, callee)
    with pytest.raises(NotFound):
        await env.runtime.machines.remove_scope(env.instance_id, "mch_" + "0" * 27, callee)
    callee_scoped = await _machine(env, "scoped", scoped=[callee])
    await env.runtime.machines.remove_scope(env.instance_id, callee_scoped, callee)
    cursor = await env.log.last_id()
    with pytest.raises(NotFound):  # the second removal of the same scope
        await env.runtime.machines.remove_scope(env.instance_id, callee_scoped, callee)
    assert await _after(env, cursor) == []
    assert len(await _after(env, 0)) == 1


async def test_the_first_signing_key_and_each_rotation_record_signing_key_rotated(
    env: Env,
) -> None:
    """The first JWT creates a key (the JWKS changes from nothing); a rotation changes it."""
    machine = await _machine(env)
    await _mint(env, machine, token_format=TokenFormat.JWT)
    first = await _recorded_after(env, 0)
    assert first == [(env.instance_id, ChangeKind.SIGNING_KEY_ROTATED, env.instance_id, None)]
    cursor = await env.log.last_id()
    await _mint(env, machine, token_format=TokenFormat.JWT)  # signs with the same key
    assert await _after(env, cursor) == []
    await env.runtime.signing.rotate(env.instance_id)
    assert await _recorded_after(env, cursor) == first


async def test_writes_that_cannot_turn_a_yes_into_a_no_record_nothing(env: Env) -> None:
    """Creating instances, machines (with scopes) and tokens, and renames, append nothing."""
    await env.runtime.instances.create("another")
    callee = await _machine(env, "callee")
    caller = await _machine(env, "caller", scoped=[callee])
    await env.runtime.machines.update(env.instance_id, caller, name="renamed")
    token = await _mint(env, caller)
    await env.runtime.tokens.verify(env.admin, token.secret)
    await env.runtime.tokens.flush_last_used()
    assert await _after(env, 0) == []


async def test_a_new_default_lifetime_is_logged_for_minting_caches(env: Env) -> None:
    """Every node's minting cache must drop the machine, so the change is logged."""
    caller = await _machine(env, "caller")
    await env.runtime.machines.update(env.instance_id, caller, default_token_ttl=60)
    changes = await _after(env, 0)
    assert [(c.kind, c.subject) for c in changes] == [(ChangeKind.MACHINE_UPDATED, caller)]


# -- changes_after and last_id -------------------------------------------------------------


async def _five_changes(env: Env) -> list[Change]:
    callee = await _machine(env, "callee")
    caller = await _machine(env, "caller")
    await env.runtime.machines.add_scope(env.instance_id, caller, callee)
    await env.runtime.machines.rotate_secret_key(env.instance_id, caller, previous_token_ttl=0)
    await _revoke(env, await _mint(env, caller))
    await env.runtime.machines.remove_scope(env.instance_id, caller, callee)
    await env.runtime.instances.rotate_key(env.instance_id)
    found = await _after(env, 0)
    assert len(found) == 5
    return found


async def test_changes_after_lists_entries_after_the_cursor_oldest_first(env: Env) -> None:
    """Ids ascend strictly; a cursor excludes itself and everything before it."""
    every = await _five_changes(env)
    ids = [c.id for c in every]
    assert ids == sorted(set(ids))
    assert [c.kind for c in every] == [
        ChangeKind.SCOPE_ADDED,
        ChangeKind.MACHINE_KEY_ROTATED,
        ChangeKind.TOKEN_REVOKED,
        ChangeKind.SCOPE_REMOVED,
        ChangeKind.INSTANCE_KEY_ROTATED,
    ]
    for index, entry in enumerate(every):
        assert await _after(env, entry.id) == every[index + 1 :]
    assert await env.log.last_id() == ids[-1]


async def test_changes_after_respects_the_limit(env: Env) -> None:
    """At most ``limit`` entries, the oldest ones after the cursor."""
    every = await _five_changes(env)
    assert await env.log.changes_after(0, 2) == every[:2]
    assert await env.log.changes_after(every[1].id, 2) == every[2:4]
    assert await env.log.changes_after(every[3].id, 2) == every[4:]
    assert await env.log.changes_after(every[4].id, 2) == []


async def test_an_entry_of_an_unknown_kind_reads_as_none(env: Env) -> None:
    """An entry a newer release wrote is read with kind None, not an error."""
    row = {**change(env.instance_id, ChangeKind.SCOPE_ADDED, "a", "b"), "kind": "from_later"}
    async with env.runtime.database.write() as conn:
        await record_changes(conn, [row], env.clock.now_ms())
    (entry,) = await _after(env, 0)
    assert (entry.kind, entry.subject, entry.target) == (None, "a", "b")


# -- revocations_after ---------------------------------------------------------------------


async def test_revocations_after_lists_only_the_instance_s_revocations(
    env: Env, other_sk: str
) -> None:
    """Another instance's revocations are never listed, whatever the cursor."""
    other = await env.runtime.authenticator.authenticate(other_sk)
    assert isinstance(other, InstancePrincipal)
    other_machine = (await env.runtime.machines.create(other.instance_id, name="x")).machine.id
    theirs = await _mint(env, other_machine, instance_id=other.instance_id)
    ours = await _mint(env, await _machine(env))
    await env.runtime.tokens.revoke(other, theirs.token.id, None)
    await _revoke(env, ours)
    now = env.clock.now_ms()
    page = await env.log.revocations_after(env.instance_id, 0, limit=100, now_ms=now)
    assert [r.token_id for r in page.revocations] == [ours.token.id]
    page = await env.log.revocations_after(other.instance_id, 0, limit=100, now_ms=now)
    assert [r.token_id for r in page.revocations] == [theirs.token.id]


async def test_revocations_after_leaves_out_expired_tokens(env: Env) -> None:
    """A revocation is listed while its token could verify: until ``now >= expiration``."""
    machine = await _machine(env)
    short = await _mint(env, machine, seconds=10)
    long = await _mint(env, machine, seconds=3600)
    await _revoke(env, short)
    await _revoke(env, long)

    async def listed(now_ms: int) -> list[str]:
        page = await env.log.revocations_after(env.instance_id, 0, limit=100, now_ms=now_ms)
        return [r.token_id for r in page.revocations]

    assert await listed(short.token.expiration - 1) == [short.token.id, long.token.id]
    assert await listed(short.token.expiration) == [long.token.id]
    assert await listed(long.token.expiration) == []


async def test_revocations_after_pages_with_has_more_and_the_cursor(env: Env) -> None:
    """Pages of ``limit`` follow each other by cursor, in order; has_more says another waits."""
    machine = await _machine(env)
    tokens = [await _mint(env, machine) for _ in range(5)]
    for token in tokens:
        await _revoke(env, token)
    ids = [c.id for c in await _after(env, 0)]
    now = env.clock.now_ms()
    pages = []
    cursor = 0
    for _ in range(3):
        page = await env.log.revocations_after(env.instance_id, cursor, limit=2, now_ms=now)
        pages.append(page)
        cursor = page.cursor
    assert [len(p.revocations) for p in pages] == [2, 2, 1]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [p.cursor for p in pages] == [ids[1], ids[3], ids[4]]
    listed = [r.token_id for p in pages for r in p.revocations]
    assert listed == [t.token.id for t in tokens]


async def test_a_full_last_page_says_nothing_more_waits(env: Env) -> None:
    """When exactly ``limit`` revocations remain, the page has them all and has_more is false."""
    machine = await _machine(env)
    for _ in range(2):
        await _revoke(env, await _mint(env, machine))
    page = await env.log.revocations_after(env.instance_id, 0, limit=2, now_ms=env.clock.now_ms())
    assert len(page.revocations) == 2
    assert not page.has_more
    assert page.cursor == await env.log.last_id()


async def test_with_nothing_more_the_cursor_jumps_to_the_log_s_end(env: Env, other_sk: str) -> None:
    """Newer entries of other instances or kinds move the cursor past them, listing nothing."""
    machine = await _machine(env)
    await _revoke(env, await _mint(env, machine))
    ours = await env.log.last_id()
    other = await env.runtime.authenticator.authenticate(other_sk)
    assert isinstance(other, InstancePrincipal)
    other_machine = (await env.runtime.machines.create(other.instance_id, name="x")).machine.id
    theirs = await _mint(env, other_machine, instance_id=other.instance_id)
    await env.runtime.tokens.revoke(other, theirs.token.id, None)
    await env.runtime.machines.rotate_secret_key(env.instance_id, machine, previous_token_ttl=0)
    end = await env.log.last_id()
    assert end > ours
    now = env.clock.now_ms()
    page = await env.log.revocations_after(env.instance_id, ours, limit=10, now_ms=now)
    assert page.revocations == ()
    assert not page.has_more
    assert page.cursor == end
    ahead = await env.log.revocations_after(env.instance_id, end + 100, limit=10, now_ms=now)
    assert (ahead.revocations, ahead.cursor, ahead.has_more) == ((), end + 100, False)


async def test_the_cursor_of_an_empty_log_stays_where_it_was(env: Env) -> None:
    """Nothing logged yet: no revocations, cursor unchanged, nothing more."""
    page = await env.log.revocations_after(env.instance_id, 0, limit=10, now_ms=0)
    assert (page.revocations, page.cursor, page.has_more) == ((), 0, False)


async def test_a_jwt_revocation_is_listed_with_its_jti(env: Env) -> None:
    """A revoked JWT is listed under the jti a local verifier reads from the token."""
    receiver = await _machine(env, "receiver")
    caller = await _machine(env, "caller", scoped=[receiver])
    created = await _mint(env, caller, token_format=TokenFormat.JWT)
    claims = jwt.decode(created.secret, options={"verify_signature": False})
    env.clock.advance(7)
    await _revoke(env, created)
    page = await env.log.revocations_after(env.instance_id, 0, limit=10, now_ms=env.clock.now_ms())
    assert page.revocations == (
        Revocation(
            token_id=claims["jti"],
            subject=caller,
            scopes=(receiver,),
            revoked_at=env.clock.now_ms(),
            expiration=created.token.expiration,
        ),
    )


async def test_a_revocation_committed_while_the_feed_reads_is_not_skipped(
    env: Env, other_node: Database
) -> None:
    """Revocations committed before each statement of a page read are all listed, once."""
    machine = await _machine(env)
    tokens = [await _mint(env, machine) for _ in range(4)]
    pending = [t.token.id for t in tokens]
    feed = SqlChangeStore(other_node)  # only the feed's statements run on this engine

    def revoke_before_each_statement(*_: Any) -> None:
        # A cursor-execute hook runs in SQLAlchemy's greenlet, so it may await a revoke:
        # the revocation commits between two statements of one page read.
        if pending:
            await_only(env.runtime.tokens.revoke(env.admin, pending.pop(0), None))

    engine = other_node.engine.sync_engine
    listed: list[str] = []
    cursor = 0
    event.listen(engine, "before_cursor_execute", revoke_before_each_statement)
    try:
        while True:
            page = await feed.revocations_after(
                env.instance_id, cursor, limit=100, now_ms=env.clock.now_ms()
            )
            listed += [r.token_id for r in page.revocations]
            cursor = page.cursor
            if not pending and not page.revocations and not page.has_more:
                break
    finally:
        event.remove(engine, "before_cursor_execute", revoke_before_each_statement)
    assert listed == [t.token.id for t in tokens]


# -- prune ---------------------------------------------------------------------------------


async def test_prune_removes_exactly_the_entries_expired_at_or_before_now(env: Env) -> None:
    """Revocations go at their token's expiry, other entries a day after they were written."""
    machine = await _machine(env)
    early = await _mint(env, machine, seconds=10)
    late = await _mint(env, machine, seconds=20)
    await _revoke(env, early)
    await _revoke(env, late)
    await env.runtime.machines.rotate_secret_key(env.instance_id, machine, previous_token_ttl=0)
    rotated_at = env.clock.now_ms()
    every = await _after(env, 0)
    assert len(every) == 3

    assert await env.log.prune(early.token.expiration - 1) == 0
    assert await env.log.prune(early.token.expiration) == 1
    assert await _after(env, 0) == every[1:]
    assert await env.log.prune(late.token.expiration) == 1
    assert await env.log.prune(rotated_at + NON_TOKEN_RETENTION_MS - 1) == 0
    assert await _after(env, 0) == every[2:]
    assert await env.log.prune(rotated_at + NON_TOKEN_RETENTION_MS) == 1
    assert await _after(env, 0) == []
    assert await env.log.last_id() == 0


# -- transactions and after_change ---------------------------------------------------------


class Abort(Exception):
    """Raised inside a write to roll it back."""


async def _record_then_abort(env: Env, rows: list[dict[str, Any]]) -> None:
    async with env.runtime.database.write() as conn:
        await record_changes(conn, rows, env.clock.now_ms())
        raise Abort


async def test_a_rolled_back_write_records_nothing_and_calls_nothing(
    env: Env, after_change_calls: list[int]
) -> None:
    """Entries appended by a transaction that rolls back vanish; after_change does not run."""
    rows = [change(env.instance_id, ChangeKind.SCOPE_REMOVED, "mch_a", "mch_b")]
    with pytest.raises(Abort):
        await _record_then_abort(env, rows)
    assert await _after(env, 0) == []
    assert after_change_calls == []
    # The log lock (PostgreSQL) went with the transaction: the next write appends at once.
    await _revoke(env, await _mint(env, await _machine(env)))
    assert len(await _after(env, 0)) == 1
    assert len(after_change_calls) == 1


async def test_recording_no_rows_writes_nothing_and_calls_nothing(
    env: Env, after_change_calls: list[int]
) -> None:
    """An empty batch is not a change: no entry, no after_change."""
    async with env.runtime.database.write() as conn:
        await record_changes(conn, [], env.clock.now_ms())
    assert await _after(env, 0) == []
    assert after_change_calls == []


async def test_after_change_runs_after_commit_once_per_recording_write(
    env: Env, after_change_calls: list[int]
) -> None:
    """Once per write that appended, when another connection already sees the entries."""
    callee = await _machine(env, "callee")
    caller = await _machine(env, "caller")
    await env.runtime.machines.update(env.instance_id, caller, name="renamed")
    assert after_change_calls == []

    await env.runtime.machines.add_scope(env.instance_id, caller, callee)
    token = await _mint(env, caller)
    await _revoke(env, token)
    await _revoke(env, token)  # records nothing
    await _mint(env, caller)
    await env.runtime.machines.delete(env.instance_id, caller)  # two entries, one write
    with pytest.raises(NotFound):
        await env.runtime.machines.remove_scope(env.instance_id, callee, caller)

    every = await _after(env, 0)
    assert [c.kind for c in every] == [
        ChangeKind.SCOPE_ADDED,
        ChangeKind.TOKEN_REVOKED,
        ChangeKind.TOKEN_REVOKED,
        ChangeKind.MACHINE_DELETED,
    ]
    assert after_change_calls == [every[0].id, every[1].id, every[3].id]


async def test_a_direct_recording_write_calls_after_change_once(
    env: Env, after_change_calls: list[int]
) -> None:
    """record_changes in a committed write: after_change runs once, for the whole batch."""
    rows = [
        revoked_token_change(env.instance_id, "mt_1", "mch_a", "[]", env.clock.now_ms() + 1),
        change(env.instance_id, ChangeKind.MACHINE_DELETED, "mch_a"),
    ]
    async with env.runtime.database.write() as conn:
        await record_changes(conn, rows, env.clock.now_ms())
    assert after_change_calls == [await env.log.last_id()]
    assert len(await _after(env, 0)) == 2


# -- concurrency ---------------------------------------------------------------------------


async def test_concurrent_revocations_are_seen_once_each_in_id_order(
    env: Env, other_node: Database
) -> None:
    """A node following the log during 40 concurrent revokes misses none, sees none twice."""
    machine = await _machine(env)
    tokens = [await _mint(env, machine) for _ in range(40)]
    log = SqlChangeStore(other_node)  # another node, on connections of its own
    cursor = await log.last_id()
    seen: list[Change] = []
    reading = asyncio.Lock()
    writers_done = asyncio.Event()

    async def follow() -> int:
        """One read after the cursor, as a follower makes it; how many entries it found."""
        nonlocal cursor
        async with reading:
            batch = await log.changes_after(cursor, 7)
            seen.extend(batch)
            if batch:
                cursor = batch[-1].id
            return len(batch)

    async def keep_following() -> None:
        while True:
            finished = writers_done.is_set()  # read before the batch: no last batch is lost
            if not await follow() and finished:
                return

    def follow_between_append_and_commit(*args: Any) -> None:
        # A writer has appended and not committed yet. Were ids not committed in order, a
        # later id committed meanwhile would be read now and the cursor would skip this one.
        # (SQLite needs no help: BEGIN IMMEDIATE lets one writer in at a time, and the others
        # only back off longer while this one lingers.)
        if postgres and args[2].startswith("INSERT INTO changes"):
            await_only(asyncio.sleep(random.uniform(0, 0.002)))
            await_only(follow())

    postgres = env.runtime.database.dialect == "postgresql"
    engine = env.runtime.database.engine.sync_engine
    event.listen(engine, "after_cursor_execute", follow_between_append_and_commit)
    reader = asyncio.create_task(keep_following())
    try:
        await asyncio.gather(*(_revoke(env, t) for t in tokens))
    finally:
        writers_done.set()
        event.remove(engine, "after_cursor_execute", follow_between_append_and_commit)
    await reader
    ids = [c.id for c in seen]
    assert ids == sorted(set(ids))
    assert {c.kind for c in seen} == {ChangeKind.TOKEN_REVOKED}
    assert sorted(c.subject for c in seen) == sorted(t.token.id for t in tokens)
