"""A real ``gatepass-server serve`` per backend, driven by Clerk's Python SDK.

One server per backend serves every contract test, for speed. So every test makes its
own machines (names carry a fresh tag) and never assumes what else the server holds.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
from contract_support import Contract, sdk

from gatepass_server.domain.sealing import encode_master_key
from helpers import live_server, throwaway_postgres_database

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clerk_backend_api import Clerk


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def contract_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database of our own; the server migrates it on start."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('contract') / 'gatepass.db'}"
        return
    # NOTE: not the session's shared database: other tests truncate that one, which
    # would pull the instance out from under a server that outlives a single test.
    shared = str(request.getfixturevalue("postgres_server_url"))
    with throwaway_postgres_database(shared, "gatepass_contract") as url:
        yield url


@pytest.fixture(scope="session")
def contract(
    contract_database_url: str,
    bootstrap_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Contract]:
    """A live server on 127.0.0.1 and the default instance's ``sk_`` key."""
    data_dir = tmp_path_factory.mktemp("contract-data")
    env = {
        "GATEPASS_DATA_DIR": str(data_dir),
        "GATEPASS_DATABASE_URL": contract_database_url,
        "GATEPASS_BOOTSTRAP_SECRET_KEY": bootstrap_key,
        "GATEPASS_MASTER_KEY": encode_master_key(secrets.token_bytes(32)),
    }
    with live_server(env, data_dir / "server.log") as server:
        yield Contract(server=server, sk=bootstrap_key)


@pytest.fixture
def clerk(contract: Contract) -> Iterator[Clerk]:
    """Clerk's SDK authenticated with the instance key, without retries."""
    with sdk(contract.server.url, contract.sk) as client:
        yield client


@pytest.fixture
def tag() -> str:
    """A fresh lowercase word for this test's machine names (``query`` finds only them)."""
    return "t" + secrets.token_hex(5)
