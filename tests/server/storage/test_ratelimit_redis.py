"""Rate-limit counters in a real Redis: one budget for several nodes, and outages survived.

The shared Redis at 127.0.0.1:6379 (required under CI=true) holds the shared-budget and
killed-connection cases, each under a key prefix of its own; the cases that stop Redis use
a ``redis-server`` this module starts on a free port and stops by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import redis.asyncio
import structlog

from gatepass_server.app import create_app
from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.errors import TooManyRequests
from gatepass_server.runtime import Runtime
from gatepass_server.services.ratelimit import (
    SHARED_RETRY_SECONDS,
    FailureLimiter,
    LocalCounters,
    SharedCounters,
)
from gatepass_server.storage.ratelimit import RedisCounters
from helpers import auth, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from gatepass_server.config import Settings
    from gatepass_server.domain.clock import FixedClock

SQLITE_ONLY: Final = pytest.mark.parametrize("backend", ["sqlite"])
"""For the cases that need a runtime: Redis, not the database, is under test."""

LIMIT: Final = 4
"""Failures per minute and burst: 15 s per failure after the first four."""
STEP: Final = 5.0
"""Bound on any single call here: a hang fails the test instead of stalling it."""


class ManualMonotonic:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        """The current reading."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now += seconds


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"gatepass:test:{os.getpid()}:{secrets.token_hex(6)}:"
    yield name
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=name + "*"):
            await client.delete(key)
    finally:
        await client.aclose()


@dataclasses.dataclass
class OwnRedis:
    """A ``redis-server`` of the test's own on 127.0.0.1."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where it listens (or will)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait (bounded) until it answers PING."""
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is needed for the outage tests"
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), *options, "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                contextlib.closing(
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
                ) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        pytest.fail(f"redis-server on port {self.port} did not answer")

    def stop(self) -> None:
        """Stop it by its own PID (resumed first, should it be paused)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    """A free port for a Redis of our own, not started yet; stopped at the end."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed (required under CI=true)")
        pytest.skip("redis-server is not installed")
    server = OwnRedis(free_port())
    try:
        yield server
    finally:
        server.stop()


