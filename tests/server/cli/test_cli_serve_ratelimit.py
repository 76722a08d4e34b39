"""``serve`` and the rate limits as a real process.

The limit reaches the worker, and the "source" is the address uvicorn reports: the
``X-Forwarded-For`` client when the peer is a trusted proxy (``GATEPASS_FORWARDED_ALLOW_IPS``,
127.0.0.1 by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from cli_support import GATEPASS_VARIABLES

from gatepass_server.domain.keys import SecretKind, generate_secret
from helpers import auth, live_server

if TYPE_CHECKING:
    from pathlib import Path


def _get(url: str, key: str, forwarded_for: str) -> httpx.Response:
    headers = {**auth(key), "X-Forwarded-For": forwarded_for}
    return httpx.get(f"{url}/v1/machines", headers=headers, timeout=10)


def _env(tmp_path: Path, key: str, **values: str) -> dict[str, str]:
    env = dict.fromkeys(GATEPASS_VARIABLES, "")
    env |= {
        "GATEPASS_DATA_DIR": str(tmp_path / "data"),
        "GATEPASS_BOOTSTRAP_SECRET_KEY": key,
        "GATEPASS_AUTH_FAILURE_LIMIT": "2",
        "GATEPASS_VERIFY_MISS_LIMIT": "0",
    }
    return env | values


def _bad() -> str:
    return generate_secret(SecretKind.INSTANCE_TEST)


def test_a_trusted_proxy_forwards_the_source(tmp_path: Path) -> None:
    """Through 127.0.0.1 (trusted by default) each forwarded client has its own budget."""
    key = generate_secret(SecretKind.INSTANCE_TEST)
    with live_server(_env(tmp_path, key), tmp_path / "server.log") as server:
        for _ in range(2):
            assert _get(server.url, _bad(), "203.0.113.7").status_code == 401
        refused = _get(server.url, key, "203.0.113.7")
        assert (refused.status_code, refused.headers["retry-after"]) == (429, "30")
        assert refused.json()["errors"][0]["code"] == "too_many_requests"
        assert _get(server.url, key, "198.51.100.9").status_code == 200
