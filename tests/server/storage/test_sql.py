"""The SQL stores on real SQLite and PostgreSQL: every rule, edge and race of the storage layer.

Each test gets a clean, migrated database of the backend under test (``runtime`` fixture)
and the injected ``FixedClock``; keys are checked through the real authenticator.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import pytest
from sqlalchemy import func, insert, select

from gatepass_server.config import load_master_key
from gatepass_server.domain.keys import SecretKind, digest, new_machine_id
from gatepass_server.domain.machines import (
    MAX_SCOPED_MACHINES,
    Machine,
    MachineListQuery,
    MachineScope,
    MachineSummary,
    OrderBy,
    OrderField,
)
from gatepass_server.domain.sealing import Sealer
from gatepass_server.services.auth import MachinePrincipal
from gatepass_server.services.interfaces import KeyOwner, NewSecret, ScopeOutcome
from gatepass_server.services.minting import mint_secret
from gatepass_server.storage.database import Database
from gatepass_server.storage.sql import SqlInstanceStore, SqlMachineStore
from gatepass_server.storage.tables import machine_scopes, machine_secret_keys, machines
from helpers import storage_snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Sequence

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime

UNKNOWN_ID = "mch_" + "0" * 27
T = TypeVar("T")


@dataclass
class Env:
    """The stores under test and what they run on."""

    runtime: Runtime
    clock: FixedClock
    store: SqlMachineStore
    instances: SqlInstanceStore
    sealer: Sealer
    instance_id: str
    other_instance_id: str


@pytest.fixture
async def env(runtime: Runtime, clock: FixedClock) -> Env:
    """Stores over the runtime's database, with a second instance for isolation checks."""
    instance_id = (await runtime.instances.default()).id
    clock.advance(1)  # the second instance is strictly younger
    other = await runtime.instances.create("other")
    return Env(
        runtime=runtime,
        clock=clock,
        store=SqlMachineStore(runtime.database),
        instances=SqlInstanceStore(runtime.database),
        sealer=Sealer(load_master_key(runtime.settings)),
        instance_id=instance_id,
        other_instance_id=other.instance.id,
    )


@pytest.fixture
async def second_store(runtime: Runtime) -> AsyncIterator[SqlMachineStore]:
    """A store over a second engine on the same database, like another server process."""
    database = Database(runtime.database.url)
    yield SqlMachineStore(database)
    await database.dispose()


def _summary(
    env: Env, name: str, *, instance_id: str | None = None, ttl: int = 3600
) -> MachineSummary:
    now = env.clock.now_ms()
    return MachineSummary(
        id=new_machine_id(),
        instance_id=instance_id or env.instance_id,
        name=name,
        default_token_ttl=ttl,
        created_at=now,
        updated_at=now,
    )


def _key(env: Env, machine_id: str) -> tuple[str, NewSecret]:
    return mint_secret(SecretKind.MACHINE, sealer=env.sealer, context=machine_id)


async def _create(
    env: Env,
    name: str = "machine",
    *,
    scopes: Sequence[str] = (),
    instance_id: str | None = None,
    ttl: int = 3600,
) -> tuple[Machine, str]:
    """Create a machine through the store; return it and its plaintext key."""
    summary = _summary(env, name, instance_id=instance_id, ttl=ttl)
    secret, stored = _key(env, summary.id)
    machine = await env.store.create_machine(summary, scopes, stored)
    assert machine is not None
    return machine, secret


async def _bulk(env: Env, count: int, *, instance_id: str | None = None) -> list[str]:
    """Arrange ``count`` plain machine rows in one transaction (for the 150-scope cap)."""
    now = env.clock.now_ms()
    ids = [new_machine_id() for _ in range(count)]
    async with env.runtime.database.write() as conn:
        await conn.execute(
            insert(machines),
            [
                {
                    "id": machine_id,
                    "instance_id": instance_id or env.instance_id,
                    "name": f"bulk-{n:04d}",
                    "name_search": f"bulk-{n:04d}",
                    "default_token_ttl": 3600,
                    "created_at": now,
                    "updated_at": now,
                }
                for n, machine_id in enumerate(ids)
            ],
        )
    return ids


async def _rotate(
    env: Env,
    machine_id: str,
    grace_seconds: int,
    *,
    instance_id: str | None = None,
    store: SqlMachineStore | None = None,
) -> tuple[bool, str]:
    """Rotate through the store at the clock's time; return the outcome and the new key."""
    now = env.clock.now_ms()
    secret, stored = _key(env, machine_id)
    done = await (store or env.store).rotate_machine_key(
        instance_id or env.instance_id,
        machine_id,
        stored,
        now_ms=now,
        previous_expires_at=now + grace_seconds * 1000,
    )
    return done, secret


