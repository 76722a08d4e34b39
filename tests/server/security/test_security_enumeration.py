"""Attack class: enumeration and timing.

Bodies of every "no" are identical (``test_security_tokens.py`` and
``test_security_credentials.py``); here the *storage path* of each "no" is shown to be the
same too, as a deterministic proxy for timing (no wall-clock threshold): the SQL statements
a request executes are recorded by an SQLAlchemy ``before_cursor_execute`` listener and
compared case by case. A malformed or bad-checksum secret never reaches storage at all.

Only statements on the data tables are kept: the change-log follower polls ``changes`` in
the background, and transaction control (``BEGIN``/``COMMIT``) carries no information.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, Final

import pytest
from security_support import create_machine, without_trace_id
from sqlalchemy import event

from gatepass_server.domain.keys import SecretKind, generate_secret
from helpers import assert_rejected, auth, storage_snapshot

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from gatepass_server.domain.clock import FixedClock
    from gatepass_server.runtime import Runtime

TOKEN_TABLES: Final = re.compile(r"\b(m2m_tokens|machine_scopes|signing_keys)\b")
KEY_TABLES: Final = re.compile(r"\b(instance_keys|machine_secret_keys)\b")
BACKGROUND: Final = re.compile(r"\bchanges\b")


@contextlib.contextmanager
def statements(runtime: Runtime, tables: re.Pattern[str]) -> Iterator[list[str]]:
    """The SQL text of every statement on ``tables`` executed inside the block."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        statement = args[2]
        if tables.search(statement) and not BACKGROUND.search(statement):
            seen.append(" ".join(statement.split()))

    engine = runtime.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _tampered(secret: str) -> str:
    """One body character changed: the checksum no longer matches."""
    index = len(secret) - 10
    return secret[:index] + ("b" if secret[index] != "b" else "c") + secret[index + 1 :]


async def _verify_path(
    client: httpx.AsyncClient, runtime: Runtime, key: str, token: str
) -> tuple[list[str], dict[str, Any]]:
    """The token-table statements of one refused verify, and its body without trace id."""
    before = await storage_snapshot(runtime)  # outside the count: it reads every table
    with statements(runtime, TOKEN_TABLES) as seen:
        response = await client.post(
            "/v1/m2m_tokens/verify", json={"token": token}, headers=auth(key)
        )
    await assert_rejected(
        response, status=404, code="token_invalid", runtime=runtime, before=before
    )
    return seen, without_trace_id(response)


@pytest.fixture
async def tokens(
    client: httpx.AsyncClient, sk: str, other_sk: str, runtime: Runtime, clock: FixedClock
) -> dict[str, Any]:
    """Callers, and never-verified tokens for each way of failing; the callers' keys warm."""
    receiver = await create_machine(client, sk, name="receiver")
    bystander = await create_machine(client, sk, name="bystander")
    caller = await create_machine(client, sk, name="caller", scoped_machines=[receiver["id"]])

    async def mint(**body: Any) -> dict[str, Any]:
        created = await client.post("/v1/m2m_tokens", json=body, headers=auth(caller["secret_key"]))
        assert created.status_code == 201, created.text
        return dict(created.json())

    found: dict[str, Any] = {"live": [await mint() for _ in range(3)]}
    found["revoked"] = [await mint() for _ in range(2)]
    found["expired"] = [await mint(seconds_until_expiration=1) for _ in range(2)]
    for token in found["revoked"]:
        await client.post(f"/v1/m2m_tokens/{token['id']}/revoke", json={}, headers=auth(sk))
    clock.advance(1_000)  # the "expired" ones are now expired; the others live on
    found["keys"] = {
        "sk": sk,
        "other_sk": other_sk,
        "receiver": receiver["secret_key"],
        "bystander": bystander["secret_key"],
    }
    for key in found["keys"].values():  # warm each caller key: its lookup is not under test
        await client.post(
            "/v1/m2m_tokens/verify",
            json={"token": generate_secret(SecretKind.TOKEN)},
            headers=auth(key),
        )
    await runtime.tokens.flush_last_used()
    return found


async def test_enumeration_every_failed_verify_takes_one_storage_path(
    client: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, Any]
) -> None:
    """Unknown, revoked, expired, out-of-scope, other-instance: one lookup, one body.

    Each token is seen here for the first time, by an ``sk_`` and by an ``ak_`` caller:
    every case is the same single lookup by digest. (Seen again, a token that exists is
    answered from the verification cache whatever its state, so a repeat tells "issued"
    from "never issued" and nothing more, and only to someone who holds the token.)
    """
    keys = tokens["keys"]
    cases = {
        "unknown/sk": (keys["sk"], generate_secret(SecretKind.TOKEN)),
        "unknown/ak": (keys["bystander"], generate_secret(SecretKind.TOKEN)),
        "revoked/sk": (keys["sk"], tokens["revoked"][0]["token"]),
        "revoked/ak": (keys["receiver"], tokens["revoked"][1]["token"]),
        "expired/sk": (keys["sk"], tokens["expired"][0]["token"]),
        "expired/ak": (keys["receiver"], tokens["expired"][1]["token"]),
        "other-instance/sk": (keys["other_sk"], tokens["live"][0]["token"]),
        "out-of-scope/ak": (keys["bystander"], tokens["live"][1]["token"]),
    }
    paths = {}
    bodies = {}
    for name, (key, token) in cases.items():
        paths[name], bodies[name] = await _verify_path(client, runtime, key, token)
    reference = paths["unknown/sk"]
    assert len(reference) == 1, reference
    assert "WHERE m2m_tokens.digest =" in reference[0], reference
    assert all(path == reference for path in paths.values()), paths
    assert all(body == bodies["unknown/sk"] for body in bodies.values()), bodies
    # The one token that is valid for its caller still verifies: the fixture is sound.
    ok = await client.post(
        "/v1/m2m_tokens/verify",
        json={"token": tokens["live"][2]["token"]},
        headers=auth(keys["receiver"]),
    )
    assert ok.status_code == 200, ok.text


