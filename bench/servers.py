"""The servers a benchmark measures, as pinned subprocesses, and their throwaway databases.

:class:`ServerProcess` runs one command in its own process group, pinned to given CPUs
(``taskset``, so uvicorn's worker processes inherit the pinning), logs to a file, waits
until it answers HTTP, samples its memory, descriptors and TCP connections from
``/proc``, and stops the whole group. :func:`hello_world` and :func:`gatepass` start the
two servers compared; :func:`postgres_database` gives each run a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess  # nosec B404  # starts the servers under test: fixed argv, no shell
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self, TypeVar

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from gatepass_server.domain.keys import SecretKind, generate_secret

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
    from types import TracebackType

__all__ = [
    "HOST",
    "POSTGRES_ADMIN_URL",
    "REPO_ROOT",
    "ServerProcess",
    "free_port",
    "gatepass",
    "hello_world",
    "new_instance_key",
    "postgres_available",
    "postgres_database",
    "postgres_dsn",
    "run_sync",
    "uvicorn_app",
]

T = TypeVar("T")

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
POSTGRES_ADMIN_URL: Final = os.environ.get(
    "GATEPASS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""The local PostgreSQL server's admin database; benchmark databases are made beside it."""

STOP_TIMEOUT_S: Final = 10.0
READY_TIMEOUT_S: Final = 60.0
_POLL_S: Final = 0.05
_LOG_TAIL_CHARS: Final = 4000
_TCP_LISTEN: Final = "0A"  # the st column of /proc/net/tcp
_SOCKET_LINK: Final = re.compile(r"socket:\[(\d+)\]")
_EPOLL_LINK: Final = "anon_inode:[eventpoll]"
_DATABASE_PREFIX: Final = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def new_instance_key() -> str:
    """A fresh, well-formed ``sk_test_`` key, e.g. for ``GATEPASS_BOOTSTRAP_SECRET_KEY``."""
    return generate_secret(SecretKind.INSTANCE_TEST)


# -- processes ----------------------------------------------------------------------------


