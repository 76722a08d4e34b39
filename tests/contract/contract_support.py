"""Helpers for the contract tests: an SDK client without retries, typed-error checks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pytest
from clerk_backend_api import Clerk, models
from clerk_backend_api.utils import RetryConfig

if TYPE_CHECKING:
    from collections.abc import Callable

    from helpers import LiveServer

NO_RETRIES: Final = RetryConfig("none", None, retry_connection_errors=False)
"""The SDK otherwise retries 5xx and connection errors for an hour (CONTRACT.md §6)."""

UNKNOWN_MACHINE_ID: Final = "mch_" + "0" * 27

MACHINE_FIELDS: Final = frozenset(
    {
        "object",
        "id",
        "name",
        "instance_id",
        "created_at",
        "updated_at",
        "default_token_ttl",
        "scoped_machines",
    },
)
"""Every key of a Machine (CONTRACT.md §3)."""


@dataclass(frozen=True)
class Contract:
    """The session's live server for one backend and its default instance's key."""

    server: LiveServer
    sk: str

    @property
    def api_url(self) -> str:
        """The SDK's ``server_url``: the Python SDK appends paths to ``/v1``."""
        return f"{self.server.url}/v1"


def sdk(url: str, key: str) -> Clerk:
    """Clerk's SDK for the server at ``url`` (no ``/v1``) with bearer ``key``, no retries."""
    return Clerk(bearer_auth=key, server_url=f"{url}/v1", retry_config=NO_RETRIES)


def expect_clerk_error(
    call: Callable[[], Any],
    *,
    status: int,
    code: str,
    param_name: str | None = None,
) -> models.ClerkErrors:
    """Run ``call``; it must raise the SDK's typed ``ClerkErrors`` with this status and code.

    ``code`` may end in ``*`` to accept any code with that prefix.
    """
    with pytest.raises(models.ClerkErrors) as caught:
        call()
    error = caught.value
    assert error.status_code == status, error.body
    assert error.raw_response.status_code == status
    assert len(error.data.errors) == 1, error.data
    detail = error.data.errors[0]
    if code.endswith("*"):
        assert detail.code.startswith(code[:-1]), error.data
    else:
        assert detail.code == code, error.data
    assert detail.long_message
    if param_name is not None:
        assert (detail.meta or {}).get("param_name") == param_name, error.data
    return error


def machine_key_state(url: str, machine_key: str) -> str:
    """``"works"`` or ``"dead"``: what the server makes of an ``ak_`` key.

    A working machine key is refused on the sk-only list route with 403; a key that does
    not authenticate gets 401 (CONTRACT.md §5). Either way the SDK raises ``ClerkErrors``.
    """
    with sdk(url, machine_key) as client, pytest.raises(models.ClerkErrors) as caught:
        client.machines.list(limit=1)
    error = caught.value
    if error.status_code == 403:
        assert error.data.errors[0].code == "authorization_invalid", error.data
        return "works"
    assert error.status_code == 401, error.body
    assert error.data.errors[0].code == "clerk_key_invalid", error.data
    return "dead"


def wait_for_log(server: LiveServer, needle: str, attempts: int = 200) -> str:
    """The server's log once it contains ``needle``.

    The access-log line is written after the response is sent, so poll briefly (bounded).
    """
    log = server.log()
    for _ in range(attempts):
        if needle in log:
            return log
        time.sleep(0.05)
        log = server.log()
    return log