async def _add(
    env: Env,
    from_id: str,
    to_id: str,
    *,
    instance_id: str | None = None,
    store: SqlMachineStore | None = None,
    limit: int = MAX_SCOPED_MACHINES,
) -> ScopeOutcome:
    outcome, scope = await (store or env.store).add_scope(
        instance_id or env.instance_id, from_id, to_id, now_ms=env.clock.now_ms(), limit=limit
    )
    assert (scope is not None) == (outcome is ScopeOutcome.DONE)
    return outcome


async def _authenticates(env: Env, secret: str, machine: Machine) -> bool:
    """Whether ``secret`` authenticates as ``machine`` now (the real authenticator)."""
    principal = await env.runtime.authenticator.authenticate(secret)
    if principal is None:
        return False
    assert principal == MachinePrincipal(machine.instance_id, machine.id)
    return True


async def _scope_pairs(env: Env) -> set[tuple[str, str]]:
    async with env.runtime.database.read() as conn:
        rows = await conn.execute(
            select(machine_scopes.c.from_machine_id, machine_scopes.c.to_machine_id),
        )
        return {(row[0], row[1]) for row in rows}


async def _scope_count(env: Env, from_id: str) -> int:
    async with env.runtime.database.read() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count())
                    .select_from(machine_scopes)
                    .where(machine_scopes.c.from_machine_id == from_id),
                )
            ).scalar_one(),
        )


async def _key_rows(env: Env, machine_id: str) -> list[int | None]:
    """The ``expires_at`` of every stored key of a machine (``None`` = current)."""
    async with env.runtime.database.read() as conn:
        rows = await conn.execute(
            select(machine_secret_keys.c.expires_at).where(
                machine_secret_keys.c.machine_id == machine_id,
            ),
        )
        return [row[0] for row in rows]


async def _list(
    env: Env,
    *,
    limit: int = 10,
    offset: int = 0,
    query: str | None = None,
    order_by: OrderBy | None = None,
) -> tuple[list[Machine], int]:
    wanted = MachineListQuery(limit=limit, offset=offset, query=query)
    if order_by is not None:
        wanted = MachineListQuery(limit=limit, offset=offset, query=query, order_by=order_by)
    return await env.store.list_machines(env.instance_id, wanted)


async def _race(*calls: Awaitable[T]) -> list[T]:
    """Run ``calls`` at once; every one must finish without raising (no lock error, no 500)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return results  # type: ignore[return-value]


def _ids(found: Sequence[Machine]) -> list[str]:
    return [m.id for m in found]


def _names(found: Sequence[Machine]) -> list[str]:
    return [m.name for m in found]


# -- create -----------------------------------------------------------------------------


async def test_create_stores_fields_scopes_and_a_working_key(env: Env) -> None:
    """A new machine reads back with its fields, its scopes (deduplicated) and a live key."""
    first, _ = await _create(env, "first")
    env.clock.advance(1)
    second, _ = await _create(env, "second")
    env.clock.advance(1)
    machine, secret = await _create(
        env, "Email Server", scopes=[second.id, first.id, second.id], ttl=120
    )

    assert machine.name == "Email Server"
    assert machine.instance_id == env.instance_id
    assert machine.default_token_ttl == 120
    assert machine.created_at == machine.updated_at == env.clock.now_ms()
    assert {m.id for m in machine.scoped_machines} == {first.id, second.id}
    assert len(machine.scoped_machines) == 2
    assert await env.store.get_machine(env.instance_id, machine.id) == machine
    assert await _authenticates(env, secret, machine)
    sealed = await env.store.current_sealed_key(env.instance_id, machine.id)
    assert sealed is not None
    assert env.sealer.open(sealed, machine.id) == secret


async def test_create_without_scopes_has_an_empty_scope_list(env: Env) -> None:
    """``scoped_machines`` is an empty tuple, never missing."""
    machine, _ = await _create(env, "alone")
    assert machine.scoped_machines == ()


async def test_scoped_machines_are_summaries_of_the_targets(env: Env) -> None:
    """Nested entries carry the target's own fields and no scopes of their own."""
    target, _ = await _create(env, "API", ttl=99)
    env.clock.advance(5)
    caller, _ = await _create(env, "caller", scopes=[target.id])
    (nested,) = caller.scoped_machines
    assert nested.id == target.id
    assert nested.name == "API"
    assert nested.default_token_ttl == 99
    assert nested.created_at == target.created_at
    assert not hasattr(nested, "scoped_machines")


@pytest.mark.parametrize("where", ["unknown", "other_instance"])
async def test_create_with_a_missing_target_stores_nothing(env: Env, where: str) -> None:
    """One unknown or foreign target: no machine, no scope, no key is stored."""
    known, _ = await _create(env, "known")
    missing = (
        UNKNOWN_ID
        if where == "unknown"
        else (await _create(env, "foreign", instance_id=env.other_instance_id))[0].id
    )
    before = await storage_snapshot(env.runtime)
    summary = _summary(env, "doomed")
    secret, stored = _key(env, summary.id)

    assert await env.store.create_machine(summary, [known.id, missing], stored) is None

    assert await storage_snapshot(env.runtime) == before
    assert await env.runtime.authenticator.authenticate(secret) is None
    assert await env.store.get_machine(env.instance_id, summary.id) is None


