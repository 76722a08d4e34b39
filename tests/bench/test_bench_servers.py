"""bench.servers: pinned server processes, what they are sampled for, and throwaway databases."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest

from bench.hello import BODY
from bench.servers import (
    POSTGRES_ADMIN_URL,
    ServerProcess,
    free_port,
    hello_world,
    new_instance_key,
    postgres_database,
    postgres_dsn,
)
from gatepass_server.domain.keys import SecretKind, is_well_formed

if TYPE_CHECKING:
    from collections.abc import Iterator


def _cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One single-process hello-world server, pinned to CPU 0, for the module."""
    with hello_world([0], 1, tmp_path_factory.mktemp("hello")) as server:
        yield server


def test_hello_answers_get(hello: ServerProcess) -> None:
    response = httpx.get(f"{hello.base_url}/any/path?x=1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-length"] == str(len(BODY))
    assert "server" not in response.headers
    assert response.content == BODY


def test_hello_reads_a_post_body(hello: ServerProcess) -> None:
    with httpx.Client(base_url=hello.base_url) as client:
        for _ in range(3):  # the same connection stays usable after each body
            response = client.post("/v1/m2m_tokens/verify", content=b"x" * 200_000)
            assert response.status_code == 200
            assert response.content == BODY


def test_sampling_sees_memory_files_and_connections(hello: ServerProcess) -> None:
    assert hello.pids() == [hello.pid]
    assert hello.rss_bytes() > 1_000_000
    assert hello.open_files() > 3
    assert hello.tcp_connections(include_listening=True) >= 1
    idle = hello.tcp_connections()
    with httpx.Client(base_url=hello.base_url) as client:
        assert client.get("/").status_code == 200
        assert hello.tcp_connections() >= idle + 1
        assert hello.tcp_connections() >= 1


def test_the_process_is_pinned(hello: ServerProcess) -> None:
    assert hello.cpus == (0,)
    assert _cpus_allowed(hello.pid) == "0"


def test_workers_are_pinned_and_stop_with_the_group(tmp_path: Path) -> None:
    server = hello_world([0], 2, tmp_path)
    try:
        pids = server.pids()
        assert len(server.accepting_pids()) == 2
        assert server.pid not in server.accepting_pids()  # the supervisor only supervises
        assert len(pids) >= 3
        assert {_cpus_allowed(pid) for pid in pids} == {"0"}
        assert httpx.post(server.base_url, content=b"body").content == BODY
    finally:
        server.stop()
    assert not any(_running(pid) for pid in pids)
    assert not server.running()
    assert server.pids() == []
    server.stop()  # idempotent


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    with ServerProcess(
        [sys.executable, "-c", stubborn],
        name="stubborn",
        port=free_port(),
        cpus=[0],
        log_dir=tmp_path,
    ) as server:
        while "ready" not in server.log():
            assert server.running()
            time.sleep(0.01)
        server.stop(timeout=0.5)
        assert server.pids() == []
        assert server.returncode == -signal.SIGKILL
    assert (tmp_path / "stubborn.log").read_text() == "ready\n"


def test_wait_ready_reports_a_server_that_died(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('no such config'); raise SystemExit(3)"]
    server = ServerProcess(argv, name="dies", port=free_port(), cpus=[0], log_dir=tmp_path)
    with server, pytest.raises(RuntimeError, match=r"exited with 3:\nno such config"):
        server.wait_ready("/", timeout=30)


def test_a_pinned_server_needs_a_cpu(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one CPU"):
        ServerProcess(["true"], name="none", port=free_port(), cpus=[], log_dir=tmp_path)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_new_instance_key_is_a_fresh_test_key() -> None:
    key = new_instance_key()
    assert is_well_formed(key, SecretKind.INSTANCE_TEST)
    assert key != new_instance_key()


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_server_url")
async def test_postgres_database_is_fresh_and_dropped_even_while_in_use() -> None:
    with postgres_database("bench_test") as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith(f"bench_test_{os.getpid()}_")
        conn = await asyncpg.connect(postgres_dsn(url))
        try:
            assert await conn.fetchval("SELECT current_database()") == name
            tables = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            assert tables == 0
        except BaseException:
            await conn.close()
            raise
    conn.terminate()  # its backend was ended by the drop
    admin = await asyncpg.connect(postgres_dsn(POSTGRES_ADMIN_URL))
    try:
        assert (
            await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
        )
    finally:
        await admin.close()


def test_postgres_database_wants_a_plain_prefix() -> None:
    with pytest.raises(ValueError, match="identifier"), postgres_database('x"; DROP'):
        pass
