"""The token service on real SQLite and PostgreSQL: mint, reuse, check reasons, last_used_at."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import delete

from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.domain.tokens import MACHINE_DELETED, TokenFormat, VerifyFailure
from gatepass_server.errors import (
    AuthorizationInvalid,
    FormParamError,
    MachineKeyInvalid,
    NotFound,
    TokenInvalid,
)
from gatepass_server.services.auth import InstancePrincipal, MachinePrincipal
from gatepass_server.services.interfaces import TokenListQuery
from gatepass_server.storage.tables import machine_scopes, machine_secret_keys, machines

if TYPE_CHECKING:
    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime
    from gatepass_server.services.tokens import CreatedToken


class World:
    """An instance with a caller scoped to a receiver, and a bystander."""

    def __init__(self, instance_id: str, caller: str, receiver: str, bystander: str) -> None:
        self.admin = InstancePrincipal(instance_id)
        self.caller = MachinePrincipal(instance_id, caller)
        self.receiver = MachinePrincipal(instance_id, receiver)
        self.bystander = MachinePrincipal(instance_id, bystander)


@pytest.fixture
async def world(runtime: Runtime) -> World:
    """Three machines of the default instance; the caller may call the receiver."""
    instance_id = (await runtime.instances.default()).id
    receiver = (await runtime.machines.create(instance_id, name="receiver")).machine
    caller = (
        await runtime.machines.create(
            instance_id, name="caller", scoped_machine_ids=[receiver.id], default_token_ttl=60
        )
    ).machine
    bystander = (await runtime.machines.create(instance_id, name="bystander")).machine
    return World(instance_id, caller.id, receiver.id, bystander.id)


async def _mint(
    runtime: Runtime,
    world: World,
    *,
    token_format: TokenFormat = TokenFormat.OPAQUE,
    seconds: float | None = None,
    claims: dict[str, object] | None = None,
    min_remaining: int | None = None,
) -> CreatedToken:
    return await runtime.tokens.create(
        world.caller,
        token_format=token_format,
        seconds_until_expiration=seconds,
        claims=claims,
        min_remaining_ttl_seconds=min_remaining,
    )


async def test_create_records_subject_scopes_and_lifetime(
    runtime: Runtime, world: World, clock: FixedClock
) -> None:
    """The caller is the subject, scopes are its scoped machines, lifetime its default TTL."""
    created = await _mint(runtime, world)
    token = created.token
    assert (token.subject, token.scopes) == (world.caller.machine_id, (world.receiver.machine_id,))
    assert token.expiration == clock.now_ms() + 60_000
    assert token.token_format is TokenFormat.OPAQUE
    assert created.secret.startswith("mt_")
    assert await runtime.tokens.get(world.admin, token.id) == token


@pytest.mark.parametrize("token_format", list(TokenFormat))
async def test_check_reports_each_reason(
    runtime: Runtime, world: World, clock: FixedClock, other_sk: str, token_format: TokenFormat
) -> None:
    """check() says why: unknown, other instance, out of scope, scope removed, revoked, expired."""
    created = await _mint(runtime, world, token_format=token_format, seconds=10)
    secret = created.secret
    other = await runtime.authenticator.authenticate(other_sk)
    assert other is not None
    tokens = runtime.tokens
    assert await tokens.check(world.admin, secret) == (created.token, None)
    assert (await tokens.check(world.receiver, secret))[1] is None
    assert (await tokens.check(world.admin, generate_secret(SecretKind.TOKEN)))[1] is (
        VerifyFailure.UNKNOWN
    )
    assert (await tokens.check(world.admin, "garbage"))[1] is VerifyFailure.UNKNOWN
    expected_other = (
        VerifyFailure.OTHER_INSTANCE
        if token_format is TokenFormat.OPAQUE
        else VerifyFailure.UNKNOWN
    )
    assert (await tokens.check(other, secret))[1] is expected_other
    assert (await tokens.check(world.bystander, secret))[1] is VerifyFailure.OUT_OF_SCOPE
    assert (await tokens.check(world.caller, secret))[1] is VerifyFailure.OUT_OF_SCOPE
    clock.set(created.token.expiration)
    assert (await tokens.check(world.admin, secret))[1] is VerifyFailure.EXPIRED
    clock.set(created.token.expiration - 1)
    await runtime.machines.remove_scope(
        world.admin.instance_id, world.caller.machine_id, world.receiver.machine_id
    )
    assert (await tokens.check(world.receiver, secret))[1] is VerifyFailure.SCOPE_REMOVED
    await tokens.revoke(world.admin, created.token.id, "done")
    assert (await tokens.check(world.admin, secret))[1] is VerifyFailure.REVOKED


async def test_verify_raises_token_invalid_and_records_only_success(
    runtime: Runtime, world: World, clock: FixedClock
) -> None:
    """verify() raises TokenInvalid on any failure; only successes reach last_used_at."""
    created = await _mint(runtime, world)
    with pytest.raises(TokenInvalid):
        await runtime.tokens.verify(world.bystander, created.secret)
    await runtime.tokens.flush_last_used()
    assert (await runtime.tokens.get(world.admin, created.token.id)).last_used_at is None
    clock.advance(7)
    assert (await runtime.tokens.verify(world.receiver, created.secret)).id == created.token.id
    assert (await runtime.tokens.get(world.admin, created.token.id)).last_used_at is None
    await runtime.tokens.flush_last_used()
    used = (await runtime.tokens.get(world.admin, created.token.id)).last_used_at
    assert used == created.token.created_at + 7


async def test_last_used_never_moves_backwards(
    runtime: Runtime, world: World, clock: FixedClock
) -> None:
    """A stale pending time does not overwrite a newer recorded one."""
    created = await _mint(runtime, world)
    clock.advance(100)
    await runtime.tokens.verify(world.admin, created.secret)
    await runtime.tokens.flush_last_used()
    await runtime.tokens._tokens.record_last_used({created.token.id: clock.now_ms() - 50})
    assert (await runtime.tokens.get(world.admin, created.token.id)).last_used_at == (
        clock.now_ms()
    )


async def test_last_used_of_many_tokens_lands_in_chunks(
    runtime: Runtime, world: World, clock: FixedClock
) -> None:
    """A flush larger than one chunk advances every token it names, and only forwards."""
    created = await asyncio.gather(*(_mint(runtime, world) for _ in range(2_500)))
    used = {c.token.id: clock.now_ms() + i for i, c in enumerate(created)}
    stale = created[0].token.id
    await runtime.tokens._tokens.record_last_used(used)
    await runtime.tokens._tokens.record_last_used({stale: clock.now_ms() - 1})
    for minted in (created[0], created[1_234], created[-1]):
        token = await runtime.tokens.get(world.admin, minted.token.id)
        assert token.last_used_at == used[minted.token.id]


async def test_last_used_writer_flushes_when_cancelled(
    runtime: Runtime, world: World, clock: FixedClock
) -> None:
    """The background writer flushes once more on its way out."""
    created = await _mint(runtime, world)
    clock.advance(3)
    await runtime.tokens.verify(world.admin, created.secret)
    writer = asyncio.create_task(runtime.tokens.run_last_used_writer())
    await asyncio.sleep(0)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    token = await runtime.tokens.get(world.admin, created.token.id)
    assert token.last_used_at == clock.now_ms()


async def test_reuse_returns_the_same_secret(runtime: Runtime, world: World) -> None:
    """With min_remaining_ttl_seconds the same claims give the same id and secret."""
    first = await _mint(runtime, world, claims={"a": 1}, min_remaining=30)
    again = await _mint(runtime, world, claims={"a": 1}, min_remaining=30)
    assert (again.token.id, again.secret) == (first.token.id, first.secret)
    assert (await runtime.tokens.verify(world.receiver, again.secret)).id == first.token.id


async def test_min_remaining_must_be_below_lifetime(runtime: Runtime, world: World) -> None:
    """min_remaining_ttl_seconds >= the lifetime is a 400 form error on that field."""
    cases: list[tuple[float | None, int]] = [(None, 60), (None, 61), (10.0, 10), (0.5, 1)]
    for seconds, min_remaining in cases:
        with pytest.raises(FormParamError) as caught:
            await _mint(runtime, world, seconds=seconds, min_remaining=min_remaining)
        assert caught.value.param_name == "min_remaining_ttl_seconds"
        assert caught.value.status_for() == 400


async def test_create_for_a_deleted_machine_is_refused(runtime: Runtime, world: World) -> None:
    """A principal whose machine was deleted meanwhile cannot mint."""
    await runtime.machines.delete(world.admin.instance_id, world.caller.machine_id)
    with pytest.raises(MachineKeyInvalid):
        await _mint(runtime, world)


async def test_concurrent_mints_are_each_stored_and_valid(runtime: Runtime, world: World) -> None:
    """Mints that share a transaction (group commit) each get their own stored token."""
    formats = [TokenFormat.OPAQUE, TokenFormat.JWT] * 20
    created = await asyncio.gather(*(_mint(runtime, world, token_format=f) for f in formats))
    assert len({c.token.id for c in created}) == len(formats)
    for minted in created:
        assert await runtime.tokens.get(world.admin, minted.token.id) == minted.token
        assert await runtime.tokens.check(world.receiver, minted.secret) == (minted.token, None)


async def test_a_shared_mint_transaction_refuses_only_the_deleted_machines_tokens(
    runtime: Runtime, world: World
) -> None:
    """The machine check runs per token inside the shared transaction, not per batch."""
    before = await _mint(runtime, world)  # the caller is now in the minting cache
    caller_id = world.caller.machine_id
    async with runtime.database.write() as conn:  # deleted behind the cache's back
        await conn.execute(
            delete(machine_scopes).where(machine_scopes.c.from_machine_id == caller_id)
        )
        await conn.execute(
            delete(machine_secret_keys).where(machine_secret_keys.c.machine_id == caller_id)
        )
        await conn.execute(delete(machines).where(machines.c.id == caller_id))
    mints = [_mint(runtime, world) for _ in range(5)]
    mints += [
        runtime.tokens.create(
            world.bystander,
            token_format=TokenFormat.OPAQUE,
            seconds_until_expiration=None,
            claims=None,
            min_remaining_ttl_seconds=None,
        )
        for _ in range(5)
    ]
    outcomes = await asyncio.gather(*mints, return_exceptions=True)
    assert all(isinstance(o, MachineKeyInvalid) for o in outcomes[:5])
    for minted in outcomes[5:]:
        assert not isinstance(minted, BaseException)
        assert await runtime.tokens.get(world.admin, minted.token.id) == minted.token
    query = TokenListQuery(
        subject=caller_id, include_revoked=True, include_expired=True, limit=100, offset=0
    )
    assert await runtime.tokens.list(world.admin, query) == ([before.token], 1)


async def test_minting_sees_a_new_default_lifetime_and_scope_at_once(
    runtime: Runtime, world: World, clock: FixedClock
) -> None:
    """The machine read for minting is cached, and dropped by the change it depends on."""
    instance_id = world.admin.instance_id
    assert (await _mint(runtime, world)).token.expiration == clock.now_ms() + 60_000
    await runtime.machines.update(instance_id, world.caller.machine_id, default_token_ttl=90)
    assert (await _mint(runtime, world)).token.expiration == clock.now_ms() + 90_000
    await runtime.machines.add_scope(
        instance_id, world.caller.machine_id, world.bystander.machine_id
    )
    scopes = (await _mint(runtime, world)).token.scopes
    assert set(scopes) == {world.receiver.machine_id, world.bystander.machine_id}
    await runtime.machines.remove_scope(
        instance_id, world.caller.machine_id, world.receiver.machine_id
    )
    assert (await _mint(runtime, world)).token.scopes == (world.bystander.machine_id,)
    await runtime.machines.delete(instance_id, world.bystander.machine_id)
    assert (await _mint(runtime, world)).token.scopes == ()


async def test_delete_revokes_with_machine_deleted(runtime: Runtime, world: World) -> None:
    """Deleting the subject revokes its tokens with reason machine_deleted."""
    created = await _mint(runtime, world)
    await runtime.machines.delete(world.admin.instance_id, world.caller.machine_id)
    token = await runtime.tokens.get(world.admin, created.token.id)
    assert (token.revoked, token.revocation_reason) == (True, MACHINE_DELETED)
    assert (await runtime.tokens.check(world.admin, created.secret))[1] is VerifyFailure.REVOKED


async def test_machine_principal_sees_only_its_own(runtime: Runtime, world: World) -> None:
    """list/get/revoke by another machine: 403 for list, NotFound for get and revoke."""
    created = await _mint(runtime, world)
    query = TokenListQuery(
        subject=world.caller.machine_id,
        include_revoked=False,
        include_expired=False,
        limit=10,
        offset=0,
    )
    assert (await runtime.tokens.list(world.caller, query))[1] == 1
    with pytest.raises(AuthorizationInvalid):
        await runtime.tokens.list(world.receiver, query)
    with pytest.raises(NotFound):
        await runtime.tokens.get(world.receiver, created.token.id)
    with pytest.raises(NotFound):
        await runtime.tokens.revoke(world.receiver, created.token.id, "x")
    assert not (await runtime.tokens.get(world.admin, created.token.id)).revoked


async def test_revoke_is_idempotent(runtime: Runtime, world: World, clock: FixedClock) -> None:
    """The first revocation's time and reason stay."""
    created = await _mint(runtime, world)
    first = await runtime.tokens.revoke(world.caller, created.token.id, "first")
    clock.advance(5)
    second = await runtime.tokens.revoke(world.admin, created.token.id, "second")
    assert second == first
    assert second.revocation_reason == "first"