# -- list -------------------------------------------------------------------------------


async def test_list_pages_with_offset_and_total(env: Env) -> None:
    """Pages of ``limit`` at each ``offset`` concatenate to the whole list; total is constant."""
    created = []
    for n in range(7):
        created.append((await _create(env, f"m{n}"))[0])
        env.clock.advance(1)
    newest_first = [m.id for m in reversed(created)]

    seen: list[str] = []
    for offset in (0, 3, 6):
        page, total = await _list(env, limit=3, offset=offset)
        assert total == 7
        seen += _ids(page)
    assert seen == newest_first

    for offset in (7, 100):
        page, total = await _list(env, limit=3, offset=offset)
        assert (page, total) == ([], 7)
    page, total = await _list(env, limit=500)
    assert (_ids(page), total) == (newest_first, 7)


async def test_list_of_an_empty_instance(env: Env) -> None:
    """No machines: an empty page and a total of 0."""
    assert await _list(env) == ([], 0)


async def test_list_attaches_each_machines_own_scopes(env: Env) -> None:
    """Every machine on a page carries its own scoped machines, none of another's."""
    a, _ = await _create(env, "a")
    b, _ = await _create(env, "b", scopes=[a.id])
    c, _ = await _create(env, "c", scopes=[a.id, b.id])
    page, _ = await _list(env, limit=10)
    scoped = {m.id: {s.id for s in m.scoped_machines} for m in page}
    assert scoped == {a.id: set(), b.id: {a.id}, c.id: {a.id, b.id}}


async def test_query_matches_an_exact_id(env: Env) -> None:
    """``query`` equal to a machine id finds that machine; part of an id finds nothing."""
    await _create(env, "alpha")
    beta, _ = await _create(env, "beta")
    page, total = await _list(env, query=beta.id)
    assert (_ids(page), total) == ([beta.id], 1)
    assert await _list(env, query=beta.id[:-1]) == ([], 0)
    assert await _list(env, query=beta.id.upper()) == ([], 0)


async def test_query_is_a_case_insensitive_partial_name_match(env: Env) -> None:
    """``EMAIL`` finds ``Email Server`` and ``email-relay``; the total counts only matches."""
    for name in ("Email Server", "email-relay", "API Gateway", "Mail"):
        await _create(env, name)
        env.clock.advance(1)
    page, total = await _list(
        env, query="EMAIL", order_by=OrderBy(OrderField.NAME, descending=False)
    )
    assert (_names(page), total) == (["Email Server", "email-relay"], 2)
    page, total = await _list(env, query="mAiL", limit=1)
    assert total == 3
    assert len(page) == 1


WILDCARD_CASES = [
    ("%", ["100% sure"]),
    ("0%", ["100% sure"]),
    ("_", ["a_b"]),
    ("a_b", ["a_b"]),
    ("/", ["a/b"]),
    ("\\", ["a\\b"]),
    ("a%b", []),
    ("[ab]", []),
    ("'", ["it's"]),
    ("*", []),
]


async def test_query_treats_wildcards_literally(env: Env) -> None:
    """``%``, ``_``, the escape character and quotes in ``query`` match only themselves."""
    for name in ("100% sure", "100 percent", "a_b", "axb", "a/b", "a\\b", "ab", "it's"):
        await _create(env, name)
    by_name = OrderBy(OrderField.NAME, descending=False)
    for query, expected in WILDCARD_CASES:
        page, total = await _list(env, query=query, order_by=by_name)
        assert (_names(page), total) == (expected, len(expected)), query


CASEFOLD_CASES = [
    ("STRASSE", ["Straße"]),
    ("straße", ["Straße"]),
    ("école", ["ÉCOLE"]),
    ("ΩMEGA", ["ωmega"]),
    ("ǅ", ["ǆemal"]),
    ("日本", ["日本語"]),
]


async def test_query_casefolds_non_ascii(env: Env) -> None:
    """Case-insensitive matching follows Unicode casefolding on both backends."""
    for name in ("Straße", "ÉCOLE", "ωmega", "ǆemal", "日本語", "plain"):
        await _create(env, name)
    for query, expected in CASEFOLD_CASES:
        page, total = await _list(env, query=query)
        assert (_names(page), total) == (expected, len(expected)), query


NAMES = ["beta", "Alpha", "alpha", "beta", "Zeta", "ärger", "zeta", "alpha", "ß", "Beta"]


