"""Two ``gatepass-server`` processes on one database: a change on one reaches the other.

Node A takes every write, node B answers the reads whose answer the write changes. B's
verification cache is warmed first, so what is tested is its invalidation through the
change log (services/changes.py): LISTEN/NOTIFY on PostgreSQL, Redis pub/sub when
configured, polling on SQLite. The documented bound is milliseconds while a push channel
delivers and one poll period (1 s) plus the read if a notification is lost; these tests
allow 2 s (SECURITY.md: "nor on another node after the documented propagation bound"),
and check that a node that has answered "no" never answers "yes" again. They measure the
delay from the writer's acknowledgement (printed, and summed up at the end of the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx
import pytest

from gatepass_server.config import Settings
from gatepass_server.runtime import Runtime
from gatepass_server.storage.changes import NOTIFY_CHANNEL
from helpers import auth, live_server

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from pathlib import Path

    from gatepass_server.domain.tokens import M2MToken

T = TypeVar("T")

PROPAGATION_BOUND_SECONDS: Final = 2.0
"""The documented worst case, one poll period (1 s) plus the read, with margin for load."""
PROBE_INTERVAL_SECONDS: Final = 0.001
"""Between rounds of probes; a probe is an HTTP round trip of its own (about 1-3 ms)."""
MAX_PROBE_ROUNDS: Final = int(PROPAGATION_BOUND_SECONDS / PROBE_INTERVAL_SECONDS) + 1
"""Each round sleeps one interval, so the time bound always ends the wait first."""
STAYS_CHECKS: Final = 5
STAYS_INTERVAL_SECONDS: Final = 0.05
WARM_VERIFIES: Final = 3
REVOKE_SAMPLES: Final = 4
QUIET_REVOKE_SAMPLES: Final = 3
SUBSCRIBE_TIMEOUT_SECONDS: Final = 10.0


@dataclass(frozen=True)
class Cluster:
    """Two nodes on one database: ``a`` takes the writes, ``b`` is watched."""

    path: str
    a: httpx.Client
    b: httpx.Client
    sk: str
    env: Mapping[str, str]
    """A node's environment, for admin actions against the same storage."""


@dataclass(frozen=True)
class Pair:
    """A caller machine scoped to a receiver machine, with both secret keys."""

    caller_id: str
    caller_key: str
    receiver_id: str
    receiver_key: str


def _wait_for_subscribers(redis_url: str, count: int) -> None:
    """Until ``count`` clients listen on the Redis channel (bounded): the push path is up."""
    import redis  # noqa: PLC0415 - only the Redis path needs it, as in the root conftest

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_SECONDS
        subscribed = 0
        while time.monotonic() < deadline:
            ((_, subscribed),) = client.pubsub_numsub(NOTIFY_CHANNEL)
            if subscribed >= count:
                return
            time.sleep(0.05)
        pytest.fail(f"only {subscribed} of {count} nodes subscribed to Redis {NOTIFY_CHANNEL}")
    finally:
        client.close()


