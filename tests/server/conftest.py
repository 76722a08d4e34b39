"""Fixtures shared by the suites that run real server processes (cluster, history)."""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Final

import pytest

from gatepass_server.domain.sealing import encode_master_key

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

NODE_MASTER_KEY: Final = encode_master_key(secrets.token_bytes(32))
"""Every node of a cluster shares it: a machine key sealed by one node opens on another."""


@pytest.fixture(scope="session")
def node_env(bootstrap_key: str) -> Callable[[Mapping[str, str], Path], dict[str, str]]:
    """The environment of one node: ``storage`` variables, its own data directory.

    Every other ``GATEPASS_*`` variable of the outer environment is blanked (unset for the
    server), so neither a developer's ``GATEPASS_REDIS_URL`` nor a stray failpoint leaks in.
    """

    def build(storage: Mapping[str, str], data_dir: Path) -> dict[str, str]:
        data_dir.mkdir(parents=True, exist_ok=True)
        return {
            **{name: "" for name in os.environ if name.startswith("GATEPASS_")},
            "GATEPASS_DATA_DIR": str(data_dir),
            "GATEPASS_MASTER_KEY": NODE_MASTER_KEY,
            "GATEPASS_BOOTSTRAP_SECRET_KEY": bootstrap_key,
            **storage,
        }

    return build
