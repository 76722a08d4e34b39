"""Private PostgreSQL and Redis servers that the fault tests break, and helpers around them.

Each server runs from the distribution's binaries in a directory made by
``tempfile.mkdtemp()``, listens on 127.0.0.1 on a free port, and is stopped by its own PID
(never by name): the machine's own PostgreSQL and Redis services are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from gatepass_server.app import create_app
from gatepass_server.runtime import Runtime
from helpers import auth, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from gatepass_server.config import Settings
    from gatepass_server.domain.clock import Clock

START_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 15.0
RECOVERY_TIMEOUT_SECONDS: Final = 15.0
"""How long a test waits for Gatepass to answer normally again after a fault ends."""


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb`` and ``postgres``."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for path in reversed(found):
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    return None


def _as_postgres() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to the ``postgres`` user (initdb refuses root)."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (PostgreSQL backends are the postmaster's children)."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids.extend(int(p) for p in (task / "children").read_text().split())
    return kids


def _signal_quietly(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own: start, stop, hang, resume, restart by PID."""

    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gatepass-pg-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    stopped_pids: list[int] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """A URL for ``database`` on this cluster, over TCP on 127.0.0.1."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """``initdb`` into a fresh directory owned by the ``postgres`` user."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS * 2,
            **_as_postgres(),
        )

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        log = (self.root / "postgres.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.root}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **_as_postgres(),
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"postgres exited with {self.process.returncode}:\n{self.log()}"
                raise RuntimeError(msg)
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
                timeout=5,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        msg = f"postgres did not accept connections in {START_TIMEOUT_SECONDS}s:\n{self.log()}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: abort sessions, checkpoint), SIGKILL if it lingers."""
        self.resume()
        process = self.process
        if process is None or process.poll() is not None:
            return
        backends = _children(process.pid)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
            for pid in backends:  # orphaned by the kill: ours, by PID
                _signal_quietly(pid, signal.SIGKILL)

    def restart(self) -> None:
        """Fast shutdown, then start again on the same port and data."""
        self.stop()
        self.start()

    def hang(self) -> list[int]:
        """SIGSTOP the postmaster and every backend: the server holds its sockets, silent."""
        assert self.process is not None
        pids = [self.process.pid]
        index = 0
        while index < len(pids):
            pids.extend(_children(pids[index]))
            index += 1
        for pid in pids:
            _signal_quietly(pid, signal.SIGSTOP)
        self.stopped_pids = pids
        return pids

    def resume(self) -> None:
        """SIGCONT whatever :meth:`hang` stopped."""
        pids, self.stopped_pids = self.stopped_pids, []
        for pid in pids:
            _signal_quietly(pid, signal.SIGCONT)

    def log(self) -> str:
        """What the server wrote so far."""
        path = self.root / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        """Stop and delete the directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A ``redis-server`` of our own, without persistence, stopped by its PID."""

    binary: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gatepass-redis-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process we started is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start and wait until it answers ``PING``."""
        assert not self.running, "already running"
        log = (self.root / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        import redis  # noqa: PLC0415 - only Redis tests need it

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    msg = f"redis-server exited with {self.process.returncode}"
                    raise RuntimeError(msg)
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        msg = f"redis-server did not answer in {START_TIMEOUT_SECONDS}s"
        raise RuntimeError(msg)

    def kill(self) -> None:
        """SIGKILL our process: Redis gone without goodbye."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """SIGTERM, SIGKILL if it lingers."""
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def remove(self) -> None:
        """Stop and delete the directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# -- Gatepass in process ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def started_runtime(
    settings: Settings,
    clock: Clock | None = None,
) -> AsyncIterator[Runtime]:
    """A prepared and started runtime (as in a serving process), closed afterwards."""
    runtime = Runtime.build(settings, clock=clock)
    await runtime.prepare()
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.close()


@contextlib.asynccontextmanager
async def http_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client; a 5xx other than 503 fails the test at once."""

    async def never_500(response: httpx.Response) -> None:
        if response.status_code >= 500 and response.status_code != 503:
            await response.aread()
            msg = f"{response.request.method} {response.request.url} -> {response.status_code}"
            raise AssertionError(f"{msg}: {response.text}")

    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://gatepass.test",
        event_hooks={"response": [never_500]},
        timeout=120.0,
    ) as client:
        yield client


@dataclass(frozen=True)
class Seeded:
    """A caller scoped to a receiver, a token the caller minted, and the admin key."""

    sk: str
    caller_id: str
    caller_key: str
    receiver_id: str
    receiver_key: str
    token: str
    token_id: str


async def created(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The body of a response that must have ``status``."""
    assert response.status_code == status, (response.request.url, response.text)
    body: dict[str, Any] = response.json()
    return body


async def seed(
    client: httpx.AsyncClient,
    sk: str,
    token_format: str = "opaque",  # noqa: S107 - a token format, not a secret
) -> Seeded:
    """Two machines, a scope between them, and one token of ``token_format``."""
    receiver = await created(
        await client.post("/v1/machines", json={"name": "receiver"}, headers=auth(sk))
    )
    caller = await created(
        await client.post(
            "/v1/machines",
            json={"name": "caller", "scoped_machines": [receiver["id"]]},
            headers=auth(sk),
        ),
    )
    token = await mint(client, caller["secret_key"], token_format)
    return Seeded(
        sk=sk,
        caller_id=caller["id"],
        caller_key=caller["secret_key"],
        receiver_id=receiver["id"],
        receiver_key=receiver["secret_key"],
        token=token["token"],
        token_id=token["id"],
    )


async def mint(client: httpx.AsyncClient, machine_key: str, token_format: str) -> dict[str, Any]:
    """Mint a token; it must answer 201."""
    response = await client.post(
        "/v1/m2m_tokens", json={"token_format": token_format}, headers=auth(machine_key)
    )
    return await created(response, 201)


async def verify(client: httpx.AsyncClient, key: str, token: str) -> httpx.Response:
    """``POST /v1/m2m_tokens/verify`` with ``key``."""
    return await client.post("/v1/m2m_tokens/verify", json={"token": token}, headers=auth(key))


def assert_unavailable(response: httpx.Response) -> None:
    """503 ``service_unavailable`` with a ``Retry-After`` of whole seconds."""
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.json()["errors"][0]["code"] == "service_unavailable", response.text
    assert response.headers["retry-after"].isdigit(), response.headers


async def timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and how long it took, in seconds (monotonic)."""
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


async def eventually(
    attempt: Callable[[], Awaitable[bool]],
    *,
    timeout: float = RECOVERY_TIMEOUT_SECONDS,
    interval: float = 0.05,
) -> float:
    """Retry ``attempt`` until it returns true; the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if await attempt():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            msg = f"not recovered within {timeout} s"
            raise AssertionError(msg)
        await asyncio.sleep(interval)


def report(name: str, **numbers: float) -> None:
    """Print a fault's measured numbers (shown with ``-s`` and in the captured output)."""
    shown = ", ".join(f"{key}={value:.2f}" for key, value in numbers.items())
    print(f"\nfault [{name}]: {shown}")  # noqa: T201
