"""``gatepass-server tokens …``: mint, list, get, verify and revoke from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from cli_support import UNKNOWN_MACHINE_ID, http

if TYPE_CHECKING:
    from cli_support import Cli

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


def _machine(cli: Cli) -> dict[str, Any]:
    created: dict[str, Any] = cli.json("machines", "create", "Mailer", "--default-token-ttl", "60")
    return created


def test_create_list_get_verify_revoke(cli: Cli, instance: dict[str, Any]) -> None:
    """A token minted by the CLI verifies over HTTP, lists, and stops verifying once revoked."""
    machine = _machine(cli)
    created = cli.json("tokens", "create", machine["id"], "--claims", '{"role": "mailer"}')
    assert set(created) == TOKEN_KEYS | {"token"}
    assert created["claims"] == {"role": "mailer"}
    status, _ = http(
        cli, "POST", "/v1/m2m_tokens/verify", instance["secret_key"], {"token": created["token"]}
    )
    assert status == 200
    listed = cli.json("tokens", "list", machine["id"])
    assert [t["id"] for t in listed["m2m_tokens"]] == [created["id"]]
    assert cli.json("tokens", "get", created["id"])["id"] == created["id"]
    assert cli.json("tokens", "verify", created["token"])["id"] == created["id"]
    revoked = cli.json("tokens", "revoke", created["id"], "--reason", "rotated")
    assert revoked["revoked"] is True
    assert revoked["revocation_reason"] == "rotated"
    status, _ = http(
        cli, "POST", "/v1/m2m_tokens/verify", instance["secret_key"], {"token": created["token"]}
    )
    assert status == 404
    failed = cli("tokens", "verify", created["token"])
    assert failed.exit_code == 1
    assert "revoked" in failed.stderr
    assert cli.json("tokens", "list", machine["id"])["total_count"] == 0
    assert cli.json("tokens", "list", machine["id"], "--revoked")["total_count"] == 1


def test_jwt_tokens_are_minted_and_kept_by_id(cli: Cli, instance: dict[str, Any]) -> None:
    """--jwt mints a three-part token; like Clerk it is not listed, but get shows its record."""
    del instance
    machine = _machine(cli)
    created = cli.json("tokens", "create", machine["id"], "--jwt", "--seconds", "30")
    assert created["token"].count(".") == 2
    assert created["expiration"] == created["created_at"] + 30_000
    assert cli.json("tokens", "list", machine["id"])["total_count"] == 0
    table = cli.ok("tokens", "get", created["id"]).stdout
    assert created["id"] in table
    assert "jwt" in table


def test_errors_are_clear(cli: Cli, instance: dict[str, Any]) -> None:
    """Unknown machine, reserved claims and an unknown token id fail with a message."""
    del instance
    unknown = cli("tokens", "create", UNKNOWN_MACHINE_ID)
    assert unknown.exit_code == 1
    assert "Machine not found" in unknown.stderr
    machine = _machine(cli)
    reserved = cli("tokens", "create", machine["id"], "--claims", '{"sub": "mch_x"}')
    assert reserved.exit_code == 1
    assert "reserved" in reserved.stderr
    missing = cli("tokens", "get", "mt_" + "0" * 32)
    assert missing.exit_code == 1
    assert "not found" in missing.stderr.lower()


def test_verify_of_a_non_utf8_argument_is_not_valid_not_a_traceback(
    cli: Cli, instance: dict[str, Any]
) -> None:
    """Fuzz finding: a non-UTF-8 byte in argv (a lone surrogate in Python) crashed the digest."""
    del instance
    for token in ("mt_\udcff", "sk_test_\ud800", "a.b.\udcff"):
        failed = cli("tokens", "verify", token)
        assert failed.exit_code == 1, failed.output
        assert "token is not valid: unknown" in failed.stderr