@pytest.fixture(scope="module")
def cluster(
    cluster_path: str,
    cluster_storage: dict[str, str],
    node_env: Callable[[Mapping[str, str], Path], dict[str, str]],
    bootstrap_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Nodes A and B, started one after the other (A migrates and seeds the database)."""
    root = tmp_path_factory.mktemp(f"cluster-{cluster_path}")
    with contextlib.ExitStack() as stack:
        clients = []
        for name in ("a", "b"):
            env = node_env(cluster_storage, root / name)
            server = stack.enter_context(live_server(env, root / f"{name}.log"))
            clients.append(stack.enter_context(httpx.Client(base_url=server.url, timeout=10.0)))
        if "GATEPASS_REDIS_URL" in cluster_storage:
            _wait_for_subscribers(cluster_storage["GATEPASS_REDIS_URL"], 2)
        node_a, node_b = clients
        yield Cluster(
            cluster_path, node_a, node_b, bootstrap_key, node_env(cluster_storage, root / "cli")
        )


# -- requests ----------------------------------------------------------------------------


def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text)
    body: dict[str, Any] = response.json()
    return body


def _pair(cluster: Cluster) -> Pair:
    receiver = _ok(
        cluster.a.post("/v1/machines", json={"name": "receiver"}, headers=auth(cluster.sk))
    )
    caller = _ok(
        cluster.a.post(
            "/v1/machines",
            json={"name": "caller", "scoped_machines": [receiver["id"]]},
            headers=auth(cluster.sk),
        ),
    )
    return Pair(caller["id"], caller["secret_key"], receiver["id"], receiver["secret_key"])


def _mint(cluster: Cluster, machine_key: str, token_format: str) -> dict[str, Any]:
    response = cluster.a.post(
        "/v1/m2m_tokens", json={"token_format": token_format}, headers=auth(machine_key)
    )
    return _ok(response, 201)


def _verify(node: httpx.Client, key: str, token: str) -> Callable[[], int]:
    """Verify ``token`` with ``key``: 200 valid, 404 not, 401 the key no longer works."""

    def probe() -> int:
        response = node.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(key))
        assert response.status_code in {200, 401, 404}, response.text
        return response.status_code

    return probe


def _key(node: httpx.Client, key: str, path: str) -> Callable[[], int]:
    """Call a read-only ``path`` with ``key``: 200 while it works, 401 once it does not."""

    def probe() -> int:
        response = node.get(path, headers=auth(key))
        assert response.status_code in {200, 401}, response.text
        return response.status_code

    return probe


def _machine_key(node: httpx.Client, key: str, machine_id: str) -> Callable[[], int]:
    return _key(node, key, f"/v1/m2m_tokens?subject={machine_id}&limit=1")


def _instance_key(node: httpx.Client, key: str) -> Callable[[], int]:
    return _key(node, key, "/v1/machines?limit=1")


def _admin(env: Mapping[str, str], action: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``action`` as the admin CLI does: a runtime of its own on the cluster's storage.

    A third writer that serves nothing; the nodes learn of its change like of any other.
    """

    async def go() -> T:
        runtime = Runtime.build(Settings.from_env(env=env))
        try:
            return await action(runtime)
        finally:
            await runtime.close()

    return asyncio.run(go())


# -- observing a change ------------------------------------------------------------------


def _warm(*probes: Callable[[], int]) -> None:
    """Ask a few times (answer 200), so each node answers from its cache from now on."""
    for _ in range(WARM_VERIFIES):
        for probe in probes:
            assert probe() == 200


def _until(since: float, *watched: tuple[Callable[[], int], int]) -> list[float]:
    """Seconds from ``since`` until each ``(probe, want)`` answers ``want`` (before: 200).

    The probes take turns, so each gets its own time. Fails once a probe that started
    after the bound still answers 200 (or, as a backstop, after ``MAX_PROBE_ROUNDS``).
    """
    deadline = since + PROPAGATION_BOUND_SECONDS
    seconds: dict[int, float] = {}
    for _ in range(MAX_PROBE_ROUNDS):
        for index, (probe, want) in enumerate(watched):
            if index in seconds:
                continue
            started = time.monotonic()
            status = probe()
            if status == want:
                seconds[index] = time.monotonic() - since
                continue
            assert status == 200, status
            if started > deadline:
                pytest.fail(f"still 200 {started - since:.3f}s after the acknowledgement")
        if len(seconds) == len(watched):
            return [seconds[index] for index in range(len(watched))]
        time.sleep(PROBE_INTERVAL_SECONDS)
    pytest.fail(f"gave up after {MAX_PROBE_ROUNDS} rounds of probes")


def _stays(want: int, *probes: Callable[[], int]) -> None:
    """The new answer holds: a node that has said "no" never flips back to "yes"."""
    for _ in range(STAYS_CHECKS):
        for probe in probes:
            assert probe() == want
        time.sleep(STAYS_INTERVAL_SECONDS)


# -- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_a_revoke_on_one_node_reaches_the_other(
    cluster: Cluster, record_propagation: Callable[[str, str, float], None], token_format: str
) -> None:
    """A token revoked on A is refused by B (warm cache) within the bound, and stays refused."""
    pair = _pair(cluster)
    refused: list[Callable[[], int]] = []
    for _ in range(REVOKE_SAMPLES):
        token = _mint(cluster, pair.caller_key, token_format)
        on_a = _verify(cluster.a, cluster.sk, token["token"])
        on_b = _verify(cluster.b, cluster.sk, token["token"])
        by_receiver_on_b = _verify(cluster.b, pair.receiver_key, token["token"])
        _warm(on_a, on_b, by_receiver_on_b)

        revoked = _ok(
            cluster.a.post(
                f"/v1/m2m_tokens/{token['id']}/revoke",
                json={"revocation_reason": "propagation"},
                headers=auth(cluster.sk),
            ),
        )
        since = time.monotonic()
        assert revoked["revoked"] is True
        (seconds,) = _until(since, (on_b, 404))
        record_propagation(cluster.path, f"revoke ({token_format})", seconds)
        assert on_a() == 404, "the writing node refuses at once"
        assert by_receiver_on_b() == 404
        refused += [on_a, on_b, by_receiver_on_b]
    _stays(404, *refused)


