"""The verification cache on a live runtime: the hot path, wake-ups, and failing closed.

What a node's cache may do is fixed by DESIGN.md (a warm verify touches no storage) and
SECURITY.md principle 1 (when storage cannot be read and the cache cannot prove validity,
verify answers 503, never 200).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from sqlalchemy import event

from gatepass_server.domain.tokens import TokenFormat
from gatepass_server.errors import ServiceUnavailable, TokenInvalid
from gatepass_server.runtime import Runtime
from gatepass_server.services.auth import InstancePrincipal, MachinePrincipal
from gatepass_server.services.cache import STALE_AFTER_SECONDS, VerifyCache
from gatepass_server.services.changes import ChangeFollower
from gatepass_server.storage.changes import SqlChangeStore
from gatepass_server.storage.database import Database
from gatepass_server.storage.notify import PostgresChannel, RedisChannel
from gatepass_server.storage.schema import upgrade
from helpers import autocommit, throwaway_postgres_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from gatepass_server.config import Settings
    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.services.changes import PushChannel
    from gatepass_server.services.tokens import CreatedToken

WAKE_TIMEOUT = 5.0
"""Generous: the follower under test polls only every minute, so any wake-up within this
is the push channel's doing."""


@dataclasses.dataclass
class Pair:
    """A caller scoped to a receiver, and one token of each format minted by the caller."""

    admin: InstancePrincipal
    receiver_key: str
    caller: MachinePrincipal
    opaque: CreatedToken
    jwt: CreatedToken


async def _pair(runtime: Runtime) -> Pair:
    instance_id = (await runtime.instances.default()).id
    receiver = await runtime.machines.create(instance_id, name="receiver")
    caller = await runtime.machines.create(
        instance_id, name="caller", scoped_machine_ids=[receiver.machine.id]
    )
    principal = MachinePrincipal(instance_id, caller.machine.id)

    async def mint(token_format: TokenFormat) -> CreatedToken:
        return await runtime.tokens.create(
            principal,
            token_format=token_format,
            seconds_until_expiration=None,
            claims=None,
            min_remaining_ttl_seconds=None,
        )

    return Pair(
        InstancePrincipal(instance_id),
        receiver.secret_key,
        principal,
        await mint(TokenFormat.OPAQUE),
        await mint(TokenFormat.JWT),
    )


@contextlib.contextmanager
def counting_statements(database: Database) -> Iterator[list[str]]:
    """Every SQL statement the database runs inside the block."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def _verify_with_key(runtime: Runtime, key: str, secret: str) -> None:
    caller = await runtime.authenticator.authenticate(key)
    assert caller is not None
    await runtime.tokens.verify(caller, secret)


# -- the hot path ----------------------------------------------------------------------------


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
async def test_a_warm_verify_makes_no_database_round_trip(
    runtime: Runtime, sk: str, token_format: str
) -> None:
    """Authenticating the caller's key and verifying a seen token read nothing from storage."""
    pair = await _pair(runtime)
    secret = (pair.opaque if token_format == "opaque" else pair.jwt).secret
    for key in (sk, pair.receiver_key):
        await _verify_with_key(runtime, key, secret)  # cold: fills the cache
        with counting_statements(runtime.database) as statements:
            for _ in range(3):
                await _verify_with_key(runtime, key, secret)
        assert statements == []


async def test_the_writing_node_never_answers_valid_after_its_own_revoke(runtime: Runtime) -> None:
    """The revoking node applies its change before the revoke returns: no stale cache hit."""
    pair = await _pair(runtime)
    receiver = await runtime.authenticator.authenticate(pair.receiver_key)
    assert receiver is not None
    for created in (pair.opaque, pair.jwt):
        await runtime.tokens.verify(receiver, created.secret)
        await runtime.tokens.revoke(pair.admin, created.token.id, None)
        with pytest.raises(TokenInvalid):
            await runtime.tokens.verify(receiver, created.secret)


async def test_a_stopped_follower_stops_the_cache_answering(runtime: Runtime, sk: str) -> None:
    """Without a follower the cache vouches for nothing: every verify reads storage."""
    pair = await _pair(runtime)
    await _verify_with_key(runtime, sk, pair.opaque.secret)
    await runtime.changes.stop()
    await runtime.tokens.revoke(pair.admin, pair.jwt.token.id, None)  # a write syncs nothing
    await _verify_with_key(runtime, sk, pair.opaque.secret)
    with counting_statements(runtime.database) as statements:
        await _verify_with_key(runtime, sk, pair.opaque.secret)
    assert statements != []