async def test_order_by_name_is_byte_order_with_id_tie_break(env: Env) -> None:
    """Names sort by code point on both backends, either way; equal names fall back to the id."""
    created = [(await _create(env, name))[0] for name in NAMES]
    for descending in (False, True):
        expected = sorted(created, key=lambda m: (m.name, m.id), reverse=descending)
        page, total = await _list(env, limit=100, order_by=OrderBy(OrderField.NAME, descending))
        assert total == len(NAMES)
        assert _ids(page) == _ids(expected)


async def test_order_by_created_at_with_id_tie_break(env: Env) -> None:
    """Creation time orders the list; machines created in the same millisecond order by id."""
    created = []
    for n in range(9):
        created.append((await _create(env, f"m{n}"))[0])
        if n % 3 == 2:
            env.clock.advance(1)  # three machines per millisecond
    for descending in (False, True):
        expected = sorted(created, key=lambda m: (m.created_at, m.id), reverse=descending)
        order = OrderBy(OrderField.CREATED_AT, descending)
        page, _ = await _list(env, limit=100, order_by=order)
        assert _ids(page) == _ids(expected)
        # Paging through ties never repeats or skips a machine.
        paged: list[str] = []
        for offset in range(0, 9, 2):
            chunk, _ = await _list(env, limit=2, offset=offset, order_by=order)
            paged += _ids(chunk)
        assert paged == _ids(expected)


async def test_default_order_is_newest_first(env: Env) -> None:
    """Without ``order_by`` the list is ``-created_at``."""
    older, _ = await _create(env, "older")
    env.clock.advance(1)
    newer, _ = await _create(env, "newer")
    page, _ = await _list(env)
    assert _ids(page) == [newer.id, older.id]


# -- update -----------------------------------------------------------------------------


async def test_update_name_only(env: Env) -> None:
    """Changing the name keeps the TTL, creation time and scopes; the search follows the name."""
    target, _ = await _create(env, "target")
    machine, _ = await _create(env, "Old Name", scopes=[target.id], ttl=77)
    env.clock.advance(1000)
    updated = await env.store.update_machine(
        env.instance_id,
        machine.id,
        name="New Name",
        default_token_ttl=None,
        now_ms=env.clock.now_ms(),
    )
    assert updated is not None
    assert updated.name == "New Name"
    assert updated.default_token_ttl == 77
    assert updated.created_at == machine.created_at
    assert updated.updated_at == env.clock.now_ms()
    assert updated.scoped_machines == machine.scoped_machines
    assert await env.store.get_machine(env.instance_id, machine.id) == updated
    assert _ids((await _list(env, query="new name"))[0]) == [machine.id]
    assert (await _list(env, query="old name"))[1] == 0


async def test_update_ttl_only(env: Env) -> None:
    """Changing the TTL keeps the name."""
    machine, _ = await _create(env, "keep me", ttl=10)
    env.clock.advance(1)
    updated = await env.store.update_machine(
        env.instance_id,
        machine.id,
        name=None,
        default_token_ttl=315_360_000,
        now_ms=env.clock.now_ms(),
    )
    assert updated is not None
    assert (updated.name, updated.default_token_ttl) == ("keep me", 315_360_000)
    assert updated.updated_at == machine.updated_at + 1


async def test_update_of_an_unknown_machine(env: Env) -> None:
    """No such machine: ``None`` and nothing changes."""
    await _create(env, "bystander")
    before = await storage_snapshot(env.runtime)
    assert (
        await env.store.update_machine(
            env.instance_id, UNKNOWN_ID, name="x", default_token_ttl=5, now_ms=env.clock.now_ms()
        )
        is None
    )
    assert await storage_snapshot(env.runtime) == before


# -- delete -----------------------------------------------------------------------------


async def test_delete_cascades_scopes_both_ways_and_keys(env: Env) -> None:
    """Deleting a machine removes scopes from and to it and every key, even one in grace."""
    a, a_key = await _create(env, "a")
    b, b_key = await _create(env, "b", scopes=[a.id])
    c, c_key = await _create(env, "c", scopes=[b.id, a.id])
    assert await _add(env, a.id, b.id) is ScopeOutcome.DONE
    assert await _add(env, b.id, c.id) is ScopeOutcome.DONE
    done, b_new_key = await _rotate(env, b.id, grace_seconds=3600)
    assert done

    assert await env.store.delete_machine(env.instance_id, b.id, now_ms=env.clock.now_ms())

    assert await env.store.get_machine(env.instance_id, b.id) is None
    assert await _scope_pairs(env) == {(c.id, a.id)}
    assert await _key_rows(env, b.id) == []
    assert not await _authenticates(env, b_key, b)
    assert not await _authenticates(env, b_new_key, b)
    assert await env.store.current_sealed_key(env.instance_id, b.id) is None
    a_now = await env.store.get_machine(env.instance_id, a.id)
    c_now = await env.store.get_machine(env.instance_id, c.id)
    assert a_now is not None
    assert c_now is not None
    assert a_now.scoped_machines == ()
    assert _ids(c_now.scoped_machines) == [a.id]
    assert await _authenticates(env, a_key, a)
    assert await _authenticates(env, c_key, c)
    assert (await _list(env))[1] == 2


