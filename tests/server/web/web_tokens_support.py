"""Helpers for the M2M token route tests: machines that mint, and the M2MToken shape (§3)."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from web_support import create_machine

from helpers import auth

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

TOKEN_KEYS: Final = frozenset(
    {
        "object",
        "id",
        "subject",
        "claims",
        "scopes",
        "revoked",
        "revocation_reason",
        "expired",
        "expiration",
        "last_used_at",
        "created_at",
        "updated_at",
    },
)
"""Every key of an M2MToken; the create response adds ``token`` (CONTRACT.md §3)."""

TOKEN_ID_RE: Final = re.compile(r"mt_[0-9a-f]{32}")
UNKNOWN_TOKEN_ID: Final = "mt_" + "0" * 32


@dataclass(frozen=True)
class Pair:
    """A caller machine scoped to a receiver, plus a bystander scoped to nobody."""

    caller: dict[str, Any]
    receiver: dict[str, Any]
    bystander: dict[str, Any]

    @property
    def caller_key(self) -> str:
        """The caller's ``ak_`` key."""
        return str(self.caller["secret_key"])

    @property
    def receiver_key(self) -> str:
        """The receiver's ``ak_`` key."""
        return str(self.receiver["secret_key"])

    @property
    def bystander_key(self) -> str:
        """The bystander's ``ak_`` key."""
        return str(self.bystander["secret_key"])


async def make_pair(client: httpx.AsyncClient, sk: str, *, ttl: int = 3600) -> Pair:
    """Create a receiver, a caller scoped to it (default TTL ``ttl``) and a bystander."""
    receiver = await create_machine(client, sk, name="receiver")
    caller = await create_machine(
        client, sk, name="caller", scoped_machines=[receiver["id"]], default_token_ttl=ttl
    )
    bystander = await create_machine(client, sk, name="bystander")
    return Pair(caller=caller, receiver=receiver, bystander=bystander)


async def mint(
    client: httpx.AsyncClient, machine_key: str, prefix: str = "/v1", **body: Any
) -> dict[str, Any]:
    """Mint a token with ``machine_key``; it must answer 201. Returns the create body."""
    response = await client.post(f"{prefix}/m2m_tokens", json=body, headers=auth(machine_key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def verify(
    client: httpx.AsyncClient, key: str, token: str, *, field: str = "token", prefix: str = "/v1"
) -> httpx.Response:
    """POST the token to verify with ``key``."""
    return await client.post(f"{prefix}/m2m_tokens/verify", json={field: token}, headers=auth(key))


async def get_token(client: httpx.AsyncClient, sk: str, token_id: str) -> dict[str, Any]:
    """The token's current record through ``GET /v1/m2m_tokens/{id}``."""
    response = await client.get(f"/v1/m2m_tokens/{token_id}", headers=auth(sk))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_token(body: dict[str, Any], *, created: bool = False) -> None:
    """A complete M2MToken: every key present, ``null`` included, and the right types."""
    expected = TOKEN_KEYS | {"token"} if created else TOKEN_KEYS
    assert set(body) == expected, sorted(body)
    assert body["object"] == "machine_to_machine_token"
    assert TOKEN_ID_RE.fullmatch(body["id"]), body["id"]
    assert body["subject"].startswith("mch_")
    assert body["claims"] is None or isinstance(body["claims"], dict)
    assert isinstance(body["scopes"], list)
    assert type(body["revoked"]) is bool
    assert type(body["expired"]) is bool
    assert body["revocation_reason"] is None or isinstance(body["revocation_reason"], str)
    for key in ("expiration", "created_at", "updated_at"):
        assert type(body[key]) is int, (key, body[key])
    assert body["last_used_at"] is None or type(body["last_used_at"]) is int
    if created:
        assert isinstance(body["token"], str)
        assert body["token"] != body["id"]


@contextlib.contextmanager
def case(label: object) -> Iterator[None]:
    """Name the table row a failing assertion came from (cases run in one test for speed)."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"case {label!r}: {exc}") from exc
