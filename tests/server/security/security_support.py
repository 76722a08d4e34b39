"""Helpers for the attack tests: set-up over HTTP and one way to assert a refusal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import pytest

from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    from collections.abc import Iterable

    import httpx

    from gatepass_server.runtime import Runtime

UNKNOWN_MACHINE_ID: Final = "mch_" + "0" * 27

SQLITE_ONLY: Final = pytest.mark.parametrize("backend", ["sqlite"])
"""For attacks refused before storage is touched: one backend is enough."""


async def create_machine(client: httpx.AsyncClient, sk: str, **fields: Any) -> dict[str, Any]:
    """Create a machine over HTTP (``name`` defaults to ``"machine"``) and return the body."""
    response = await client.post(
        "/v1/machines", json={"name": "machine", **fields}, headers=auth(sk)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refused(
    client: httpx.AsyncClient,
    runtime: Runtime,
    method: str,
    url: str,
    *,
    status: int,
    code: str,
    not_echoed: Iterable[str] = (),
    param_name: str | None = None,
    **request: Any,
) -> tuple[httpx.Response, dict[str, Any]]:
    """Send one attack request and check it is refused with nothing stored and nothing echoed.

    Returns the response and its single error object.
    """
    before = await storage_snapshot(runtime)
    response = await client.request(method, url, **request)
    error = await assert_rejected(
        response,
        status=status,
        code=code,
        runtime=runtime,
        before=before,
        not_echoed=not_echoed,
        param_name=param_name,
    )
    return response, error


def without_trace_id(response: httpx.Response) -> dict[str, Any]:
    """The error body with its per-request trace id removed, to compare two refusals."""
    body: dict[str, Any] = response.json()
    body.pop("clerk_trace_id")
    return body
