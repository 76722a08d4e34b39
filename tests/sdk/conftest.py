"""Fixtures for the SDK's tests: the real server, in process and over a socket.

``app`` serves the real ASGI app in this test's event loop (for ``AsyncGatepass`` through
``httpx.ASGITransport``). ``live_server`` runs the same server with uvicorn on a
127.0.0.1 socket in a thread of its own, so the sync client and framework apps reach it
over TCP; it can be stopped mid-test to see clients fail closed. Both run on SQLite and
PostgreSQL, on the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn

from gatepass import AsyncGatepass, Gatepass
from gatepass_server.app import create_app
from gatepass_server.runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from starlette.types import ASGIApp

    from gatepass_server.config import Settings
    from gatepass_server.domain.clock import FixedClock


@dataclass
class LiveServer:
    """The real server on a 127.0.0.1 socket, in a thread with its own event loop."""

    settings: Settings
    clock: FixedClock
    url: str = ""
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _socket: socket.socket | None = field(default=None, repr=False)
    _failure: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        """Serve until :meth:`stop`; returns once the socket accepts requests."""
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(30) or self._failure:
            msg = f"the server did not start: {self._failure}"
            raise RuntimeError(msg)

    def _run(self, started: threading.Event) -> None:
        async def serve() -> None:
            runtime = Runtime.build(self.settings, clock=self.clock)
            await runtime.prepare()
            config = uvicorn.Config(
                create_app(runtime, owns_runtime=True),
                log_level="warning",
                lifespan="on",
                # A revocation long poll would hold a graceful stop for its whole wait.
                timeout_graceful_shutdown=0,
            )
            self._server = uvicorn.Server(config)
            assert self._socket is not None
            task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
            while not self._server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
                await asyncio.sleep(0.01)
            started.set()
            await task

        try:
            asyncio.run(serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._failure.append(exc)
            started.set()

    def stop(self) -> None:
        """Stop serving: from now on connections to :attr:`url` are refused."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._socket is not None:
            self._socket.close()


@pytest.fixture
def live_server(settings: Settings, clock: FixedClock) -> Iterator[LiveServer]:
    """The server on a real socket for this test (SQLite and PostgreSQL)."""
    server = LiveServer(settings, clock)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def app(runtime: Runtime) -> ASGIApp:
    """The server's ASGI app in this test's event loop."""
    return create_app(runtime)


@pytest.fixture
async def async_admin(app: ASGIApp, sk: str) -> AsyncIterator[AsyncGatepass]:
    """An ``AsyncGatepass`` with the instance key, talking to the app in process."""
    async with AsyncGatepass(
        secret_key=sk, api_url="http://gatepass.test", transport=httpx.ASGITransport(app=app)
    ) as client:
        yield client


@pytest.fixture
def admin(live_server: LiveServer, bootstrap_key: str) -> Iterator[Gatepass]:
    """A ``Gatepass`` with the instance key, talking to the live server over TCP."""
    with Gatepass(secret_key=bootstrap_key, api_url=live_server.url) as client:
        yield client


@contextlib.contextmanager
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "GATEPASS_SECRET_KEY",
        "GATEPASS_MACHINE_SECRET_KEY",
        "GATEPASS_API_URL",
        "CLERK_SECRET_KEY",
        "CLERK_MACHINE_SECRET_KEY",
        "CLERK_API_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No key or URL from the developer's environment leaks into a test's client."""
    with _no_env_keys(monkeypatch):
        yield