async def test_delete_twice_and_unknown(env: Env) -> None:
    """The second delete, or one of an unknown id, answers ``False``."""
    machine, _ = await _create(env, "once")
    assert await env.store.delete_machine(env.instance_id, machine.id, now_ms=env.clock.now_ms())
    assert not await env.store.delete_machine(
        env.instance_id, machine.id, now_ms=env.clock.now_ms()
    )
    assert not await env.store.delete_machine(
        env.instance_id, UNKNOWN_ID, now_ms=env.clock.now_ms()
    )


# -- rotation ---------------------------------------------------------------------------


async def test_rotation_grace_ends_exactly_at_the_boundary(env: Env) -> None:
    """The old key works until now + grace - 1 ms and not at now + grace; the new one always."""
    machine, old = await _create(env, "rotating")
    start = env.clock.now_ms()
    done, new = await _rotate(env, machine.id, grace_seconds=30)
    assert done
    assert await _authenticates(env, old, machine)
    assert await _authenticates(env, new, machine)

    env.clock.set(start + 29_999)
    assert await _authenticates(env, old, machine)
    env.clock.set(start + 30_000)
    assert not await _authenticates(env, old, machine)
    assert await _authenticates(env, new, machine)
    env.clock.advance(10**9)
    assert await _authenticates(env, new, machine)
    sealed = await env.store.current_sealed_key(env.instance_id, machine.id)
    assert sealed is not None
    assert env.sealer.open(sealed, machine.id) == new


async def test_rotation_without_grace_retires_the_old_key_at_once(env: Env) -> None:
    """``previous_token_ttl`` 0: the old key stops working in the same millisecond."""
    machine, old = await _create(env, "rotating")
    done, new = await _rotate(env, machine.id, grace_seconds=0)
    assert done
    assert not await _authenticates(env, old, machine)
    assert await _authenticates(env, new, machine)


async def test_second_rotation_shortens_an_older_grace(env: Env) -> None:
    """A later, shorter grace cuts every older key's grace down to it."""
    machine, first = await _create(env, "rotating")
    start = env.clock.now_ms()
    _, second = await _rotate(env, machine.id, grace_seconds=100)
    env.clock.advance(10_000)
    _, third = await _rotate(env, machine.id, grace_seconds=5)

    env.clock.set(start + 14_999)
    assert await _authenticates(env, first, machine)
    assert await _authenticates(env, second, machine)
    env.clock.set(start + 15_000)
    assert not await _authenticates(env, first, machine)
    assert not await _authenticates(env, second, machine)
    assert await _authenticates(env, third, machine)


async def test_second_rotation_never_extends_an_older_grace(env: Env) -> None:
    """A later, longer grace leaves an older key's shorter grace as it was."""
    machine, first = await _create(env, "rotating")
    start = env.clock.now_ms()
    _, second = await _rotate(env, machine.id, grace_seconds=10)
    env.clock.advance(1000)
    _, third = await _rotate(env, machine.id, grace_seconds=100)

    env.clock.set(start + 10_000)
    assert not await _authenticates(env, first, machine)
    assert await _authenticates(env, second, machine)
    env.clock.set(start + 1000 + 99_999)
    assert await _authenticates(env, second, machine)
    env.clock.set(start + 1000 + 100_000)
    assert not await _authenticates(env, second, machine)
    assert await _authenticates(env, third, machine)


async def test_repeated_rotations_keep_one_current_key(env: Env) -> None:
    """After any number of rotations exactly one key is current, the last one issued."""
    machine, _ = await _create(env, "rotating")
    last = ""
    for grace in (0, 60, 0, 3600, 5):
        env.clock.advance(1000)
        _, last = await _rotate(env, machine.id, grace_seconds=grace)
    assert (await _key_rows(env, machine.id)).count(None) == 1
    sealed = await env.store.current_sealed_key(env.instance_id, machine.id)
    assert sealed is not None
    assert env.sealer.open(sealed, machine.id) == last


async def test_rotation_of_an_unknown_machine(env: Env) -> None:
    """Rotating an unknown machine answers ``False`` and stores no key."""
    before = await storage_snapshot(env.runtime)
    done, new = await _rotate(env, UNKNOWN_ID, grace_seconds=10)
    assert not done
    assert await storage_snapshot(env.runtime) == before
    assert await env.runtime.authenticator.authenticate(new) is None


# -- scopes -----------------------------------------------------------------------------


