"""The ``signing_keys`` store on real SQLite and PostgreSQL: one active key, races, publication."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import pytest
from sqlalchemy import insert, select

from gatepass_server.services.signing import StoredSigningKey
from gatepass_server.storage.signing import SqlSigningKeyStore
from gatepass_server.storage.tables import m2m_tokens, signing_keys
from helpers import storage_snapshot

if TYPE_CHECKING:
    from gatepass_server.runtime import Runtime

UNKNOWN_INSTANCE: Final = "ins_" + "0" * 27


def _candidate(instance_id: str, n: int, created_at: int = 1000) -> StoredSigningKey:
    """A stand-in key: the store never opens the sealed bytes, so no RSA key is needed."""
    kid = f"kid{n:040d}"
    return StoredSigningKey(
        kid=kid,
        instance_id=instance_id,
        algorithm="RS256",
        sealed_private_key=b"\x01sealed" + kid.encode(),
        public_jwk={"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": kid, "alg": "RS256"},
        created_at=created_at,
        retired_at=None,
    )


@pytest.fixture
def store(runtime: Runtime) -> SqlSigningKeyStore:
    """The store over the test's database."""
    return SqlSigningKeyStore(runtime.database)


@pytest.fixture
async def instance_id(runtime: Runtime) -> str:
    """The default instance."""
    return (await runtime.instances.default()).id


async def _active_kids(runtime: Runtime, instance_id: str) -> list[str]:
    async with runtime.database.read() as conn:
        rows = await conn.execute(
            select(signing_keys.c.kid).where(
                signing_keys.c.instance_id == instance_id,
                signing_keys.c.retired_at.is_(None),
            ),
        )
        return [row.kid for row in rows]


async def test_ensure_active_key_race_has_one_winner(
    runtime: Runtime, store: SqlSigningKeyStore, instance_id: str
) -> None:
    """Eight concurrent first keys: every caller gets the same winner, one row is stored."""
    winners = await asyncio.gather(
        *(store.ensure_active_key(_candidate(instance_id, n)) for n in range(8)),
    )
    kids = {winner.kid for winner in winners if winner is not None}
    assert len(kids) == 1
    assert len(winners) == 8
    assert all(winner is not None for winner in winners)
    assert await _active_kids(runtime, instance_id) == list(kids)
    async with runtime.database.read() as conn:
        assert len((await conn.execute(select(signing_keys))).all()) == 1


async def test_ensure_active_key_returns_the_existing_key(
    store: SqlSigningKeyStore, instance_id: str
) -> None:
    """Once a key is active, a later candidate is not stored and the active key comes back."""
    first = _candidate(instance_id, 1)
    assert await store.ensure_active_key(first) == first
    assert await store.ensure_active_key(_candidate(instance_id, 2)) == first
    assert await store.active_key(instance_id) == first


async def test_concurrent_rotations_leave_exactly_one_active_key(
    runtime: Runtime, store: SqlSigningKeyStore, instance_id: str
) -> None:
    """Five concurrent add_key calls run in some serial order: one active, four retired."""
    results = await asyncio.gather(
        *(store.add_key(_candidate(instance_id, n), now_ms=2000 + n) for n in range(5)),
    )
    assert results == [True] * 5
    assert len(await _active_kids(runtime, instance_id)) == 1
    async with runtime.database.read() as conn:
        rows = (await conn.execute(select(signing_keys))).all()
    assert len(rows) == 5
    assert sum(row.retired_at is not None for row in rows) == 4


async def test_add_key_retires_the_previous_key(
    store: SqlSigningKeyStore, instance_id: str
) -> None:
    """add_key stamps the old key retired_at = now and makes the new one active."""
    old, new = _candidate(instance_id, 1), _candidate(instance_id, 2, created_at=5000)
    assert await store.add_key(old, now_ms=1000)
    assert await store.add_key(new, now_ms=5000)
    assert await store.active_key(instance_id) == new
    published = await store.published_keys(instance_id, 5000)
    assert published == [new]


async def test_unknown_instance_stores_nothing(runtime: Runtime, store: SqlSigningKeyStore) -> None:
    """For an instance that does not exist: None, False, no row."""
    before = await storage_snapshot(runtime)
    assert await store.ensure_active_key(_candidate(UNKNOWN_INSTANCE, 1)) is None
    assert not await store.add_key(_candidate(UNKNOWN_INSTANCE, 2), now_ms=1)
    assert await store.active_key(UNKNOWN_INSTANCE) is None
    assert await store.published_keys(UNKNOWN_INSTANCE, 1) == []
    assert await storage_snapshot(runtime) == before


async def test_published_keys_follow_the_tokens_each_key_signed(
    runtime: Runtime, store: SqlSigningKeyStore, instance_id: str
) -> None:
    """Active first, then retired keys newest first, each only while a token it signed lives."""
    keys = [_candidate(instance_id, n, created_at=1000 * n) for n in range(1, 4)]
    for key in keys:
        assert await store.add_key(key, now_ms=key.created_at)
    async with runtime.database.write() as conn:
        for n, (kid, expiration) in enumerate(
            [(keys[0].kid, 10_000), (keys[1].kid, 20_000), (keys[1].kid, 5_000)],
        ):
            await conn.execute(
                insert(m2m_tokens).values(
                    id=f"mt_{n:032x}",
                    instance_id=instance_id,
                    subject="mch_" + "x" * 27,
                    token_format="jwt",
                    kid=kid,
                    scopes="[]",
                    expiration=expiration,
                    created_at=0,
                    updated_at=0,
                ),
            )
    kids = [k.kid for k in keys]
    assert [k.kid for k in await store.published_keys(instance_id, 4000)] == kids[::-1]
    assert [k.kid for k in await store.published_keys(instance_id, 10_000)] == [kids[2], kids[1]]
    assert [k.kid for k in await store.published_keys(instance_id, 20_000)] == [kids[2]]
