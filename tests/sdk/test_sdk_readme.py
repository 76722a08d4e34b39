"""README.md's SDK examples run as written against a real server (STYLE.md habit 10)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import uvicorn

from conftest import LiveServer
from gatepass import AsyncGatepass, Gatepass
from gatepass_server.domain.clock import SystemClock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp

    from gatepass_server.config import Settings

README: Final = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SERVER_URL: Final = "http://127.0.0.1:8080"
SERVICE_URL: Final = "http://127.0.0.1:9000"
LOG_LINE: Final = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def _sdk_blocks() -> list[str]:
    """The Python blocks of the SDK section, in order."""
    match = re.search(r"^## The Python SDK\n(.*?)(?=^## )", README, re.DOTALL | re.MULTILINE)
    assert match is not None, "README has no SDK section"
    return re.findall(r"^```python\n(.*?)^```$", match.group(1), re.DOTALL | re.MULTILINE)


def _run(code: str, namespace: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """Execute a README block; its namespace and what it printed."""
    scope = namespace if namespace is not None else {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    # The server thread's access log goes to stdout too; keep the example's own lines.
    lines = [line for line in printed.getvalue().splitlines() if not LOG_LINE.match(line)]
    return scope, "\n".join(lines)


@contextlib.contextmanager
def _serving(app: ASGIApp, client: AsyncGatepass) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a 127.0.0.1 socket in a thread; yields its URL.

    ``client``, the app's Gatepass client, is closed in the server's loop when it stops.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await client.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(serve()))
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def real_time_server(settings: Settings) -> Iterator[LiveServer]:
    """The server on the wall clock, as the README's readers run it."""
    server = LiveServer(settings, SystemClock())  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_sdk_examples_protect_a_route_and_call_it(
    real_time_server: LiveServer, bootstrap_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Manage machines, protect the FastAPI route, call it with a minted token: as written."""
    protect, call, manage = _sdk_blocks()
    # The block that manages machines, with the instance key bound as the README says.
    namespace, printed = _run(
        manage.replace(SERVER_URL, real_time_server.url), {"SK": bootstrap_key}
    )
    api, email = namespace["api"], namespace["email"]
    assert printed.splitlines() == ["Email Server True"]
    with Gatepass(secret_key=bootstrap_key, api_url=real_time_server.url) as admin:
        api_key = admin.machines.get_secret_key(api.id).secret
        email_key = admin.machines.get_secret_key(email.id).secret
    monkeypatch.setenv("GATEPASS_API_URL", real_time_server.url)
    monkeypatch.setenv("GATEPASS_MACHINE_SECRET_KEY", api_key)
    service, _ = _run(protect)
    with _serving(service["app"], service["auth"].gatepass) as service_url:
        monkeypatch.setenv("GATEPASS_MACHINE_SECRET_KEY", email_key)
        _, printed = _run(call.replace(SERVICE_URL, service_url))
    assert printed.strip() == str({"caller": email.id})


def test_the_sdk_section_has_the_three_examples() -> None:
    """Protecting a route in about ten lines and calling a machine in about five."""
    protect, call, manage = _sdk_blocks()
    assert "GatepassAuth" in protect
    assert len(protect.strip().splitlines()) <= 13
    assert "M2MTokenAuth" in call
    assert len(call.strip().splitlines()) <= 7
    assert "machines.create" in manage