async def test_add_scope_outcomes(env: Env) -> None:
    """DONE once (with the scope), then EXISTS; unknown ends are FROM_MISSING / TO_MISSING."""
    a, _ = await _create(env, "a")
    b, _ = await _create(env, "b")
    env.clock.advance(7)

    outcome, scope = await env.store.add_scope(
        env.instance_id, a.id, b.id, now_ms=env.clock.now_ms(), limit=MAX_SCOPED_MACHINES
    )
    assert outcome is ScopeOutcome.DONE
    assert scope == MachineScope(a.id, b.id, env.clock.now_ms())
    updated = await env.store.get_machine(env.instance_id, a.id)
    assert updated is not None
    assert _ids(updated.scoped_machines) == [b.id]

    before = await storage_snapshot(env.runtime)
    assert await _add(env, a.id, b.id) is ScopeOutcome.EXISTS
    assert await _add(env, UNKNOWN_ID, b.id) is ScopeOutcome.FROM_MISSING
    assert await _add(env, a.id, UNKNOWN_ID) is ScopeOutcome.TO_MISSING
    assert await _add(env, UNKNOWN_ID, UNKNOWN_ID) is ScopeOutcome.FROM_MISSING
    assert await storage_snapshot(env.runtime) == before
    # The reverse direction is a different scope.
    assert await _add(env, b.id, a.id) is ScopeOutcome.DONE


async def test_add_scope_stops_at_the_limit_of_150(env: Env) -> None:
    """The 151st scope is LIMIT_REACHED; an existing one is still EXISTS; room frees on remove."""
    targets = await _bulk(env, MAX_SCOPED_MACHINES + 1)
    machine, _ = await _create(env, "busy", scopes=targets[:MAX_SCOPED_MACHINES])
    assert len(machine.scoped_machines) == MAX_SCOPED_MACHINES

    assert await _add(env, machine.id, targets[-1]) is ScopeOutcome.LIMIT_REACHED
    assert await _add(env, machine.id, targets[0]) is ScopeOutcome.EXISTS
    assert await _scope_count(env, machine.id) == MAX_SCOPED_MACHINES

    assert (
        await env.store.remove_scope(env.instance_id, machine.id, targets[0], now_ms=1)
        is ScopeOutcome.DONE
    )
    assert await _add(env, machine.id, targets[-1]) is ScopeOutcome.DONE
    assert await _scope_count(env, machine.id) == MAX_SCOPED_MACHINES


async def test_scope_limit_counts_only_outgoing_scopes(env: Env) -> None:
    """Scopes *to* a machine do not use up its own allowance."""
    callers = await _bulk(env, 3)
    target, _ = await _create(env, "popular")
    for caller in callers:
        assert await _add(env, caller, target.id, limit=1) is ScopeOutcome.DONE
    other, _ = await _create(env, "other")
    assert await _add(env, target.id, other.id, limit=1) is ScopeOutcome.DONE


async def test_remove_scope_outcomes(env: Env) -> None:
    """DONE once, then ABSENT; an unknown source is FROM_MISSING; the reverse scope stays."""
    a, _ = await _create(env, "a")
    b, _ = await _create(env, "b")
    assert await _add(env, a.id, b.id) is ScopeOutcome.DONE
    assert await _add(env, b.id, a.id) is ScopeOutcome.DONE

    def remove(from_id: str, to_id: str) -> Awaitable[ScopeOutcome]:
        return env.store.remove_scope(env.instance_id, from_id, to_id, now_ms=1)

    assert await remove(a.id, b.id) is ScopeOutcome.DONE
    assert await remove(a.id, b.id) is ScopeOutcome.ABSENT
    assert await remove(a.id, UNKNOWN_ID) is ScopeOutcome.ABSENT
    assert await remove(UNKNOWN_ID, b.id) is ScopeOutcome.FROM_MISSING
    assert await _scope_pairs(env) == {(b.id, a.id)}


# -- instances ---------------------------------------------------------------------------


async def test_machines_of_another_instance_are_invisible(env: Env) -> None:
    """Every read and write through instance A treats instance B's machine as absent."""
    mine, _ = await _create(env, "mine")
    foreign, foreign_key = await _create(env, "foreign", instance_id=env.other_instance_id)
    foreign_target, _ = await _create(env, "foreign target", instance_id=env.other_instance_id)
    a = env.instance_id
    before = await storage_snapshot(env.runtime)

    assert await env.store.get_machine(a, foreign.id) is None
    assert _ids((await _list(env, limit=500))[0]) == [mine.id]
    assert await _list(env, query=foreign.id) == ([], 0)
    assert await _list(env, query="foreign") == ([], 0)
    assert await env.store.current_sealed_key(a, foreign.id) is None
    assert (
        await env.store.update_machine(a, foreign.id, name="x", default_token_ttl=1, now_ms=1)
        is None
    )
    assert not await env.store.delete_machine(a, foreign.id, now_ms=env.clock.now_ms())
    assert not (await _rotate(env, foreign.id, grace_seconds=0))[0]
    assert await _add(env, foreign.id, foreign_target.id) is ScopeOutcome.FROM_MISSING
    assert await _add(env, mine.id, foreign.id) is ScopeOutcome.TO_MISSING
    assert await _add(env, foreign.id, mine.id) is ScopeOutcome.FROM_MISSING
    assert (
        await env.store.remove_scope(a, foreign.id, mine.id, now_ms=1) is ScopeOutcome.FROM_MISSING
    )

    assert await storage_snapshot(env.runtime) == before
    assert await _authenticates(env, foreign_key, foreign)
    # The owner still sees its machine.
    assert await env.store.get_machine(env.other_instance_id, foreign.id) == foreign


