"""Assertions and helpers shared by the test suites (importable: ``tests`` is on the path)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
from sqlalchemy import select, text

from gatepass_server.storage.database import Database
from gatepass_server.storage.tables import metadata

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from gatepass_server.runtime import Runtime

Snapshot = dict[str, list[tuple[Any, ...]]]


async def autocommit(url: str, statement: str) -> None:
    """Run one statement outside a transaction (``CREATE DATABASE`` needs that)."""
    database = Database(url)
    try:
        async with database.engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await database.dispose()


@contextlib.contextmanager
def throwaway_postgres_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``server_url``, dropped after.

    Call it outside a running event loop (from a sync fixture).
    """
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(autocommit(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server_url.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(autocommit(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def auth(key: str) -> dict[str, str]:
    """The ``Authorization`` header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


async def storage_snapshot(runtime: Runtime) -> Snapshot:
    """Every row of every table, sorted: compare before and after a rejected request."""
    snapshot: Snapshot = {}
    async with runtime.database.read() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(select(table))).all()
            snapshot[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return snapshot


async def assert_rejected(
    response: httpx.Response,
    *,
    status: int,
    code: str,
    runtime: Runtime | None = None,
    before: Snapshot | None = None,
    not_echoed: Iterable[str] = (),
    param_name: str | None = None,
) -> dict[str, Any]:
    """Check a rejection fully: status, exact content type, envelope, code, no echo, no change.

    Besides ``not_echoed``, the request's own ``Authorization`` credential and every
    secret-shaped string of its JSON body must be absent from the response, and the status
    must carry its required headers (``Allow`` on 405, ``Retry-After`` on 429 and 503).
    Returns the single error object for further checks.
    """
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    _assert_status_headers(response)
    for secret in _request_secrets(response.request):
        assert secret not in response.text, "a rejection echoed a secret of its request"
    body = response.json()
    assert set(body) == {"errors", "clerk_trace_id"}, body
    assert len(body["errors"]) == 1
    error = body["errors"][0]
    assert set(error) == {"message", "long_message", "code", "meta"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert isinstance(error["long_message"], str)
    assert body["clerk_trace_id"] == response.headers["x-request-id"]
    assert len(body["clerk_trace_id"]) == 32
    if param_name is not None:
        assert error["meta"].get("param_name") == param_name, error
    for secret in not_echoed:
        assert secret not in response.text
    if before is not None:
        assert runtime is not None, "pass the runtime to compare storage"
        assert await storage_snapshot(runtime) == before, "a rejected request changed storage"
    return dict(error)


# Secret-shaped strings: a key or an opaque token (never the 35-character ``mt_`` id), a JWT.
_SECRET_RE = re.compile(r"(?:sk_test_|sk_live_|ak_|mt_)[0-9A-Za-z]{36,}|eyJ[\w-]+\.[\w-]+\.[\w-]*")
_CREDENTIAL_MIN_LENGTH = 16  # shorter pieces of a header ("Bearer", "x") may well be echoed


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _request_secrets(request: httpx.Request) -> set[str]:
    """What a response must never echo: the sent credential and any secret in the body."""
    found = {
        piece
        for value in request.headers.get_list("authorization")
        for piece in value.split()
        if len(piece) >= _CREDENTIAL_MIN_LENGTH
    }
    try:
        content = request.content
    except httpx.RequestNotRead:  # a streamed body: nothing kept to compare with
        return found
    try:
        body = json.loads(content) if content else None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json can read
        body = None
    texts = list(_strings(body)) if body is not None else [content.decode(errors="replace")]
    found.update(m.group() for text in texts for m in _SECRET_RE.finditer(text))
    return found


_REQUIRED_HEADERS: Final = {405: "allow", 429: "retry-after", 503: "retry-after"}


def _assert_status_headers(response: httpx.Response) -> None:
    """The headers a status needs; none of the RFC 7235 challenge Clerk never sends."""
    required = _REQUIRED_HEADERS.get(response.status_code)
    if required is not None:
        assert response.headers.get(required), f"{response.status_code} without {required}"
    # NOTE: Clerk answers 401 without WWW-Authenticate and so does Gatepass, everywhere alike.
    assert "www-authenticate" not in response.headers


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SERVER_BIN = Path(sys.executable).with_name("gatepass-server")


@dataclass
class LiveServer:
    """A real ``gatepass-server serve`` process on 127.0.0.1, stopped by its own PID."""

    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _checked: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL without ``/v1``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_path: Path, timeout: float = 30.0) -> None:
        """Start and wait until ``/healthz`` answers."""
        self.log_path = log_path
        self._checked = None
        env = {
            **os.environ,
            **self.env,
            "GATEPASS_HOST": "127.0.0.1",
            "GATEPASS_PORT": str(self.port),
        }
        if not self.env.get("GATEPASS_LOG_LEVEL"):
            env["GATEPASS_LOG_LEVEL"] = "debug"  # the hygiene check reads every line at stop
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SERVER_BIN), "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"server exited with {self.process.returncode}:\n{self.log()}"
                raise RuntimeError(msg)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        msg = f"server did not become healthy in {timeout}s:\n{self.log()}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Terminate the process we started (and only it); check its log for secrets."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.log_path is not None and self.log_path != self._checked:
            self._checked = self.log_path
            from hygiene import check_server_log  # noqa: PLC0415 - a pytest plugin: import late

            check_server_log(self.log(), f"the server on port {self.port}")

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@contextlib.contextmanager
def live_server(env: Mapping[str, str], log_path: Path) -> Iterator[LiveServer]:
    """Run a server for the duration of a ``with`` block."""
    server = LiveServer(env=env)
    server.start(log_path)
    try:
        yield server
    finally:
        server.stop()
    # A 500 is always a bug: the server logs each one as "unhandled_error".
    assert '"unhandled_error"' not in server.log(), server.log()