# -- wake-ups --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def slow_follower(runtime: Runtime, channel: PushChannel) -> AsyncIterator[ChangeFollower]:
    """A second node's follower that polls only every minute: only ``channel`` can wake it."""
    database = Database(runtime.settings.database_url)
    follower = ChangeFollower(
        SqlChangeStore(database),
        VerifyCache(),
        runtime.clock,
        channel,
        poll_seconds=60,
        fast_poll_seconds=60,
    )
    await follower.start()
    try:
        async with asyncio.timeout(WAKE_TIMEOUT):
            while not follower.push_connected:  # noqa: ASYNC110 - a property, not an event
                await asyncio.sleep(0.01)
        yield follower
    finally:
        await follower.stop()
        await database.dispose()


async def _revoke_and_await_wake(writer: Runtime, follower: ChangeFollower) -> None:
    pair = await _pair(writer)
    changed = follower.changed()
    await writer.tokens.revoke(pair.admin, pair.opaque.token.id, None)
    async with asyncio.timeout(WAKE_TIMEOUT):
        await changed.wait()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_notify_wakes_other_nodes(runtime: Runtime) -> None:
    """A commit's NOTIFY reaches a LISTENing node long before its next poll."""
    async with slow_follower(runtime, PostgresChannel(runtime.database.url)) as follower:
        await _revoke_and_await_wake(runtime, follower)


async def test_redis_pubsub_wakes_other_nodes(
    settings: Settings, clock: FixedClock, redis_url: str
) -> None:
    """With GATEPASS_REDIS_URL, a writer publishes after commit and subscribers wake."""
    writer = Runtime.build(dataclasses.replace(settings, redis_url=redis_url), clock=clock)
    await writer.prepare()
    await writer.start()
    try:
        async with slow_follower(writer, RedisChannel(redis_url)) as follower:
            await _revoke_and_await_wake(writer, follower)
    finally:
        await writer.close()


async def test_a_signing_key_rotation_elsewhere_takes_over_here_at_once(
    runtime: Runtime, clock: FixedClock
) -> None:
    """Rotated on another node: this one signs with the new key and verifies its tokens."""
    pair = await _pair(runtime)  # this node has signed (and cached the JWKS) already
    await runtime.tokens.verify(pair.admin, pair.jwt.secret)
    old_kid = jwt.get_unverified_header(pair.jwt.secret)["kid"]
    other = Runtime.build(runtime.settings, clock=clock)
    try:
        changed = runtime.changes.changed()
        new_kid = await other.signing.rotate(pair.admin.instance_id)
        minted_elsewhere = await other.tokens.create(
            pair.caller,
            token_format=TokenFormat.JWT,
            seconds_until_expiration=None,
            claims=None,
            min_remaining_ttl_seconds=None,
        )
        async with asyncio.timeout(WAKE_TIMEOUT):
            await changed.wait()
        kid, _ = await runtime.signing.sign(pair.admin.instance_id, {"sub": pair.caller.machine_id})
        assert kid == new_kid != old_kid
        await runtime.tokens.verify(pair.admin, minted_elsewhere.secret)
        await runtime.tokens.verify(pair.admin, pair.jwt.secret)  # the old key stays published
    finally:
        await other.close()


# -- failing closed --------------------------------------------------------------------------


@pytest.fixture
def own_postgres_database(postgres_server_url: str) -> Iterator[str]:
    """A database of this test's own, which the test may make unreachable."""
    with throwaway_postgres_database(postgres_server_url, "gatepass_fault") as url:
        yield url


async def _cut_off(admin_url: str, name: str, *, allow: bool) -> None:
    await autocommit(admin_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
    if not allow:
        await autocommit(
            admin_url,
            # The name is our own throwaway database's, not input.
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",  # noqa: S608
        )


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_unreachable_storage_means_503_never_200(
    own_postgres_database: str, postgres_server_url: str, settings: Settings, clock: FixedClock
) -> None:
    """Storage gone: once the cache can no longer prove validity, verify is 503, not 200/404."""
    node = Runtime.build(
        dataclasses.replace(settings, database_url=own_postgres_database), clock=clock
    )
    await upgrade(node.database)
    await node.prepare()
    await node.start()
    name = own_postgres_database.rsplit("/", 1)[1]
    try:
        pair = await _pair(node)
        caller = InstancePrincipal(pair.admin.instance_id)
        await node.tokens.verify(caller, pair.opaque.secret)
        await _cut_off(postgres_server_url, name, allow=False)
        await asyncio.sleep(STALE_AFTER_SECONDS + 0.5)
        assert not node.cache.fresh()
        for secret in (pair.opaque.secret, pair.jwt.secret):
            with pytest.raises(ServiceUnavailable):
                await node.tokens.verify(caller, secret)
        await _cut_off(postgres_server_url, name, allow=True)
        async with asyncio.timeout(WAKE_TIMEOUT):  # the follower catches up by itself
            while not node.cache.fresh():  # noqa: ASYNC110 - a property, not an event
                await asyncio.sleep(0.05)
        await node.tokens.verify(caller, pair.opaque.secret)
    finally:
        await _cut_off(postgres_server_url, name, allow=True)
        await node.close()
