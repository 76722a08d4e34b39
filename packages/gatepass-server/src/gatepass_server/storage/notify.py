"""Push channels that wake change-log followers: PostgreSQL LISTEN and Redis pub/sub.

Both only say "something changed, read the log"; neither carries what changed. A channel
reports whether it is connected, so that followers poll fast while it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.engine import make_url

from gatepass_server.errors import ConfigurationError
from gatepass_server.observability import logger
from gatepass_server.storage.changes import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PostgresChannel", "RedisChannel", "require_redis"]

HEALTH_CHECK_SECONDS: Final = 5.0
_TIMEOUT_SECONDS: Final = 2.0
_BACKOFF_SECONDS: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
_PUBLISH_TIMEOUT_SECONDS: Final = 0.5
_PUBLISH_PAUSE_SECONDS: Final = 5.0


async def _reconnecting(
    name: str,
    session: Callable[[Callable[[], None]], Any],
    connected: Callable[[bool], None],
) -> None:
    """Run ``session`` again and again, with backoff, until cancelled.

    ``session`` calls the callback it is given once it is connected.
    """
    failures = 0
    while True:
        up = False

        def on_connected() -> None:
            nonlocal up, failures
            up, failures = True, 0
            connected(True)  # noqa: FBT003 - the callback's one argument

        try:
            await session(on_connected)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - any failure: report, back off, reconnect
            if failures == 0:
                logger.warning("push_channel_lost", channel=name, exc_info=True)
        if up:
            connected(False)  # noqa: FBT003 - the callback's one argument
        await asyncio.sleep(_BACKOFF_SECONDS[min(failures, len(_BACKOFF_SECONDS) - 1)])
        failures += 1


class PostgresChannel:
    """``LISTEN gatepass_changes`` on a connection of its own.

    The ``NOTIFY`` is sent by the writing transaction itself (``storage.changes``), so
    :meth:`publish` has nothing to do.
    """

    def __init__(self, database_url: str) -> None:
        # asyncpg speaks plain postgresql:// URLs; SQLAlchemy's driver suffix must go.
        self._dsn = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(
                hide_password=False,
            )
        )

    async def listen(self, wake: Callable[[], None], connected: Callable[[bool], None]) -> None:
        """Wake on every notification until cancelled."""
        await _reconnecting("postgresql", lambda up: self._session(wake, up), connected)

    async def _session(self, wake: Callable[[], None], up: Callable[[], None]) -> None:
        import asyncpg  # noqa: PLC0415 - only PostgreSQL deployments need it

        conn = await asyncpg.connect(self._dsn, timeout=_TIMEOUT_SECONDS)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_args: wake())
            up()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEALTH_CHECK_SECONDS):
                        await lost.wait()
                # A hung or partitioned server sends no termination: ask it something.
                await conn.fetchval("SELECT 1", timeout=_TIMEOUT_SECONDS)
        finally:
            conn.terminate()

    async def publish(self) -> None:
        """Nothing: the writing transaction has sent its ``NOTIFY``."""

    async def close(self) -> None:
        """Nothing: :meth:`listen` closes its connection when cancelled."""


def require_redis() -> None:
    """Fail start-up with a clear message when Redis is configured but not installed."""
    try:
        import redis.asyncio  # noqa: PLC0415, F401 - an optional extra
    except ImportError as exc:  # pragma: no cover - the dev install has it
        raise ConfigurationError(
            "GATEPASS_REDIS_URL is set but redis is not installed: "
            "pip install 'gatepass-server[redis]'",
        ) from exc


class RedisChannel:
    """Redis pub/sub on :data:`NOTIFY_CHANNEL`.

    For deployments that cannot ``LISTEN`` (a transaction-pooling proxy in front of
    PostgreSQL) or that run Redis anyway.
    """

    def __init__(self, redis_url: str) -> None:
        require_redis()
        import redis.asyncio  # noqa: PLC0415 - an optional extra

        # NOTE: no socket_timeout: the subscription waits on its socket for long stretches.
        # The health check pings a quiet connection, and publish has its own deadline.
        self._paused_until = 0.0
        self._client = redis.asyncio.Redis.from_url(
            redis_url,
            socket_connect_timeout=_TIMEOUT_SECONDS,
            health_check_interval=int(HEALTH_CHECK_SECONDS),
        )

    async def listen(self, wake: Callable[[], None], connected: Callable[[bool], None]) -> None:
        """Wake on every message until cancelled."""
        await _reconnecting("redis", lambda up: self._session(wake, up), connected)

    async def _session(self, wake: Callable[[], None], up: Callable[[], None]) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(NOTIFY_CHANNEL)
            up()
            while True:
                message = await pubsub.get_message(timeout=HEALTH_CHECK_SECONDS)
                if message is not None and message.get("type") == "message":
                    wake()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def publish(self) -> None:
        """Wake every subscribed node.

        NOTE: a write waits for this before it is acknowledged, so a Redis that hangs must
        not slow every write: after a failure, publishing pauses for a while (the other
        nodes' polling still delivers the change within the bound).
        """
        if time.monotonic() < self._paused_until:
            return
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT_SECONDS):
                await self._client.publish(NOTIFY_CHANNEL, b"")
        except BaseException:
            self._paused_until = time.monotonic() + _PUBLISH_PAUSE_SECONDS
            raise

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