async def test_enumeration_malformed_tokens_never_reach_storage(
    client: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, Any]
) -> None:
    """Bad checksum, a token id, another secret kind, garbage: refused before any lookup."""
    genuine = tokens["live"][2]["token"]
    candidates = {
        "bad-checksum": _tampered(genuine),
        "flipped-last": genuine[:-1] + ("A" if genuine[-1] != "A" else "B"),
        "token-id": tokens["live"][2]["id"],
        "machine-key": tokens["keys"]["receiver"],
        "instance-key": tokens["keys"]["sk"],
        "truncated": genuine[:-1],
        "extended": genuine + "0",
        "garbage": "hunter2",
        "empty": "",
        "not-a-jws": "a.b.c",
        "overlong": "mt_" + "A" * 20_000,
    }
    reference = None
    for name, token in candidates.items():
        seen, body = await _verify_path(client, runtime, tokens["keys"]["sk"], token)
        assert seen == [], (name, seen)
        reference = reference or body
        assert body == reference, name


async def test_enumeration_forged_jwts_never_reach_the_token_table(
    client: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, Any]
) -> None:
    """A JWT-shaped forgery is judged on the (cached) JWKS: no token row is ever read."""
    jwt_token = (
        await client.post(
            "/v1/m2m_tokens",
            json={"token_format": "jwt"},
            headers=auth(tokens["keys"]["receiver"]),
        )
    ).json()["token"]
    head, payload, signature = jwt_token.split(".")
    forged = {
        "bad-signature": f"{head}.{payload}.{signature[:-4]}AAAA",
        "no-signature": f"{head}.{payload}.",
        "swapped-payload": f"{head}.{head}.{signature}",
    }
    await _verify_path(client, runtime, tokens["keys"]["sk"], forged["bad-signature"])  # warm
    for name, token in forged.items():
        seen, _ = await _verify_path(client, runtime, tokens["keys"]["sk"], token)
        assert all(s.startswith("SELECT signing_keys.") for s in seen), (name, seen)


async def _key_path(
    client: httpx.AsyncClient, runtime: Runtime, key: str
) -> tuple[list[str], dict[str, Any]]:
    """The key-table statements of one refused authentication, and its body."""
    before = await storage_snapshot(runtime)
    with statements(runtime, KEY_TABLES) as seen:
        response = await client.get("/v1/machines", headers=auth(key))
    await assert_rejected(
        response, status=401, code="clerk_key_invalid", runtime=runtime, before=before
    )
    return seen, without_trace_id(response)


async def test_enumeration_dead_keys_take_one_storage_path(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """Unknown, rotated-out and deleted-machine keys: one lookup, one body.

    The same for unknown and retired ``sk_`` keys, and one body for all of them.
    """
    rotated = await create_machine(client, sk, name="rotated")
    await client.post(
        f"/v1/machines/{rotated['id']}/secret_key/rotate",
        json={"previous_token_ttl": 0},
        headers=auth(sk),
    )
    deleted = await create_machine(client, sk, name="deleted")
    # Used once while alive, so it sat in the cache: deletion must evict it, not serve it.
    warm = await client.get("/v1/m2m_tokens", headers=auth(deleted["secret_key"]))
    assert warm.status_code == 400, warm.text  # authenticated, then: subject is missing
    await client.delete(f"/v1/machines/{deleted['id']}", headers=auth(sk))
    other = await runtime.instances.create("retiring")
    await runtime.instances.rotate_key(other.instance.id, grace_seconds=0)
    machine_keys = {
        "unknown": generate_secret(SecretKind.MACHINE),
        "rotated-out": rotated["secret_key"],
        "deleted-machine": deleted["secret_key"],
    }
    instance_keys = {
        "unknown": generate_secret(SecretKind.INSTANCE_TEST),
        "unknown-live": generate_secret(SecretKind.INSTANCE_LIVE),
        "retired": other.secret_key,
    }
    bodies = []
    for group in (machine_keys, instance_keys):
        paths = {}
        for name, key in group.items():
            paths[name], body = await _key_path(client, runtime, key)
            bodies.append(body)
        reference = paths["unknown"]
        assert len(reference) == 1, reference
        assert all(path == reference for path in paths.values()), paths
    assert all(body == bodies[0] for body in bodies)


async def test_enumeration_malformed_keys_never_reach_storage(
    client: httpx.AsyncClient, sk: str, runtime: Runtime
) -> None:
    """A key with a bad checksum, a token, or a wrong prefix is refused without a lookup."""
    machine = await create_machine(client, sk)
    for key in (
        _tampered(sk),
        _tampered(machine["secret_key"]),
        generate_secret(SecretKind.TOKEN),
        "sk_test_" + "A" * 38,
        "ak_" + machine["secret_key"],
        "SK_TEST_" + sk.removeprefix("sk_test_"),
    ):
        seen, _ = await _key_path(client, runtime, key)
        assert seen == [], (key, seen)
