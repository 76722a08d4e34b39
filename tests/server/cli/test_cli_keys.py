"""``gatepass-server keys …``: rotating an instance's JWT signing key."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from cli_support import http

if TYPE_CHECKING:
    from cli_support import Cli

KID: Final = re.compile(r"[A-Za-z0-9_-]{43}")
"""An RFC 7638 thumbprint: base64url of SHA-256, no padding."""


def _published(cli: Cli, sk: str) -> list[str]:
    """The kids ``GET /v1/jwks`` lists for the instance of ``sk``."""
    status, body = http(cli, "GET", "/v1/jwks", sk)
    assert status == 200, body
    return [key["kid"] for key in body["keys"]]


def test_rotate_signing_json_reports_the_new_active_kid(cli: Cli, instance: dict[str, Any]) -> None:
    """`keys rotate-signing --json` prints instance_id and kid; the JWKS then lists that kid."""
    assert _published(cli, instance["secret_key"]) == []
    rotated = cli.json("keys", "rotate-signing")
    assert set(rotated) == {"instance_id", "kid"}
    assert rotated["instance_id"] == instance["id"]
    assert KID.fullmatch(rotated["kid"])
    assert _published(cli, instance["secret_key"]) == [rotated["kid"]]


def test_rotate_signing_changes_the_active_kid(cli: Cli, instance: dict[str, Any]) -> None:
    """Each rotation makes a new kid active; without --json the kid alone is printed."""
    first = cli.json("keys", "rotate-signing")["kid"]
    result = cli.ok("keys", "rotate-signing")
    second = result.stdout.strip()
    assert KID.fullmatch(second), result.stdout
    assert second != first
    assert _published(cli, instance["secret_key"]) == [second]


def test_rotate_signing_of_another_instance(cli: Cli, instance: dict[str, Any]) -> None:
    """--instance rotates that instance only; the default instance keeps its keys."""
    other = cli.json("instances", "create", "other")
    mine = cli.json("keys", "rotate-signing")["kid"]
    theirs = cli.json("keys", "rotate-signing", "--instance", other["id"])
    assert theirs["instance_id"] == other["id"]
    assert _published(cli, other["secret_key"]) == [theirs["kid"]]
    assert _published(cli, instance["secret_key"]) == [mine]


def test_rotate_signing_of_an_unknown_instance_fails_clearly(cli: Cli) -> None:
    """An instance that does not exist: exit 1, "Instance not found", nothing on stdout."""
    cli.ok("db", "upgrade")
    result = cli("keys", "rotate-signing", "--instance", "ins_" + "0" * 27)
    assert result.exit_code == 1
    assert "Instance not found" in result.stderr, result.stderr
    assert result.stdout == ""


def test_rotate_signing_without_any_instance_fails_clearly(cli: Cli) -> None:
    """With no instance at all the command says how to get one."""
    cli.ok("db", "upgrade")
    result = cli("keys", "rotate-signing")
    assert result.exit_code == 1
    assert "No instance exists yet" in result.stderr, result.stderr
