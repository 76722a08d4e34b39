"""Helpers for the web-layer tests: a machine factory and the checks of CONTRACT.md §3/§5."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

import pytest

from helpers import auth

if TYPE_CHECKING:
    import httpx

PREFIXES: Final = ("/v1", "")
"""Every API route is served with and without ``/v1`` (CONTRACT.md §2)."""

SUMMARY_KEYS: Final = frozenset(
    {"object", "id", "name", "instance_id", "created_at", "updated_at", "default_token_ttl"},
)
MACHINE_KEYS: Final = SUMMARY_KEYS | {"scoped_machines"}
UNKNOWN_MACHINE_ID: Final = "mch_" + "0" * 27
"""Well-formed, never issued."""

SQLITE_ONLY: Final = pytest.mark.parametrize("backend", ["sqlite"])
"""For input checks that end before storage is touched: one backend is enough."""


def assert_api_headers(response: httpx.Response) -> None:
    """The headers every API response carries: exact JSON type, no caching, nosniff."""
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def assert_machine(body: dict[str, Any], *, with_secret: bool = False) -> None:
    """A complete Machine (§3): every key, nested summaries without ``scoped_machines``."""
    expected = MACHINE_KEYS | {"secret_key"} if with_secret else MACHINE_KEYS
    assert set(body) == expected, body
    assert body["object"] == "machine"
    assert body["id"].startswith("mch_")
    assert len(body["id"]) == 31
    assert body["instance_id"].startswith("ins_")
    assert isinstance(body["name"], str)
    for key in ("created_at", "updated_at", "default_token_ttl"):
        assert type(body[key]) is int, (key, body[key])
    assert isinstance(body["scoped_machines"], list)
    for nested in body["scoped_machines"]:
        assert set(nested) == SUMMARY_KEYS, nested
        assert nested["object"] == "machine"
    if with_secret:
        assert body["secret_key"].startswith("ak_")


async def create_machine(client: httpx.AsyncClient, sk: str, **fields: Any) -> dict[str, Any]:
    """Create a machine over HTTP (``name`` defaults to ``"machine"``) and return the body."""
    response = await client.post(
        "/v1/machines", json={"name": "machine", **fields}, headers=auth(sk)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class Route(NamedTuple):
    """One sk-only route of CONTRACT.md §2 with a body that would pass validation."""

    method: str
    path: str
    body: dict[str, Any] | None = None

    def url(self, machine_id: str, other_id: str, prefix: str = "/v1") -> str:
        """The concrete URL for a source and a target machine."""
        return prefix + self.path.format(id=machine_id, other=other_id)

    def json(self, other_id: str) -> dict[str, Any] | None:
        """The body, with ``{other}`` filled in."""
        if self.body is None:
            return None
        return {
            k: v.format(other=other_id) if isinstance(v, str) else v for k, v in self.body.items()
        }


SK_ROUTES: Final = (
    Route("GET", "/machines"),
    Route("POST", "/machines", {"name": "new"}),
    Route("GET", "/machines/{id}"),
    Route("PATCH", "/machines/{id}", {"name": "renamed"}),
    Route("DELETE", "/machines/{id}"),
    Route("GET", "/machines/{id}/secret_key"),
    Route("POST", "/machines/{id}/secret_key/rotate", {"previous_token_ttl": 0}),
    Route("POST", "/machines/{id}/scopes", {"to_machine_id": "{other}"}),
    Route("DELETE", "/machines/{id}/scopes/{other}"),
)
"""Routes 1-9, every one of them for ``sk_`` keys only."""

BODY_ROUTES: Final = tuple(r for r in SK_ROUTES if r.body is not None)
"""The routes that read a JSON body."""


def route_id(route: Route) -> str:
    """A readable test id for a route."""
    return f"{route.method} {route.path}"
