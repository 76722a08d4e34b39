"""The server's wiring: one object holding storage, services and clock for a process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Counter

from gatepass_server.config import Settings, load_master_key
from gatepass_server.domain.clock import Clock, SystemClock
from gatepass_server.domain.sealing import Sealer
from gatepass_server.observability import Metrics, logger
from gatepass_server.services.auth import KeyAuthenticator
from gatepass_server.services.cache import VerifyCache
from gatepass_server.services.changes import ChangeFollower
from gatepass_server.services.instances import InstanceService
from gatepass_server.services.machines import MachineService
from gatepass_server.services.ratelimit import (
    Counters,
    FailureLimiter,
    LocalCounters,
    SharedCounters,
)
from gatepass_server.services.revocations import RevocationFeed
from gatepass_server.services.signing import SigningService
from gatepass_server.services.tokens import TokenService
from gatepass_server.storage.changes import SqlChangeStore
from gatepass_server.storage.database import Database
from gatepass_server.storage.notify import PostgresChannel, RedisChannel
from gatepass_server.storage.ratelimit import DEFAULT_PREFIX, RedisCounters
from gatepass_server.storage.signing import SqlSigningKeyStore
from gatepass_server.storage.sql import SqlInstanceStore, SqlMachineStore, SqlTokenStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from gatepass_server.services.changes import PushChannel
    from gatepass_server.services.instances import Bootstrap

__all__ = ["Runtime"]


@dataclass(slots=True)
class Runtime:
    """Everything a request handler or CLI command needs, built once per process."""

    settings: Settings
    database: Database
    clock: Clock
    instances: InstanceService
    machines: MachineService
    authenticator: KeyAuthenticator
    signing: SigningService
    tokens: TokenService
    cache: VerifyCache
    changes: ChangeFollower
    revocations: RevocationFeed
    auth_failures: FailureLimiter
    verify_misses: FailureLimiter
    counters: Counters
    metrics: Metrics = field(default_factory=Metrics)
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        redis_prefix: str = DEFAULT_PREFIX,
    ) -> Runtime:
        """Wire storage and services; opens no connection yet.

        ``monotonic`` times the rate limiters; ``redis_prefix`` names their Redis keys.
        """
        clock = clock or SystemClock()
        database = Database(settings.database_url)
        instance_store = SqlInstanceStore(database)
        machine_store = SqlMachineStore(database)
        sealer = Sealer(load_master_key(settings))
        signing = SigningService(SqlSigningKeyStore(database), sealer, clock)
        cache = VerifyCache()
        change_log = SqlChangeStore(database)
        follower = ChangeFollower(
            change_log,
            cache,
            clock,
            _push_channel(settings, database),
            also_apply=[signing.apply],
        )
        database.after_change = follower.written
        metrics = Metrics()
        rate_limited = Counter(
            "gatepass_rate_limited",
            "Requests refused with 429, by the limit they were over.",
            ["reason"],
            registry=metrics.registry,
        )
        counters: Counters = LocalCounters(monotonic)
        if settings.redis_url is not None:
            counters = SharedCounters(
                RedisCounters(settings.redis_url, redis_prefix), LocalCounters(monotonic), monotonic
            )
        return cls(
            settings=settings,
            database=database,
            clock=clock,
            instances=InstanceService(instance_store, clock),
            machines=MachineService(machine_store, sealer, clock),
            authenticator=KeyAuthenticator(instance_store, machine_store, clock, cache),
            signing=signing,
            tokens=TokenService(
                SqlTokenStore(database), machine_store, signing, sealer, clock, cache
            ),
            cache=cache,
            changes=follower,
            revocations=RevocationFeed(change_log, follower, clock),
            auth_failures=FailureLimiter(
                "auth",
                settings.auth_failure_limit,
                counters,
                monotonic=monotonic,
                refused=rate_limited.labels("auth_failures").inc,
            ),
            verify_misses=FailureLimiter(
                "verify",
                settings.verify_miss_limit,
                counters,
                monotonic=monotonic,
                refused=rate_limited.labels("verify_misses").inc,
            ),
            counters=counters,
            metrics=metrics,
        )

    async def prepare(self) -> Bootstrap | None:
        """Apply migrations and create the default instance on first start."""
        from gatepass_server.storage.schema import upgrade  # noqa: PLC0415 - Alembic is heavy

        await upgrade(self.database)
        bootstrap_key = self.settings.bootstrap_secret_key
        done = await self.instances.bootstrap(bootstrap_key)
        if (
            done is None
            and bootstrap_key is not None
            and not await self.authenticator.authenticate(
                bootstrap_key,
            )
        ):
            logger.warning(
                "bootstrap_key_ignored",
                reason="GATEPASS_BOOTSTRAP_SECRET_KEY only seeds a new database",
            )
        return done

    async def start(self) -> None:
        """Start the background work of a serving process.

        Follow the change log (the cache answers from now on) and write ``last_used_at``.
        """
        if self.changes.running:
            return
        await self.changes.start()
        self._background.append(asyncio.create_task(self.tokens.run_last_used_writer()))

    async def stop(self) -> None:
        """Stop what :meth:`start` started (pending ``last_used_at`` values are written)."""
        tasks, self._background = self._background, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.changes.stop()
        await self.counters.close()

    async def close(self) -> None:
        """Stop, if started, and release connections."""
        await self.stop()
        await self.database.dispose()


def _push_channel(settings: Settings, database: Database) -> PushChannel | None:
    """Redis when configured, else LISTEN/NOTIFY on PostgreSQL; SQLite polls."""
    if settings.redis_url is not None:
        return RedisChannel(settings.redis_url)
    if database.dialect == "postgresql":
        return PostgresChannel(database.url)
    return None
