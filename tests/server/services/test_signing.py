"""The signing service on real SQLite and PostgreSQL: lazy keys, races, rotation, the JWKS."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import jwt
import pytest
from sqlalchemy import func, insert, select

from gatepass_server.config import load_master_key
from gatepass_server.domain.sealing import Sealer, SealError
from gatepass_server.errors import NotFound
from gatepass_server.services.signing import (
    ACTIVE_KEY_REFRESH_SECONDS,
    SigningService,
    StoredSigningKey,
)
from gatepass_server.storage.signing import SqlSigningKeyStore
from gatepass_server.storage.tables import m2m_tokens, signing_keys

if TYPE_CHECKING:
    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime

PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi"})
SUBJECT: Final = "mch_" + "s" * 27


class ManualMonotonic:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """The current reading."""
        return self.now


class CountingStore(SqlSigningKeyStore):
    """The real store, counting how often the service asks for the active key."""

    active_reads = 0

    async def active_key(self, instance_id: str) -> StoredSigningKey | None:
        """Count, then read."""
        self.active_reads += 1
        return await super().active_key(instance_id)


def _node(
    runtime: Runtime, clock: FixedClock, monotonic: ManualMonotonic | None = None
) -> SigningService:
    """A second server node: its own service and cache over the same database."""
    sealer = Sealer(load_master_key(runtime.settings))
    store = SqlSigningKeyStore(runtime.database)
    if monotonic is None:
        return SigningService(store, sealer, clock)
    return SigningService(store, sealer, clock, monotonic=monotonic)


async def _default(runtime: Runtime) -> str:
    return (await runtime.instances.default()).id


async def _other(runtime: Runtime) -> str:
    return (await runtime.instances.create("other")).instance.id


async def _rows(runtime: Runtime, instance_id: str) -> list[Any]:
    async with runtime.database.read() as conn:
        return list(
            (
                await conn.execute(
                    select(signing_keys).where(signing_keys.c.instance_id == instance_id),
                )
            ).all(),
        )


async def _insert_token(
    runtime: Runtime, instance_id: str, kid: str, *, expiration: int, token_id: str
) -> None:
    """A JWT-format token row signed by ``kid``, as the token service would write it."""
    now = runtime.clock.now_ms()
    async with runtime.database.write() as conn:
        await conn.execute(
            insert(m2m_tokens).values(
                id=token_id,
                instance_id=instance_id,
                subject=SUBJECT,
                token_format="jwt",
                kid=kid,
                scopes="[]",
                expiration=expiration,
                created_at=now,
                updated_at=now,
            ),
        )


def _kids(jwks: list[dict[str, str]]) -> list[str]:
    return [key["kid"] for key in jwks]


def _verify(token: str, jwks: list[dict[str, str]]) -> dict[str, Any]:
    """Verify as an SDK would: the kid looked up in the JWKS, RS256 only."""
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [key for key in jwks if key["kid"] == kid]
    decoded: dict[str, Any] = jwt.decode(token, jwt.PyJWK(jwk), algorithms=["RS256"])
    return decoded


async def test_first_sign_creates_the_key_lazily(runtime: Runtime) -> None:
    """No key until the first sign; then one active RS256 key that verifies the token."""
    instance_id = await _default(runtime)
    assert await runtime.signing.jwks(instance_id) == []
    assert await _rows(runtime, instance_id) == []
    payload = {"sub": SUBJECT, "exp": 4_102_444_800}
    kid, token = await runtime.signing.sign(instance_id, payload)
    (row,) = await _rows(runtime, instance_id)
    assert (row.kid, row.algorithm, row.retired_at) == (kid, "RS256", None)
    assert row.created_at == runtime.clock.now_ms()
    jwks = await runtime.signing.jwks(instance_id)
    assert _kids(jwks) == [kid]
    assert _verify(token, jwks) == payload
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT", "kid": kid}


async def test_private_key_is_sealed_under_its_kid(runtime: Runtime) -> None:
    """The stored private key is ciphertext that opens only under its own kid."""
    instance_id = await _default(runtime)
    kid, _ = await runtime.signing.sign(instance_id, {"sub": SUBJECT})
    (row,) = await _rows(runtime, instance_id)
    assert b"PRIVATE KEY" not in row.sealed_private_key
    sealer = Sealer(load_master_key(runtime.settings))
    assert sealer.open(row.sealed_private_key, kid).startswith("-----BEGIN PRIVATE KEY-----")
    with pytest.raises(SealError):
        sealer.open(row.sealed_private_key, kid[:-1] + ("A" if kid[-1] != "A" else "B"))


async def test_jwks_exposes_public_members_only(runtime: Runtime) -> None:
    """Neither the JWKS nor the stored public JWK holds d, p, q, dp, dq or qi."""
    instance_id = await _default(runtime)
    await runtime.signing.sign(instance_id, {"sub": SUBJECT})
    await runtime.signing.rotate(instance_id)
    for jwk in await runtime.signing.jwks(instance_id):
        assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}
        assert not PRIVATE_MEMBERS & set(jwk)
    for row in await _rows(runtime, instance_id):
        assert "PRIVATE" not in row.public_jwk
        assert '"d"' not in row.public_jwk


async def test_concurrent_first_signs_create_one_key(runtime: Runtime) -> None:
    """Ten concurrent first signs on a fresh instance all use one key, and one key exists."""
    instance_id = await _default(runtime)
    results = await asyncio.gather(
        *(runtime.signing.sign(instance_id, {"sub": SUBJECT, "n": n}) for n in range(10)),
    )
    assert len({kid for kid, _ in results}) == 1
    assert len(await _rows(runtime, instance_id)) == 1


async def test_concurrent_first_signs_on_two_nodes_create_one_key(
    runtime: Runtime, clock: FixedClock
) -> None:
    """Two nodes racing to create an instance's first key agree on one winner."""
    instance_id = await _default(runtime)
    nodes = (runtime.signing, _node(runtime, clock))
    results = await asyncio.gather(
        *(nodes[n % 2].sign(instance_id, {"sub": SUBJECT}) for n in range(6)),
    )
    assert len({kid for kid, _ in results}) == 1
    rows = await _rows(runtime, instance_id)
    assert len(rows) == 1
    assert rows[0].retired_at is None