async def _keys(url: str, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its remaining time to live (ms)."""
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        return {key: await client.pttl(key) async for key in client.scan_iter(match=prefix + "*")}
    finally:
        await client.aclose()


async def _failed(limiter: FailureLimiter, source: str) -> int | None:
    """Count a failure (bounded in time); the Retry-After if it was refused."""
    try:
        async with asyncio.timeout(STEP):
            await limiter.failed(source)
    except TooManyRequests as exc:
        return int(exc.headers["Retry-After"])
    return None


@contextlib.asynccontextmanager
async def _node(settings: Settings, clock: FixedClock, prefix: str) -> AsyncIterator[Runtime]:
    runtime = Runtime.build(settings, clock=clock, redis_prefix=prefix)
    await runtime.prepare()
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.close()


def _client(runtime: Runtime, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(runtime), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gatepass.test")


@SQLITE_ONLY
async def test_two_nodes_share_one_budget(
    settings: Settings, clock: FixedClock, redis_url: str, prefix: str, sk: str
) -> None:
    """Failures on two nodes fill one bucket; each node learns the block on its next failure."""
    shared = dataclasses.replace(settings, redis_url=redis_url, auth_failure_limit=LIMIT)
    async with (
        _node(shared, clock, prefix) as first,
        _node(shared, clock, prefix) as second,
        _client(first, "203.0.113.7") as one,
        _client(second, "203.0.113.7") as two,
    ):
        for client in (one, one, two, two):
            bad = auth(generate_secret(SecretKind.INSTANCE_TEST))
            assert (await client.get("/v1/machines", headers=bad)).status_code == 401
        # The second node counted the fourth failure: it refuses before any lookup.
        refused = await two.get("/v1/machines", headers=auth(sk))
        assert (refused.status_code, refused.headers["retry-after"]) == (429, "15")
        # The first node has not seen the block: its key lookups go on, right keys work...
        assert (await one.get("/v1/machines", headers=auth(sk))).status_code == 200
        # ...but its next failure is over the shared budget: 429, and now it knows too.
        bad = auth(generate_secret(SecretKind.INSTANCE_TEST))
        assert (await one.get("/v1/machines", headers=bad)).status_code == 429
        assert (await one.get("/v1/machines", headers=auth(sk))).status_code == 429
        assert isinstance(first.counters, SharedCounters)
        assert not first.counters.degraded
        keys = await _keys(redis_url, prefix)
        source_key = prefix + "auth:source:203.0.113.7"
        assert source_key in keys
        assert 0 < keys[source_key] <= 60_000, "the bucket expires once it has drained"
        assert len(keys) == 1 + LIMIT + 1, "one source bucket and one bucket per key"


@SQLITE_ONLY
async def test_a_node_degrades_to_process_memory_and_comes_back_when_redis_does(
    settings: Settings, clock: FixedClock, own_redis: OwnRedis, sk: str
) -> None:
    """Redis not there: the limits hold in memory, no 500, one warning; then Redis again."""
    monotonic = ManualMonotonic()
    down = dataclasses.replace(settings, redis_url=own_redis.url, auth_failure_limit=LIMIT)
    runtime = Runtime.build(down, clock=clock, monotonic=monotonic, redis_prefix="gp:")
    await runtime.prepare()
    counters = runtime.counters
    assert isinstance(counters, SharedCounters)
    try:
        async with _client(runtime, "203.0.113.7") as client:
            with structlog.testing.capture_logs() as logs:
                for _ in range(LIMIT):
                    bad = auth(generate_secret(SecretKind.INSTANCE_TEST))
                    async with asyncio.timeout(STEP):
                        response = await client.get("/v1/machines", headers=bad)
                    assert response.status_code == 401, response.text
                assert counters.degraded
                response = await client.get("/v1/machines", headers=auth(sk))
                assert response.status_code == 429, "the block holds without Redis"
            warnings = [e for e in logs if e["event"] == "ratelimit_shared_store_unavailable"]
            assert len(warnings) == 1, "one warning per outage, not per request"
            own_redis.start()
            monotonic.advance(SHARED_RETRY_SECONDS)
            async with _client(runtime, "198.51.100.9") as other:
                bad = auth(generate_secret(SecretKind.INSTANCE_TEST))
                assert (await other.get("/v1/machines", headers=bad)).status_code == 401
            assert not counters.degraded
            assert _source_buckets(await _keys(own_redis.url, "gp:")) == {
                "gp:auth:source:198.51.100.9"
            }
    finally:
        await runtime.close()


def _source_buckets(keys: dict[str, Any]) -> set[str]:
    """The source buckets among ``keys``."""
    return {key for key in keys if ":source:" in key}


async def test_a_hung_redis_costs_a_bounded_wait_then_counts_in_memory(
    own_redis: OwnRedis,
) -> None:
    """A paused Redis (SIGSTOP): failures are counted in memory; resumed, Redis counts on."""
    own_redis.start()
    assert own_redis.process is not None
    monotonic = ManualMonotonic()
    shared = SharedCounters(
        RedisCounters(own_redis.url, "gp:"), LocalCounters(monotonic), monotonic
    )
    limiter = FailureLimiter("auth", LIMIT, shared, monotonic=monotonic)
    try:
        assert await _failed(limiter, "a") is None  # in Redis: one
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        assert await _failed(limiter, "b") is None  # waits for the timeout, then memory
        assert shared.degraded
        for _ in range(LIMIT - 1):
            assert await _failed(limiter, "a") is None  # memory, no wait: three
        os.kill(own_redis.process.pid, signal.SIGCONT)
        monotonic.advance(SHARED_RETRY_SECONDS)
        for _ in range(LIMIT - 1):
            assert await _failed(limiter, "a") is None  # Redis again: two, three, four
        assert not shared.degraded
        assert await _failed(limiter, "a") == 15, "Redis kept the count from before"
    finally:
        await shared.close()


async def _wait_gone(admin: redis.asyncio.Redis, name: str) -> list[dict[str, Any]]:
    """The connections named ``name``, once none are left (or after a bounded wait)."""
    deadline = time.monotonic() + STEP
    while True:
        left = [c for c in await admin.client_list() if c["name"] == name]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.02)


async def test_a_killed_connection_degrades_then_reconnects(redis_url: str, prefix: str) -> None:
    """``CLIENT KILL`` of the counters' connection: no error reaches the caller, and back."""
    monotonic = ManualMonotonic()
    counters = RedisCounters(redis_url, prefix)
    shared = SharedCounters(counters, LocalCounters(monotonic), monotonic)
    limiter = FailureLimiter("auth", LIMIT, shared, monotonic=monotonic)
    admin = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await _failed(limiter, "a") is None
        ours = [c for c in await admin.client_list() if c["name"] == counters.client_name]
        assert len(ours) == 1, ours
        await admin.client_kill_filter(_id=ours[0]["id"])
        assert await _failed(limiter, "a") is None  # no exception reaches the caller...
        assert shared.degraded  # ...the dead connection sent it to memory
        for _ in range(LIMIT - 1):
            assert await _failed(limiter, "a") is None
        assert await _failed(limiter, "a") == 15, "memory limits while Redis is skipped"
        monotonic.advance(SHARED_RETRY_SECONDS)
        await _failed(limiter, "b")
        assert not shared.degraded, "Redis answers again after the pause"
        assert prefix + "auth:source:b" in await _keys(redis_url, prefix)
        await shared.close()
        assert await _wait_gone(admin, counters.client_name) == [], "close() drops it"
    finally:
        await shared.close()
        await admin.aclose()


@SQLITE_ONLY
async def test_runtime_close_releases_its_redis_connection(
    settings: Settings, clock: FixedClock, redis_url: str, prefix: str
) -> None:
    """Stopping a runtime closes the rate limiter's Redis connection."""
    limited = dataclasses.replace(settings, redis_url=redis_url, auth_failure_limit=LIMIT)
    admin = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    name = f"gatepass-ratelimit@{prefix}"
    try:
        async with _node(limited, clock, prefix) as runtime, _client(runtime, "192.0.2.1") as c:
            bad = auth(generate_secret(SecretKind.INSTANCE_TEST))
            assert (await c.get("/v1/machines", headers=bad)).status_code == 401
            assert [x for x in await admin.client_list() if x["name"] == name] != []
        assert await _wait_gone(admin, name) == []
    finally:
        await admin.aclose()