async def test_instance_store_lists_and_finds_instances(env: Env) -> None:
    """Instances list oldest first; ``get_instance`` finds one or ``None``."""
    listed = await env.instances.list_instances()
    assert [i.id for i in listed] == [env.instance_id, env.other_instance_id]
    assert await env.instances.get_instance(env.other_instance_id) == listed[1]
    assert await env.instances.get_instance("ins_" + "0" * 27) is None


async def test_instance_key_rotation_grace(env: Env) -> None:
    """A rotated instance key works until its grace ends, exactly, then not at all."""
    created = await env.runtime.instances.create("rotating")
    instance_id, old = created.instance.id, created.secret_key
    start = env.clock.now_ms()
    new, stored = mint_secret(SecretKind.INSTANCE_TEST)
    assert await env.instances.rotate_instance_key(instance_id, stored, start, start + 60_000)

    find = env.instances.find_instance_by_key
    assert await find(digest(old), start + 59_999) == KeyOwner(instance_id, None, start + 60_000)
    assert await find(digest(old), start + 60_000) is None
    assert await find(digest(new), start + 10**9) == KeyOwner(instance_id, None, None)
    hints = [k.hint for k in await env.instances.list_instance_keys(instance_id, start)]
    assert len(hints) == 2
    assert all(old not in h and new not in h for h in hints)
    assert len(await env.instances.list_instance_keys(instance_id, start + 60_000)) == 1


async def test_instance_key_second_rotation_shortens_grace(env: Env) -> None:
    """A second, shorter rotation grace also cuts the first key's remaining grace."""
    created = await env.runtime.instances.create("rotating")
    instance_id, first = created.instance.id, created.secret_key
    start = env.clock.now_ms()
    second, stored = mint_secret(SecretKind.INSTANCE_TEST)
    await env.instances.rotate_instance_key(instance_id, stored, start, start + 100_000)
    _, stored = mint_secret(SecretKind.INSTANCE_TEST)
    await env.instances.rotate_instance_key(instance_id, stored, start + 1000, start + 2000)
    for key in (first, second):
        owner = await env.instances.find_instance_by_key(digest(key), start + 1999)
        assert owner == KeyOwner(instance_id, None, start + 2000)
        assert await env.instances.find_instance_by_key(digest(key), start + 2000) is None


async def test_instance_key_rotation_of_an_unknown_instance(env: Env) -> None:
    """Rotating an unknown instance answers ``False`` and stores nothing."""
    before = await storage_snapshot(env.runtime)
    _, stored = mint_secret(SecretKind.INSTANCE_TEST)
    assert not await env.instances.rotate_instance_key("ins_" + "0" * 27, stored, 1, 2)
    assert await storage_snapshot(env.runtime) == before


# -- concurrency (SECURITY.md principle 9) ------------------------------------------------


async def test_concurrent_duplicate_scope_adds(env: Env, second_store: SqlMachineStore) -> None:
    """Twenty racing adds of one pair from two engines: one DONE, the rest EXISTS."""
    a, _ = await _create(env, "a")
    b, _ = await _create(env, "b")
    outcomes = await _race(
        *(_add(env, a.id, b.id, store=second_store if n % 2 else None) for n in range(20)),
    )
    assert outcomes.count(ScopeOutcome.DONE) == 1
    assert outcomes.count(ScopeOutcome.EXISTS) == 19
    assert await _scope_pairs(env) == {(a.id, b.id)}


async def test_concurrent_adds_never_pass_the_limit(
    env: Env, second_store: SqlMachineStore
) -> None:
    """Twenty distinct adds racing for the last five places: five DONE, 150 scopes in the end."""
    targets = await _bulk(env, MAX_SCOPED_MACHINES + 15)
    machine, _ = await _create(env, "busy", scopes=targets[: MAX_SCOPED_MACHINES - 5])
    racing = targets[MAX_SCOPED_MACHINES - 5 :]
    assert len(racing) == 20
    outcomes = await _race(
        *(
            _add(env, machine.id, target, store=second_store if n % 2 else None)
            for n, target in enumerate(racing)
        ),
    )
    assert outcomes.count(ScopeOutcome.DONE) == 5
    assert outcomes.count(ScopeOutcome.LIMIT_REACHED) == 15
    assert await _scope_count(env, machine.id) == MAX_SCOPED_MACHINES


