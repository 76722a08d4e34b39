"""Concurrent histories on two nodes, checked against the safety properties of SECURITY.md.

Two runtimes over one database stand for two server nodes: each has its own verification
cache and follows the change log (NOTIFY on PostgreSQL, polling on SQLite). Operations run
concurrently; every invocation is recorded with its start and end times (monotonic), and
the history is checked afterwards:

- after a revoke is acknowledged, no verify that starts later succeeds on the node that
  revoked, nor on the other node after the propagation bound;
- the same for every token and key of a deleted machine (delete-while-minting included);
- every successful verify is of a token that a create actually returned.

Runs are seeded and bounded in count and time, so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import pytest

from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.domain.tokens import TokenFormat
from gatepass_server.errors import MachineKeyInvalid, TokenInvalid
from gatepass_server.runtime import Runtime
from gatepass_server.services.auth import InstancePrincipal, MachinePrincipal
from gatepass_server.services.changes import POLL_SECONDS
from gatepass_server.services.interfaces import TokenListQuery

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from gatepass_server.domain.clock import FixedClock

BOUND: Final = POLL_SECONDS + 0.5
"""The documented propagation bound (one poll period) plus time to read the log."""

RUN_SECONDS: Final = 1.5 + BOUND
MAX_OPS_PER_WORKER: Final = 3000


@dataclass(frozen=True)
class Op:
    """One recorded invocation."""

    node: int
    subject: str  # the token id, or the machine id for creates and deletes
    started: float
    ok: bool


@dataclass
class History:
    """Two nodes, an admin and a receiver; what ran on them and when it was acknowledged."""

    nodes: tuple[Runtime, Runtime]
    admin: InstancePrincipal
    receiver: MachinePrincipal
    rng: random.Random
    deadline: float = field(default_factory=lambda: time.monotonic() + RUN_SECONDS)
    acks: dict[str, tuple[int, float]] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    mints: list[Op] = field(default_factory=list)
    returned: dict[str, tuple[str, str]] = field(default_factory=dict)  # secret → (subject, id)

    def running(self) -> Iterator[int]:
        """Bounded in count and in time."""
        for n in range(MAX_OPS_PER_WORKER):
            if time.monotonic() >= self.deadline:
                return
            yield n

    async def caller(self) -> tuple[str, str]:
        """A new machine scoped to the receiver: its id and key."""
        created = await self.nodes[0].machines.create(
            self.admin.instance_id, name="caller", scoped_machine_ids=[self.receiver.machine_id]
        )
        return created.machine.id, created.secret_key

    async def mint(self, node: int, key: str, token_format: TokenFormat) -> None:
        """Authenticate ``key`` and mint on ``node``, recording the outcome."""
        started = time.monotonic()
        principal = await self.nodes[node].authenticator.authenticate(key)
        subject = principal.machine_id if isinstance(principal, MachinePrincipal) else key
        try:
            if not isinstance(principal, MachinePrincipal):
                raise MachineKeyInvalid  # noqa: TRY301 - one path for both refusals
            created = await self.nodes[node].tokens.create(
                principal,
                token_format=token_format,
                seconds_until_expiration=None,
                claims=None,
                min_remaining_ttl_seconds=None,
            )
        except MachineKeyInvalid:
            self.mints.append(Op(node, subject, started, ok=False))
        else:
            self.returned[created.secret] = (principal.machine_id, created.token.id)
            self.mints.append(Op(node, principal.machine_id, started, ok=True))

    async def verify(self, node: int, secret: str, *, by: str) -> None:
        """Verify on ``node``; record it under the token's ``by`` ("token" or "machine")."""
        subject, token_id = self.returned.get(secret, ("bogus", "bogus"))
        started = time.monotonic()
        try:
            token = await self.nodes[node].tokens.verify(self.receiver, secret)
        except TokenInvalid:
            ok = False
        else:
            assert token.id == token_id, "verified a token that no create returned"
            ok = True
        self.ops.append(Op(node, token_id if by == "token" else subject, started, ok=ok))

    def acknowledged(self, subject: str, node: int) -> None:
        """``subject`` was revoked or deleted on ``node``, acknowledged now."""
        self.acks[subject] = (node, time.monotonic())

    def late(self, ops: list[Op]) -> list[Op]:
        """Successes that started after their subject's change must have been visible."""
        return [op for op in ops if op.ok and op.subject in self.acks and self.visible(op)]

    def visible(self, op: Op) -> bool:
        """Whether ``op`` started late enough that it must see the acknowledged change."""
        node, at = self.acks[op.subject]
        return op.started > (at if op.node == node else at + BOUND)


