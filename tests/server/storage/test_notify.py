"""Push channels against real sockets: a Redis that hangs must not slow every write."""

from __future__ import annotations

import asyncio

import pytest

from gatepass_server.storage.notify import RedisChannel


async def test_a_hung_redis_delays_one_publish_then_publishing_pauses() -> None:
    """A Redis that accepts but never answers costs one timed-out publish, not one each."""
    received: list[bytes] = []
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while chunk := await reader.read(4096):
            received.append(chunk)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = RedisChannel(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(TimeoutError):
            await channel.publish()
        await asyncio.sleep(0.05)
        asked = len(b"".join(received))
        assert asked > 0  # it did try (the connection handshake hangs unanswered)
        await channel.publish()  # paused: returns without asking the hung server again
        await asyncio.sleep(0.05)
        assert len(b"".join(received)) == asked
        assert len(held) == 1
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
        await channel.close()