async def test_concurrent_rotations_leave_one_current_key(
    env: Env, second_store: SqlMachineStore
) -> None:
    """Ten racing rotations: one current key, it is one of those issued, and it alone lasts."""
    machine, original = await _create(env, "rotating")
    results = await _race(
        *(_rotate(env, machine.id, 60, store=second_store if n % 2 else None) for n in range(10)),
    )
    assert all(done for done, _ in results)
    issued = [secret for _, secret in results]
    assert (await _key_rows(env, machine.id)).count(None) == 1
    sealed = await env.store.current_sealed_key(env.instance_id, machine.id)
    assert sealed is not None
    current = env.sealer.open(sealed, machine.id)
    assert current in issued

    env.clock.advance(60_000)
    alive = [s for s in [original, *issued] if await _authenticates(env, s, machine)]
    assert alive == [current]


async def test_delete_racing_with_scope_adds_leaves_no_dangling_scope(
    env: Env, second_store: SqlMachineStore
) -> None:
    """Adds to and from a machine while it is deleted: no scope row survives that names it."""
    doomed, doomed_key = await _create(env, "doomed")
    others = [(await _create(env, f"o{n}"))[0].id for n in range(8)]
    adds = []
    for n, other in enumerate(others):
        store = second_store if n % 2 else None
        adds += [_add(env, other, doomed.id, store=store), _add(env, doomed.id, other, store=store)]
    results = await _race(
        *adds[:8],
        env.store.delete_machine(env.instance_id, doomed.id, now_ms=env.clock.now_ms()),
        *adds[8:],
    )
    deleted = results[8]
    outcomes = results[:8] + results[9:]
    assert deleted is True
    assert set(outcomes) <= {ScopeOutcome.DONE, ScopeOutcome.FROM_MISSING, ScopeOutcome.TO_MISSING}
    assert not any(doomed.id in pair for pair in await _scope_pairs(env))
    assert await _key_rows(env, doomed.id) == []
    assert not await _authenticates(env, doomed_key, doomed)


async def test_opposite_scope_adds_race_without_failure(
    env: Env, second_store: SqlMachineStore
) -> None:
    """``a→b`` and ``b→a`` added at the same moment, for several pairs: all succeed."""
    pairs = [((await _create(env, "x"))[0].id, (await _create(env, "y"))[0].id) for _ in range(5)]
    calls = []
    for x, y in pairs:
        calls += [_add(env, x, y), _add(env, y, x, store=second_store)]
    outcomes = await _race(*calls)
    assert outcomes == [ScopeOutcome.DONE] * 10
    assert await _scope_pairs(env) == {p for x, y in pairs for p in ((x, y), (y, x))}


async def test_create_racing_with_delete_of_its_target(
    env: Env, second_store: SqlMachineStore
) -> None:
    """Creating machines scoped to a machine being deleted: either no machine, or no scope."""
    target, _ = await _create(env, "target")
    summaries = [_summary(env, f"c{n}") for n in range(6)]

    async def create(n: int) -> Machine | None:
        _, stored = _key(env, summaries[n].id)
        store = second_store if n % 2 else env.store
        return await store.create_machine(summaries[n], [target.id], stored)

    results = await _race(
        *(create(n) for n in range(3)),
        env.store.delete_machine(env.instance_id, target.id, now_ms=env.clock.now_ms()),
        *(create(n) for n in range(3, 6)),
    )
    assert results[3] is True
    assert not any(target.id in pair for pair in await _scope_pairs(env))
    for summary, created in zip(summaries, results[:3] + results[4:], strict=True):
        stored = await env.store.get_machine(env.instance_id, summary.id)
        if created is None:  # lost the race: nothing of it was stored
            assert stored is None
        else:  # won the race: the delete then took the scope away
            assert isinstance(created, Machine)
            assert _ids(created.scoped_machines) == [target.id]
            assert stored is not None
            assert stored.scoped_machines == ()


async def test_concurrent_creates_and_updates(env: Env, second_store: SqlMachineStore) -> None:
    """Parallel creates all land; parallel updates of one machine leave one of the values."""
    created = await _race(*(_create(env, f"p{n}") for n in range(10)))
    assert (await _list(env, limit=100))[1] == 10
    machine = created[0][0]
    names = [f"name-{n}" for n in range(10)]
    await _race(
        *(
            (second_store if n % 2 else env.store).update_machine(
                env.instance_id, machine.id, name=name, default_token_ttl=None, now_ms=n
            )
            for n, name in enumerate(names)
        ),
    )
    final = await env.store.get_machine(env.instance_id, machine.id)
    assert final is not None
    assert final.name in names
    assert _ids((await _list(env, query=final.name))[0]) == [machine.id]