class ServerProcess:
    """One server command, started in its own process group and pinned to ``cpus``.

    Output goes to ``<log_dir>/<name>.log``. :meth:`stop` (also on leaving a ``with``
    block) ends the whole group: the server and every worker it started.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        port: int,
        cpus: Sequence[int],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not cpus:
            raise ValueError("pin the server to at least one CPU")
        self.name = name
        self.port = port
        self.cpus = tuple(cpus)
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        pinned = ["taskset", "--cpu-list", ",".join(map(str, self.cpus)), *argv]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # nosec B603  # a server's argv, no shell
                pinned,
                env=dict(os.environ if env is None else env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        self._group_gone = False

    @property
    def pid(self) -> int:
        """The server's process id (``taskset`` execs it, so this is the server itself)."""
        return self._process.pid

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def returncode(self) -> int | None:
        """The server's exit status once it has exited (``-N``: ended by signal N)."""
        return self._process.poll()

    def running(self) -> bool:
        """Whether the server process itself has not exited."""
        return self._process.poll() is None

    def log(self) -> str:
        """Everything the server has printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, path: str = "/", timeout: float = READY_TIMEOUT_S) -> None:
        """Poll ``GET <path>`` until it answers below 500; raise if the server dies or stalls."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not self.running():
                    raise RuntimeError(
                        f"{self.name} exited with {self._process.returncode}:\n{self._log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.base_url + path).status_code < 500:  # noqa: PLR2004
                        return
                time.sleep(_POLL_S)
        raise TimeoutError(f"{self.name} did not answer in {timeout} s:\n{self._log_tail()}")

    def wait_accepting(self, count: int, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until ``count`` of the server's processes accept connections (its workers)."""
        deadline = time.monotonic() + timeout
        while len(self.accepting_pids()) < count:
            if not self.running() or time.monotonic() >= deadline:
                message = f"{self.name} did not start {count} workers:\n{self._log_tail()}"
                raise RuntimeError(message)
            time.sleep(_POLL_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds; idempotent."""
        if self._group_gone:
            return
        self._signal_group(signal.SIGTERM)
        if not self._wait_group(timeout):
            self._signal_group(signal.SIGKILL)
            self._wait_group(timeout)
        self._group_gone = True

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def _wait_group(self, timeout: float) -> bool:
        """Reap the server and wait until no process of its group is left."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=timeout)
        while time.monotonic() < deadline:
            if self._process.poll() is not None and not _group_alive(self.pid):
                return True
            time.sleep(_POLL_S)
        return self._process.poll() is not None and not _group_alive(self.pid)

    def _log_tail(self) -> str:
        return self.log()[-_LOG_TAIL_CHARS:]

    # -- sampling -------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The server and all its descendants that are still running, server first."""
        if not self.running():
            return []
        return [self.pid, *_descendants(self.pid)]

    def rss_bytes(self) -> int:
        """Resident memory of the server and its descendants, summed."""
        return sum(_rss_bytes(pid) for pid in self.pids())

    def open_files(self) -> int:
        """Open file descriptors of the server and its descendants (sockets included)."""
        return sum(len(_fd_links(pid)) for pid in self.pids())

    def accepting_pids(self) -> list[int]:
        """The server's processes whose event loop watches one of its listening sockets."""
        listening = {
            inode for inode, state in _tcp_sockets(self.pid).items() if state == _TCP_LISTEN
        }
        return [pid for pid in self.pids() if _polls_any(pid, listening)]

    def tcp_connections(self, *, include_listening: bool = False) -> int:
        """TCP sockets held by the server and its descendants, each counted once.

        Listening sockets are left out unless ``include_listening``: what remains are
        connections, to clients and (on PostgreSQL) to the database.
        """
        inodes = {
            match.group(1)
            for pid in self.pids()
            for link in _fd_links(pid).values()
            if (match := _SOCKET_LINK.fullmatch(link))
        }
        return sum(
            1
            for inode, state in _tcp_sockets(self.pid).items()
            if inode in inodes and (include_listening or state != _TCP_LISTEN)
        )


@dataclass(frozen=True, slots=True)
class _Stat:
    """The fields of ``/proc/PID/stat`` used here."""

    state: str  # "Z" for a zombie: exited, not yet reaped by its parent
    ppid: int
    pgrp: int


def _process_table() -> dict[int, _Stat]:
    """Every process visible in /proc, by pid."""
    table: dict[int, _Stat] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name, in parentheses, may itself hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = _Stat(fields[0], int(fields[1]), int(fields[2]))
    return table


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies awaiting reaping are not)."""
    return any(s.pgrp == pgid and s.state != "Z" for s in _process_table().values())


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, stat in _process_table().items():
        children.setdefault(stat.ppid, []).append(child)
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return sorted(found)


def _rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _fd_links(pid: int) -> dict[str, str]:
    """``fd -> link target`` of a process's open descriptors, e.g. ``socket:[123]``."""
    links: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                links[fd.name] = str(fd.readlink())
    return links


def _polls_any(pid: int, socket_inodes: set[str]) -> bool:
    """Whether an epoll instance of ``pid`` watches one of these sockets."""
    links = _fd_links(pid)
    wanted = {
        fd
        for fd, link in links.items()
        if (match := _SOCKET_LINK.fullmatch(link)) and match.group(1) in socket_inodes
    }
    for fd, link in links.items():
        if link != _EPOLL_LINK:
            continue
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        # Each watched descriptor is a line "tfd: <fd> events: ...".
        watched = {line.split()[1] for line in info.splitlines() if line.startswith("tfd:")}
        if watched & wanted:
            return True
    return False


def _tcp_sockets(pid: int) -> dict[str, str]:
    """``inode -> state`` of the TCP sockets in the network namespace of ``pid``."""
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            sockets[fields[9]] = fields[3]
    return sockets


# -- the two servers ----------------------------------------------------------------------


def _uvicorn_options(port: int, workers: int) -> list[str]:
    """The uvicorn settings ``gatepass-server serve`` uses, as command-line options."""
    options = ["--host", HOST, "--port", str(port), "--no-access-log", "--no-server-header"]
    return options + (["--workers", str(workers)] if workers > 1 else [])


def uvicorn_app(
    target: str,
    cpus: Sequence[int],
    workers: int,
    log_dir: Path,
    *,
    name: str,
    env: Mapping[str, str] | None = None,
    factory: bool = False,
) -> ServerProcess:
    """An ASGI app of this repository (``module:attribute``) under uvicorn, on a free port."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        *_uvicorn_options(port, workers),
        *(["--factory"] if factory else []),
        "--log-level",
        "warning",
    ]
    process_env = None if env is None else {**os.environ, **env}
    server = ServerProcess(
        argv, name=name, port=port, cpus=cpus, log_dir=log_dir, env=process_env, cwd=REPO_ROOT
    )
    return _started(server, ready_path="/", workers=workers)


def hello_world(cpus: Sequence[int], workers: int, log_dir: Path) -> ServerProcess:
    """The baseline: :mod:`bench.hello` under uvicorn, answering on a free port."""
    return uvicorn_app("bench.hello:app", cpus, workers, log_dir, name="hello")


def gatepass(
    cpus: Sequence[int],
    workers: int,
    database_url: str,
    data_dir: Path,
    log_dir: Path,
    bootstrap_secret_key: str,
    extra_env: Mapping[str, str] | None = None,
    log_level: str = "info",
) -> ServerProcess:
    """``gatepass-server serve`` on a free port, ready once ``/readyz`` (storage answers) does.

    Inherited ``GATEPASS_*`` variables are dropped, so only these arguments (and
    ``extra_env``) configure the server.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEPASS_")}
    env |= {
        "GATEPASS_DATABASE_URL": database_url,
        "GATEPASS_DATA_DIR": str(data_dir),
        "GATEPASS_BOOTSTRAP_SECRET_KEY": bootstrap_secret_key,
        "GATEPASS_HOST": HOST,
        "GATEPASS_PORT": str(port),
        "GATEPASS_WORKERS": str(workers),
        "GATEPASS_LOG_LEVEL": log_level,
        # NOTE: the soak sends a million bad tokens and the benchmark measures the
        # unlimited hot path: no rate limits (a row's extra_env may set them).
        "GATEPASS_AUTH_FAILURE_LIMIT": "0",
        "GATEPASS_VERIFY_MISS_LIMIT": "0",
        **(extra_env or {}),
    }
    argv = [str(Path(sys.executable).with_name("gatepass-server")), "serve"]
    data_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        argv, name="gatepass", port=port, cpus=cpus, log_dir=log_dir, env=env, cwd=data_dir
    )
    return _started(server, ready_path="/readyz", workers=workers)


def _started(server: ServerProcess, *, ready_path: str, workers: int) -> ServerProcess:
    """``server`` once it answers and all its workers accept; stopped if it never gets there."""
    try:
        server.wait_ready(ready_path)
        server.wait_accepting(workers)
    except BaseException:
        server.stop()
        raise
    return server


# -- PostgreSQL ---------------------------------------------------------------------------


def postgres_dsn(url: str) -> str:
    """A ``postgresql://`` URL as asyncpg takes it, whatever driver the URL names."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, even under a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_awaited(make))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _awaited(make)).result()


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def postgres_available(admin_url: str = POSTGRES_ADMIN_URL) -> bool:
    """Whether the PostgreSQL server of ``admin_url`` accepts a connection."""

    async def probe() -> None:
        conn = await asyncpg.connect(postgres_dsn(admin_url), timeout=3)
        await conn.close()

    try:
        run_sync(probe)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


@contextlib.contextmanager
def postgres_database(prefix: str, admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """A new, empty database beside ``admin_url``'s, as a ``postgresql://`` URL; dropped after.

    Its name is ``<prefix>_<pid>_<random hex>``. Connections still open to it when the
    block ends are terminated, then the database is dropped.
    """
    if not _DATABASE_PREFIX.fullmatch(prefix):
        raise ValueError("prefix must be a short lowercase SQL identifier")
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    run_sync(lambda: _admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        run_sync(lambda: _drop_database(admin_url, name))


async def _admin(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(postgres_dsn(admin_url), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(postgres_dsn(admin_url), timeout=10)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
