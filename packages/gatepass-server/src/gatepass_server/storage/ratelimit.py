"""Rate-limit counters in Redis, shared by every node (``services.ratelimit``).

One Lua script per failure runs GCRA atomically on Redis' own clock (``TIME``), so nodes
whose clocks disagree still share one budget. The keys expire when their bucket is empty
again. Any failure to answer quickly (Redis down, hung, its connection killed) is
``None``: the caller counts in process memory instead. Redis holds hints only
(SECURITY.md principle 1).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from gatepass_server.services.ratelimit import Count
from gatepass_server.storage.notify import require_redis

if TYPE_CHECKING:
    from gatepass_server.services.ratelimit import Rate

__all__ = ["CLIENT_NAME", "DEFAULT_PREFIX", "TIMEOUT_SECONDS", "RedisCounters"]

DEFAULT_PREFIX: Final = "gatepass:ratelimit:"
CLIENT_NAME: Final = "gatepass-ratelimit"

TIMEOUT_SECONDS: Final = 0.25
"""Connect and command deadline: a failure waits at most this long for Redis."""

# KEYS[1] bucket; ARGV[1] interval, ARGV[2] tolerance, both integer microseconds.
# Returns {accepted (0/1), microseconds until the bucket has room again}.
_GCRA: Final = """
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local arrival = tonumber(redis.call('GET', KEYS[1]) or now)
if arrival < now then arrival = now end
if arrival - tolerance > now then
  return {0, arrival - tolerance - now}
end
arrival = arrival + interval
redis.call('SET', KEYS[1], string.format('%d', arrival), 'PX', math.ceil((arrival - now) / 1000))
local wait = arrival - tolerance - now
if wait < 0 then wait = 0 end
return {1, wait}
"""


class RedisCounters:
    """GCRA buckets in Redis under ``prefix``; the connection is opened on first use."""

    def __init__(self, redis_url: str, prefix: str = DEFAULT_PREFIX) -> None:
        require_redis()
        self._url = redis_url
        self._prefix = prefix
        self.client_name = f"{CLIENT_NAME}@{prefix}"
        """What ``CLIENT LIST`` shows for these connections."""
        self._client: Any = None
        self._script: Any = None

    def _connect(self) -> Any:
        import redis.asyncio  # noqa: PLC0415 - an optional extra
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415

        # NOTE: no retries and short timeouts: a failure answer must never wait long on
        # Redis; when it cannot answer, process memory counts instead (SECURITY.md §10).
        self._client = redis.asyncio.Redis.from_url(
            self._url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
            client_name=self.client_name,
        )
        self._script = self._client.register_script(_GCRA)
        return self._script

    async def hit(self, bucket: str, rate: Rate) -> Count | None:
        """Count one failure in ``bucket``; ``None`` if Redis does not answer in time."""
        script = self._script or self._connect()
        interval, tolerance = rate.interval, rate.tolerance
        try:
            async with asyncio.timeout(2 * TIMEOUT_SECONDS):
                accepted, wait = await script(
                    keys=[self._prefix + bucket], args=[interval, tolerance]
                )
        except Exception:  # noqa: BLE001 - whatever Redis did, the caller counts locally
            return None
        return Count(accepted=bool(accepted), wait=int(wait) / 1_000_000)

    async def close(self) -> None:
        """Close the connection pool; the next :meth:`hit` opens a new one."""
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()