@pytest.fixture
async def history(
    runtime: Runtime, clock: FixedClock, request: pytest.FixtureRequest
) -> AsyncIterator[History]:
    """Two started nodes over the same database: the test runtime and a second one."""
    other = Runtime.build(runtime.settings, clock=clock)
    await other.start()
    instance_id = (await runtime.instances.default()).id
    receiver = (await runtime.machines.create(instance_id, name="receiver")).machine
    try:
        yield History(
            nodes=(runtime, other),
            admin=InstancePrincipal(instance_id),
            receiver=MachinePrincipal(instance_id, receiver.id),
            rng=random.Random(request.param),
        )
    finally:
        await other.close()


@pytest.mark.parametrize("history", [7], indirect=True)
async def test_no_verify_succeeds_after_an_acknowledged_revoke(history: History) -> None:
    """Revokes on either node race verifies on both; none succeeds after the revoke is seen."""
    h = history
    _, key = await h.caller()
    for n in range(24):
        await h.mint(0, key, TokenFormat.JWT if n % 3 == 0 else TokenFormat.OPAQUE)
    secrets = [*h.returned, *(generate_secret(SecretKind.TOKEN) for _ in range(4))]
    to_revoke = h.rng.sample(sorted(token_id for _, token_id in h.returned.values()), 16)

    async def revoker() -> None:
        for token_id in to_revoke:
            await asyncio.sleep(h.rng.uniform(0, 1.5 / len(to_revoke)))
            node = h.rng.randrange(2)
            await h.nodes[node].tokens.revoke(h.admin, token_id, "history")
            h.acknowledged(token_id, node)

    async def verifier(node: int) -> None:
        for _ in h.running():
            await h.verify(node, h.rng.choice(secrets), by="token")
            await asyncio.sleep(0)

    await asyncio.gather(revoker(), *(verifier(n % 2) for n in range(4)))

    assert h.late(h.ops) == []
    for node in (0, 1):  # not vacuous: revoked tokens verified before, were refused after
        revoked = [op for op in h.ops if op.node == node and op.subject in h.acks]
        assert any(op.ok for op in revoked)
        assert any(not op.ok and h.visible(op) for op in revoked)
    for node in (0, 1):
        for secret, (_, token_id) in h.returned.items():
            if token_id in h.acks:
                with pytest.raises(TokenInvalid):
                    await h.nodes[node].tokens.verify(h.receiver, secret)


@pytest.mark.parametrize("history", [3], indirect=True)
async def test_nothing_of_a_machine_deleted_while_minting_survives(history: History) -> None:
    """Mints on both nodes race the machine's deletion; afterwards no key or token works."""
    h = history
    callers = [await h.caller() for _ in range(6)]

    async def deleter(machine_id: str) -> None:
        await asyncio.sleep(h.rng.uniform(0.1, 1.2))
        node = h.rng.randrange(2)
        await h.nodes[node].machines.delete(h.admin.instance_id, machine_id)
        h.acknowledged(machine_id, node)

    async def minter(node: int, key: str) -> None:
        for _ in h.running():
            await h.mint(node, key, TokenFormat.OPAQUE)
            await asyncio.sleep(0.005)

    async def verifier(node: int) -> None:
        for _ in h.running():
            if h.returned:
                await h.verify(node, h.rng.choice(list(h.returned)), by="machine")
            await asyncio.sleep(0)

    await asyncio.gather(
        *(deleter(machine_id) for machine_id, _ in callers),
        *(minter(node, key) for _, key in callers for node in (0, 1)),
        verifier(0),
        verifier(1),
    )

    assert h.late(h.mints) == []
    assert h.late(h.ops) == []
    assert any(op.ok for op in h.mints)  # not vacuous: mints succeeded before each delete
    await _assert_all_dead(h, callers)


async def _assert_all_dead(h: History, callers: list[tuple[str, str]]) -> None:
    """No returned token verifies and no key authenticates on any node; none is live."""
    for node in h.nodes:
        for secret in h.returned:
            with pytest.raises(TokenInvalid):
                await node.tokens.verify(h.receiver, secret)
        for _, key in callers:
            assert await node.authenticator.authenticate(key) is None
    for machine_id, _ in callers:
        query = TokenListQuery(
            subject=machine_id, include_revoked=False, include_expired=True, limit=100, offset=0
        )
        live, _ = await h.nodes[0].tokens.list(h.admin, query)
        assert live == [], "a token of a deleted machine is still live"
