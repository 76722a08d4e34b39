"""``gatepass-server serve`` as a real process: first start, restart, refusing a newer schema."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from typing import TYPE_CHECKING

import httpx
import pytest
from cli_support import GATEPASS_VARIABLES, execute

from gatepass_server.domain.keys import SecretKind, generate_secret
from helpers import SERVER_BIN, auth, free_port, live_server

if TYPE_CHECKING:
    from pathlib import Path

    from cli_support import Cli

INSTANCE_KEY = re.compile(r"sk_(?:test|live)_[0-9A-Za-z]+")
SERVE_TIMEOUT = 60
"""Upper bound for a serve that must exit by itself; reaching it fails the test."""


def _env(**values: str) -> dict[str, str]:
    """Every GATEPASS_* variable blank (unset for the server) except the ones given."""
    env = dict.fromkeys(GATEPASS_VARIABLES, "")
    env.update(values)
    return env


def _status(base_url: str, key: str) -> int:
    return httpx.get(f"{base_url}/v1/machines", headers=auth(key), timeout=10).status_code


def test_first_start_prints_the_generated_key_once(database_url: str, tmp_path: Path) -> None:
    """Without a bootstrap key the first start prints a working sk_test_ key; a restart not."""
    data_dir = tmp_path / "data"
    env = _env(GATEPASS_DATA_DIR=str(data_dir), GATEPASS_DATABASE_URL=database_url)

    with live_server(env, tmp_path / "first.log") as server:
        first = server.log()
        keys = INSTANCE_KEY.findall(first)
        assert len(keys) == 1, first
        (key,) = keys
        assert key.startswith("sk_test_")
        assert re.search(r"Created the default instance ins_[0-9A-Za-z]{27}", first), first
        assert f"listening on {server.url}" in first
        assert _status(server.url, key) == 200
        created = httpx.post(
            f"{server.url}/v1/machines", json={"name": "kept"}, headers=auth(key), timeout=10
        ).json()

    master_key = data_dir / "master.key"
    assert stat.S_IMODE(master_key.stat().st_mode) == 0o600, "the generated master key file"

    with live_server(env, tmp_path / "second.log") as server:
        second = server.log()
        assert INSTANCE_KEY.search(second) is None, second
        assert "Created the default instance" not in second
        assert _status(server.url, key) == 200
        shown = httpx.get(
            f"{server.url}/v1/machines/{created['id']}/secret_key", headers=auth(key), timeout=10
        )
        assert shown.json()["secret"] == created["secret_key"], "the master key file was reused"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_first_start_with_a_bootstrap_key_prints_no_key(database_url: str, tmp_path: Path) -> None:
    """With GATEPASS_BOOTSTRAP_SECRET_KEY set, that key works and no key is printed."""
    key = generate_secret(SecretKind.INSTANCE_LIVE)
    env = _env(
        GATEPASS_DATA_DIR=str(tmp_path / "data"),
        GATEPASS_DATABASE_URL=database_url,
        GATEPASS_BOOTSTRAP_SECRET_KEY=key,
    )
    with live_server(env, tmp_path / "server.log") as server:
        log = server.log()
        assert "Created the default instance" in log
        assert INSTANCE_KEY.search(log) is None, log
        assert _status(server.url, key) == 200


def _serve(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    """Run serve on 127.0.0.1 and a free port; it must exit by itself."""
    return subprocess.run(
        [str(SERVER_BIN), "serve", *flags],
        env={**_inherited(), **env, "GATEPASS_HOST": "127.0.0.1"},
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _inherited() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEPASS_")}


def test_serve_refuses_a_schema_from_a_newer_release(
    scratch_cli: Cli, empty_database_url: str, tmp_path: Path
) -> None:
    """`serve` exits non-zero, naming the revision, when alembic_version is unknown to it."""
    scratch_cli.ok("db", "upgrade")
    execute(empty_database_url, "UPDATE alembic_version SET version_num = '9999_future'")
    done = _serve(
        _env(
            GATEPASS_DATA_DIR=str(tmp_path / "data"),
            GATEPASS_DATABASE_URL=empty_database_url,
            GATEPASS_PORT=str(free_port()),
        ),
    )
    assert done.returncode != 0, done.stdout
    output = done.stdout + done.stderr
    assert "9999_future" in output, output
    assert "listening" not in output


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEPASS_PORT", "abc"),
        ("GATEPASS_LOG_LEVEL", "loud"),
    ],
)
def test_serve_with_a_bad_variable_exits_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    """A bad GATEPASS_* value stops the real process with a non-zero exit naming the variable."""
    env = _env(GATEPASS_DATA_DIR=str(tmp_path / "data"), GATEPASS_PORT=str(free_port()))
    env[variable] = value
    done = _serve(env)
    assert done.returncode != 0
    assert variable in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "gatepass.db").exists(), "nothing started"