def test_a_machine_delete_on_one_node_reaches_the_other(
    cluster: Cluster, record_propagation: Callable[[str, str, float], None]
) -> None:
    """Deleting the caller on A: B refuses its tokens (both formats) and its key."""
    pair = _pair(cluster)
    tokens = [_mint(cluster, pair.caller_key, f)["token"] for f in ("opaque", "jwt")]
    token_probes = [
        _verify(cluster.b, key, t) for t in tokens for key in (cluster.sk, pair.receiver_key)
    ]
    key_on_b = _machine_key(cluster.b, pair.caller_key, pair.caller_id)
    _warm(*token_probes, key_on_b)

    deleted = _ok(cluster.a.delete(f"/v1/machines/{pair.caller_id}", headers=auth(cluster.sk)))
    since = time.monotonic()
    assert deleted == {"object": "machine", "id": pair.caller_id, "deleted": True}
    key_seconds, *token_seconds = _until(since, (key_on_b, 401), *((p, 404) for p in token_probes))
    record_propagation(cluster.path, "machine delete (key)", key_seconds)
    for seconds in token_seconds:
        record_propagation(cluster.path, "machine delete (token)", seconds)
    _stays(401, key_on_b)
    _stays(404, *token_probes)


def test_a_scope_removal_on_one_node_reaches_the_other(
    cluster: Cluster, record_propagation: Callable[[str, str, float], None]
) -> None:
    """Removing caller → receiver on A: B refuses the receiver's verify; the token lives on."""
    pair = _pair(cluster)
    token = _mint(cluster, pair.caller_key, "opaque")["token"]
    by_receiver_on_b = _verify(cluster.b, pair.receiver_key, token)
    _warm(by_receiver_on_b)

    removed = _ok(
        cluster.a.delete(
            f"/v1/machines/{pair.caller_id}/scopes/{pair.receiver_id}", headers=auth(cluster.sk)
        ),
    )
    since = time.monotonic()
    assert removed["deleted"] is True
    (seconds,) = _until(since, (by_receiver_on_b, 404))
    record_propagation(cluster.path, "scope removal", seconds)
    _stays(404, by_receiver_on_b)
    assert _verify(cluster.b, cluster.sk, token)() == 200, "the token itself is still valid"


def test_a_machine_key_rotation_on_one_node_reaches_the_other(
    cluster: Cluster, record_propagation: Callable[[str, str, float], None]
) -> None:
    """Rotating with no grace on A: B refuses the old machine key, accepts the new one."""
    pair = _pair(cluster)
    token = _mint(cluster, pair.caller_key, "opaque")["token"]
    old_key_on_b = _verify(cluster.b, pair.receiver_key, token)
    _warm(old_key_on_b)

    rotated = _ok(
        cluster.a.post(
            f"/v1/machines/{pair.receiver_id}/secret_key/rotate",
            json={"previous_token_ttl": 0},
            headers=auth(cluster.sk),
        ),
    )
    since = time.monotonic()
    assert rotated["object"] == "machine_secret_key"
    assert rotated["secret"] != pair.receiver_key
    (seconds,) = _until(since, (old_key_on_b, 401))
    record_propagation(cluster.path, "machine key rotation", seconds)
    _stays(401, old_key_on_b)
    assert _verify(cluster.b, rotated["secret"], token)() == 200


def test_an_instance_key_rotation_reaches_every_node(
    cluster: Cluster, record_propagation: Callable[[str, str, float], None]
) -> None:
    """An admin rotates an instance's sk_ with no grace: both nodes refuse the old key."""
    created = _admin(cluster.env, lambda r: r.instances.create("rotated"))
    old_on = [_instance_key(node, created.secret_key) for node in (cluster.a, cluster.b)]
    _warm(*old_on)

    new_key = _admin(
        cluster.env, lambda r: r.instances.rotate_key(created.instance.id, grace_seconds=0)
    )
    since = time.monotonic()
    _, on_b = _until(since, *((probe, 401) for probe in old_on))
    record_propagation(cluster.path, "instance key rotation", on_b)
    _stays(401, *old_on)
    for node in (cluster.a, cluster.b):
        assert _instance_key(node, new_key)() == 200


def test_a_revoke_that_publishes_no_wake_up_still_arrives_by_polling(
    cluster: Cluster, record_propagation: Callable[[str, str, float], None]
) -> None:
    """An admin run without GATEPASS_REDIS_URL wakes no Redis node: B's poll finds the revoke."""
    pair = _pair(cluster)
    quiet = {**cluster.env, "GATEPASS_REDIS_URL": ""}  # on PostgreSQL, NOTIFY still goes out
    refused: list[Callable[[], int]] = []
    for _ in range(QUIET_REVOKE_SAMPLES):
        token = _mint(cluster, pair.caller_key, "opaque")
        on_b = _verify(cluster.b, cluster.sk, token["token"])
        _warm(on_b)

        async def revoke(runtime: Runtime, token_id: str = token["id"]) -> M2MToken:
            admin = await runtime.authenticator.authenticate(cluster.sk)
            assert admin is not None
            return await runtime.tokens.revoke(admin, token_id, "quiet")

        assert _admin(quiet, revoke).revoked_at is not None
        since = time.monotonic()
        (seconds,) = _until(since, (on_b, 404))
        record_propagation(cluster.path, "revoke, no Redis wake-up", seconds)
        refused.append(on_b)
    _stays(404, *refused)
