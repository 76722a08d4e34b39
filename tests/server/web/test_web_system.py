"""Operational endpoints: ``/healthz``, ``/readyz`` (and its 503), ``/metrics``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from web_support import SQLITE_ONLY, UNKNOWN_MACHINE_ID, assert_api_headers, create_machine

from gatepass_server.app import create_app
from gatepass_server.config import Settings
from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.domain.sealing import encode_master_key
from gatepass_server.runtime import Runtime
from helpers import assert_rejected, auth, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_endpoints_answer_ok(client: httpx.AsyncClient, path: str) -> None:
    """Liveness and readiness are 200 ``{"status":"ok"}`` and need no key."""
    response = await client.get(path)
    assert response.status_code == 200
    assert_api_headers(response)
    assert response.json() == {"status": "ok"}


@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/v1/healthz", "/v1/readyz", "/v1/metrics"])
async def test_system_endpoints_have_no_v1_alias(client: httpx.AsyncClient, path: str) -> None:
    """The operational endpoints live at the root only."""
    response = await client.get(path)
    await assert_rejected(response, status=404, code="resource_not_found")


def _unreachable_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'missing-dir' / 'gatepass.db'}"
    return f"postgresql://postgres@127.0.0.1:{free_port()}/gatepass"


@pytest.fixture(params=["sqlite", "postgres"])
async def unreachable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A client to an app whose database cannot be reached (missing dir, or closed port)."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=_unreachable_url(str(request.param), tmp_path),
        master_key=encode_master_key(bytes(32)),
    ).validated()
    runtime = Runtime.build(settings)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gatepass.test") as http:
        yield http
    await runtime.close()
    # NOTE: after a failed connect aiosqlite stops its worker thread without waiting for it;
    # let it finish while this test's event loop is still open, or it fails a later test.
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            thread.join(timeout=5)


async def test_readyz_is_503_when_storage_is_unreachable(unreachable: httpx.AsyncClient) -> None:
    """``/readyz`` fails closed: 503 ``service_unavailable`` with ``Retry-After``."""
    response = await unreachable.get("/readyz")
    await assert_rejected(response, status=503, code="service_unavailable")
    assert response.headers["retry-after"].isdigit()
    assert_api_headers(response)
    alive = await unreachable.get("/healthz")
    assert alive.status_code == 200


async def test_api_is_503_not_401_when_storage_is_unreachable(
    unreachable: httpx.AsyncClient,
) -> None:
    """A key that cannot be checked is 503, never a misleading 401 or a 2xx."""
    key = generate_secret(SecretKind.INSTANCE_TEST)
    response = await unreachable.get("/v1/machines", headers=auth(key))
    await assert_rejected(response, status=503, code="service_unavailable", not_echoed=[key])
    assert response.headers["retry-after"].isdigit()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_metrics_count_requests_by_route_method_and_status(
    client: httpx.AsyncClient, sk: str
) -> None:
    """``/metrics`` exposes the request counter by route template and the latency histogram."""
    machine = await create_machine(client, sk)
    await client.get(f"/v1/machines/{machine['id']}", headers=auth(sk))
    await client.get(f"/machines/{UNKNOWN_MACHINE_ID}", headers=auth(sk))
    await client.get("/no/such/path/12345")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def count(route: str, method: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return samples.get(("gatepass_http_requests_total", labels), 0.0)

    assert count("/v1/machines", "POST", "200") == 1
    assert count("/v1/machines/{machine_id}", "GET", "200") == 1
    assert count("/machines/{machine_id}", "GET", "404") == 1
    assert count("unmatched", "GET", "404") == 1
    assert "/no/such/path/12345" not in response.text
    latency = ("gatepass_http_request_duration_seconds_count", (("route", "/v1/machines"),))
    assert samples[latency] == 1
    buckets = [
        key
        for key in samples
        if key[0] == "gatepass_http_request_duration_seconds_bucket"
        and ("route", "/v1/machines") in key[1]
    ]
    assert ("le", "+Inf") in {label for key in buckets for label in key[1]}
    assert sk not in response.text
    assert machine["secret_key"] not in response.text