async def test_rotate_makes_the_new_key_sign(runtime: Runtime, clock: FixedClock) -> None:
    """Rotation returns a new kid; later tokens carry it; the old key is retired, not deleted."""
    instance_id = await _default(runtime)
    old_kid, _ = await runtime.signing.sign(instance_id, {"sub": SUBJECT})
    clock.advance(1000)
    new_kid = await runtime.signing.rotate(instance_id)
    assert new_kid != old_kid
    kid, token = await runtime.signing.sign(instance_id, {"sub": SUBJECT})
    assert kid == new_kid
    assert _verify(token, await runtime.signing.jwks(instance_id))["sub"] == SUBJECT
    retired = {row.kid: row.retired_at for row in await _rows(runtime, instance_id)}
    assert retired == {old_kid: clock.now_ms(), new_kid: None}


async def test_rotate_before_any_sign_creates_the_first_key(runtime: Runtime) -> None:
    """Rotating an instance that never signed just makes its first key."""
    instance_id = await _default(runtime)
    kid = await runtime.signing.rotate(instance_id)
    assert (await runtime.signing.sign(instance_id, {"sub": SUBJECT}))[0] == kid
    assert len(await _rows(runtime, instance_id)) == 1


async def test_jwks_keeps_a_retired_key_while_its_tokens_live(
    runtime: Runtime, clock: FixedClock
) -> None:
    """After rotation the old key stays published until its last token expires, then goes."""
    instance_id = await _default(runtime)
    old_kid, old_token = await runtime.signing.sign(instance_id, {"sub": SUBJECT})
    expiration = clock.now_ms() + 60_000
    await _insert_token(
        runtime, instance_id, old_kid, expiration=expiration, token_id="mt_" + "1" * 32
    )
    await _insert_token(
        runtime, instance_id, old_kid, expiration=clock.now_ms() + 1, token_id="mt_" + "2" * 32
    )
    new_kid = await runtime.signing.rotate(instance_id)
    jwks = await runtime.signing.jwks(instance_id)
    assert _kids(jwks) == [new_kid, old_kid]
    assert _verify(old_token, jwks)["sub"] == SUBJECT
    clock.advance(59_999)
    assert _kids(await runtime.signing.jwks(instance_id)) == [new_kid, old_kid]
    clock.advance(1)  # now == expiration: the token is expired
    assert _kids(await runtime.signing.jwks(instance_id)) == [new_kid]


