"""bench.seed against a real ``gatepass-server serve``, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

from bench.seed import Seeded, bulk_tokens, seed_machines, token_secrets
from bench.servers import (
    ServerProcess,
    gatepass,
    new_instance_key,
    postgres_database,
)
from gatepass import Gatepass, TokenVerificationError
from gatepass_server.domain.keys import SecretKind, generate_secret, is_well_formed

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CPUS = sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Served:
    """A running server, its database and what seed_machines made in it."""

    server: ServerProcess
    database_url: str
    seeded: Seeded


def _serve(database_url: str, directory: Path) -> Iterator[Served]:
    secret_key = new_instance_key()
    with gatepass(
        CPUS,
        1,
        database_url,
        directory / "data",
        directory,
        secret_key,
        log_level="warning",
    ) as server:
        yield Served(server, database_url, seed_machines(server.base_url, secret_key))
    assert '"unhandled_error"' not in server.log(), server.log()


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A seeded server per backend, shared by the module's tests."""
    directory = tmp_path_factory.mktemp(str(request.param))
    if request.param == "sqlite":
        yield from _serve(f"sqlite:///{directory / 'data' / 'gatepass.db'}", directory)
        return
    request.getfixturevalue("postgres_server_url")  # skips, or fails under CI=true
    with postgres_database("bench_seed") as url:
        yield from _serve(url, directory)


def _verify(served: Served, key: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{served.server.base_url}/v1/m2m_tokens/verify",
        json={"token": token},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_seed_machines_returns_the_instance_machines_and_keys(served: Served) -> None:
    seeded = served.seeded
    assert seeded.instance_id.startswith("ins_")
    assert is_well_formed(seeded.secret_key, SecretKind.INSTANCE_TEST)
    assert is_well_formed(seeded.receiver_key, SecretKind.MACHINE)
    assert is_well_formed(seeded.caller_key, SecretKind.MACHINE)
    assert is_well_formed(seeded.opaque_token, SecretKind.TOKEN)
    assert seeded.jwt_token.count(".") == 2
    with Gatepass(secret_key=seeded.secret_key, api_url=served.server.base_url) as admin:
        receiver = admin.machines.get(seeded.receiver_id)
        caller = admin.machines.get(seeded.caller_id)
    assert (receiver.name, caller.name) == ("api", "caller")
    assert receiver.instance_id == caller.instance_id == seeded.instance_id
    assert [m.id for m in caller.scoped_machines] == [seeded.receiver_id]
    assert receiver.scoped_machines == ()


@pytest.mark.parametrize("kind", ["opaque", "jwt"])
def test_the_minted_tokens_verify_as_the_receiver(served: Served, kind: str) -> None:
    seeded = served.seeded
    token = seeded.opaque_token if kind == "opaque" else seeded.jwt_token
    api_url = served.server.base_url
    with Gatepass(machine_secret_key=seeded.receiver_key, api_url=api_url) as receiver:
        verified = receiver.m2m_tokens.verify(token)
    assert verified.subject == seeded.caller_id
    assert verified.scopes == (seeded.receiver_id,)
    assert not verified.revoked
    assert not verified.expired
    assert verified.expiration is not None
    assert verified.expiration - verified.created_at == 3_600_000


def test_bulk_tokens_verify_through_the_running_server(served: Served) -> None:
    seeded = served.seeded
    with Gatepass(secret_key=seeded.secret_key, api_url=served.server.base_url) as admin:
        before = admin.m2m_tokens.list(subject=seeded.caller_id, limit=1).total_count
        kept = bulk_tokens(
            served.database_url,
            instance_id=seeded.instance_id,
            subject=seeded.caller_id,
            scopes=[seeded.receiver_id],
            count=2050,
            keep_every=100,
            chunk_rows=500,
        )
        after = admin.m2m_tokens.list(subject=seeded.caller_id, limit=1).total_count
    assert after - before == 2050
    assert len(kept) == 21  # tokens 0, 100, ..., 2000
    assert len(set(kept)) == 21
    for token in kept:
        for key in (seeded.secret_key, seeded.receiver_key):
            response = _verify(served, key, token)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["subject"] == seeded.caller_id
            assert body["scopes"] == [seeded.receiver_id]
            assert body["claims"] is None
            assert body["revoked"] is False
            assert body["expired"] is False


def test_a_token_that_was_never_inserted_does_not_verify(served: Served) -> None:
    seeded = served.seeded
    assert _verify(served, seeded.secret_key, token_secrets(1)[0]).status_code == 404
    api_url = served.server.base_url
    with (
        Gatepass(machine_secret_key=seeded.receiver_key, api_url=api_url) as receiver,
        pytest.raises(TokenVerificationError),
    ):
        receiver.m2m_tokens.verify(generate_secret(SecretKind.TOKEN))


def test_bulk_tokens_with_nothing_to_insert(served: Served) -> None:
    seeded = served.seeded
    kept = bulk_tokens(
        served.database_url,
        instance_id=seeded.instance_id,
        subject=seeded.caller_id,
        scopes=[],
        count=0,
        keep_every=1,
    )
    assert kept == []


def test_token_secrets_have_the_form_generate_secret_gives() -> None:
    made = token_secrets(5000)
    assert len(set(made)) == 5000
    reference = generate_secret(SecretKind.TOKEN)
    for secret in made:
        assert len(secret) == len(reference)
        assert is_well_formed(secret, SecretKind.TOKEN)
    body_characters = set("".join(s[3:-6] for s in made))
    assert len(body_characters) == 62


@pytest.mark.parametrize(
    ("count", "keep_every"), [(-1, 1), (1, 0)], ids=["negative count", "keep none"]
)
def test_bulk_tokens_rejects_bad_arguments(count: int, keep_every: int) -> None:
    with pytest.raises(ValueError, match="count must be"):
        bulk_tokens(
            "sqlite:///unused.db",
            instance_id="ins_x",
            subject="mch_x",
            scopes=[],
            count=count,
            keep_every=keep_every,
        )


def test_bulk_tokens_wants_a_supported_database() -> None:
    with pytest.raises(ValueError, match="mysql"):
        bulk_tokens(
            "mysql://db/x", instance_id="ins_x", subject="mch_x", scopes=[], count=1, keep_every=1
        )


def test_bulk_tokens_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(sqlite3.OperationalError):
        bulk_tokens(
            f"sqlite:///{missing}",
            instance_id="ins_x",
            subject="mch_x",
            scopes=[],
            count=1,
            keep_every=1,
        )
    assert not missing.exists()