async def test_check_of_a_padded_jwt_is_unknown_not_a_second_spelling(
    runtime: Runtime, world: World
) -> None:
    """Fuzz finding: PyJWT accepts trailing "=" on a segment, so ``jwt + "=="`` verified."""
    created = await _mint(runtime, world, token_format=TokenFormat.JWT)
    assert (await runtime.tokens.check(world.admin, created.secret))[1] is None
    for padded in (created.secret + "==", created.secret + "=", created.secret + "===="):
        assert await runtime.tokens.check(world.admin, padded) == (None, VerifyFailure.UNKNOWN)


@pytest.mark.parametrize(
    "presented",
    ["mt_\udcff", "a\ud800.b.c", "mt_" + "a" * 20_000, "é.é.é"],
    ids=["surrogate-escaped-byte", "jws-with-surrogate", "overlong", "non-ascii-jws"],
)
async def test_check_of_text_no_token_can_be_is_unknown_not_an_error(
    runtime: Runtime, world: World, presented: str
) -> None:
    """Fuzz finding: a lone surrogate raised UnicodeEncodeError from the digest.

    ``gatepass-server tokens verify`` passes its argument here (a non-UTF-8 byte in argv
    is a lone surrogate in Python); any such string is simply not a token.
    """
    assert await runtime.tokens.check(world.admin, presented) == (None, VerifyFailure.UNKNOWN)
