"""The baseline: the least an ASGI app can do per request, served by the same uvicorn.

Every HTTP request gets ``200 text/plain`` "Hello, world!" after its body has been read
and discarded, so a POST baseline pays for receiving its body as Gatepass does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

__all__ = ["BODY", "app"]

BODY: Final = b"Hello, world!"
_HEADERS: Final = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(BODY)).encode("ascii")),
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: Message, receive: Receive, send: Send) -> None:
    """The ASGI application: lifespan events are acknowledged, HTTP requests answered."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _discard_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": BODY})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _discard_body(receive: Receive) -> None:
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: nothing left to read
            return
        more = bool(message.get("more_body", False))