async def test_retired_key_without_live_tokens_is_dropped_at_once(runtime: Runtime) -> None:
    """A retired key that signed nothing still live leaves the JWKS at rotation."""
    instance_id = await _default(runtime)
    await runtime.signing.sign(instance_id, {"sub": SUBJECT})
    first = await runtime.signing.rotate(instance_id)
    second = await runtime.signing.rotate(instance_id)
    assert first != second
    assert _kids(await runtime.signing.jwks(instance_id)) == [second]
    assert len(await _rows(runtime, instance_id)) == 3


async def test_instances_never_see_each_others_keys(runtime: Runtime, clock: FixedClock) -> None:
    """Instance B's JWKS never lists A's keys, current or retired; rotating A leaves B alone."""
    a, b = await _default(runtime), await _other(runtime)
    kid_a, _ = await runtime.signing.sign(a, {"sub": SUBJECT})
    kid_b, token_b = await runtime.signing.sign(b, {"sub": SUBJECT})
    assert kid_a != kid_b
    await _insert_token(
        runtime, a, kid_a, expiration=clock.now_ms() + 60_000, token_id="mt_" + "a" * 32
    )
    new_a = await runtime.signing.rotate(a)
    assert _kids(await runtime.signing.jwks(a)) == [new_a, kid_a]
    jwks_b = await runtime.signing.jwks(b)
    assert _kids(jwks_b) == [kid_b]
    assert (await runtime.signing.sign(b, {"sub": SUBJECT}))[0] == kid_b
    assert jwt.get_unverified_header(token_b)["kid"] not in _kids(await runtime.signing.jwks(a))


async def test_active_key_is_loaded_once_and_reused(runtime: Runtime, clock: FixedClock) -> None:
    """Within the refresh bound, signing asks storage once and reuses the parsed key."""
    instance_id = await _default(runtime)
    monotonic = ManualMonotonic()
    store = CountingStore(runtime.database)
    service = SigningService(
        store, Sealer(load_master_key(runtime.settings)), clock, monotonic=monotonic
    )
    kids = {(await service.sign(instance_id, {"sub": SUBJECT, "n": n}))[0] for n in range(20)}
    assert len(kids) == 1
    assert store.active_reads == 1
    monotonic.now += ACTIVE_KEY_REFRESH_SECONDS
    await service.sign(instance_id, {"sub": SUBJECT})
    assert store.active_reads == 2


async def test_rotation_on_another_node_is_picked_up_within_the_bound(
    runtime: Runtime, clock: FixedClock
) -> None:
    """A node keeps its cached key until the refresh bound passes, then signs with the new one."""
    instance_id = await _default(runtime)
    monotonic = ManualMonotonic()
    node = _node(runtime, clock, monotonic)
    old_kid, _ = await node.sign(instance_id, {"sub": SUBJECT})
    new_kid = await runtime.signing.rotate(instance_id)
    monotonic.now += ACTIVE_KEY_REFRESH_SECONDS - 0.1
    assert (await node.sign(instance_id, {"sub": SUBJECT}))[0] == old_kid
    monotonic.now += 0.1
    kid, token = await node.sign(instance_id, {"sub": SUBJECT})
    assert kid == new_kid
    assert _verify(token, await runtime.signing.jwks(instance_id))["sub"] == SUBJECT


@pytest.mark.parametrize("instance_id", ["ins_" + "0" * 27, "ins_short", "ins_\x00" + "0" * 26])
async def test_unknown_instance_is_not_found(runtime: Runtime, instance_id: str) -> None:
    """Signing or rotating for an instance that does not exist is NotFound and stores nothing."""
    with pytest.raises(NotFound):
        await runtime.signing.sign(instance_id, {"sub": SUBJECT})
    with pytest.raises(NotFound):
        await runtime.signing.rotate(instance_id)
    async with runtime.database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(signing_keys))).scalar() == 0
