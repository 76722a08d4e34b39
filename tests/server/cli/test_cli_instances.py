"""``gatepass-server instances …``: tenants and their ``sk_`` keys."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from cli_support import authenticates

from gatepass_server.domain.keys import SecretKind, is_well_formed

if TYPE_CHECKING:
    from cli_support import Cli

INSTANCE_ID = re.compile(r"ins_[A-Za-z0-9]{27}")


@pytest.mark.parametrize(
    ("flags", "kind"),
    [((), SecretKind.INSTANCE_TEST), (("--live",), SecretKind.INSTANCE_LIVE)],
    ids=["test", "live"],
)
@pytest.mark.parametrize("backend", ["sqlite"])
def test_generate_key_prints_a_well_formed_key(
    cli: Cli, flags: tuple[str, ...], kind: SecretKind
) -> None:
    """`generate-key` prints a fresh sk_test_ (--live: sk_live_) key with a valid checksum."""
    first = cli.ok("instances", "generate-key", *flags).stdout
    second = cli.ok("instances", "generate-key", *flags).stdout
    key = first.strip()
    assert first == key + "\n", "exactly the key and a newline, for scripts"
    assert re.fullmatch(re.escape(kind.value) + r"[0-9A-Za-z]{38}", key), key
    assert is_well_formed(key, kind)
    assert second.strip() != key
    assert not authenticates(cli, key), "generate-key stores nothing"


def test_create_json_returns_id_name_and_a_working_key(cli: Cli) -> None:
    """`instances create --json` prints id, name and an sk_test_ key that authenticates."""
    created = cli.json("instances", "create", "staging")
    assert set(created) == {"id", "name", "secret_key"}
    assert INSTANCE_ID.fullmatch(created["id"])
    assert created["name"] == "staging"
    assert created["secret_key"].startswith("sk_test_")
    assert authenticates(cli, created["secret_key"])


def test_create_live_issues_an_sk_live_key(cli: Cli) -> None:
    """`instances create --live` issues an sk_live_ key."""
    created = cli.json("instances", "create", "production", "--live")
    assert created["secret_key"].startswith("sk_live_")
    assert authenticates(cli, created["secret_key"])


def test_create_without_json_shows_id_and_key_once(cli: Cli) -> None:
    """Without --json, create prints the instance id and its key for a person."""
    out = cli.ok("instances", "create", "staging").stdout
    instance_id = INSTANCE_ID.search(out)
    key = re.search(r"sk_test_[0-9A-Za-z]+", out)
    assert instance_id is not None, out
    assert key is not None, out
    assert "shown once" in out
    assert authenticates(cli, key.group())


def test_list_shows_every_instance_oldest_first(cli: Cli) -> None:
    """`instances list --json` gives id, name, created_at, oldest first; so does the table."""
    made = [cli.json("instances", "create", name) for name in ("first", "second")]
    listed: list[dict[str, Any]] = cli.json("instances", "list")
    assert [(i["id"], i["name"]) for i in listed] == [(m["id"], m["name"]) for m in made]
    for item in listed:
        assert set(item) == {"id", "name", "created_at"}
        assert type(item["created_at"]) is int
    assert listed[0]["created_at"] <= listed[1]["created_at"]
    table = cli.ok("instances", "list").stdout
    for item in made:
        assert item["id"] in table
        assert item["name"] in table


def test_list_is_empty_on_a_new_database(cli: Cli) -> None:
    """`instances list --json` on a fresh database is an empty array."""
    assert cli.json("instances", "list") == []


def test_rotate_key_retires_the_old_key_at_once(cli: Cli) -> None:
    """rotate-key --json issues a new key; without --grace the old one stops working."""
    created = cli.json("instances", "create", "staging")
    rotated = cli.json("instances", "rotate-key", created["id"])
    assert set(rotated) == {"id", "secret_key"}
    assert rotated["id"] == created["id"]
    assert rotated["secret_key"] != created["secret_key"]
    assert authenticates(cli, rotated["secret_key"])
    assert not authenticates(cli, created["secret_key"])


def test_rotate_key_with_grace_keeps_the_old_key_for_now(cli: Cli) -> None:
    """With --grace 600 the old key keeps working next to the new one."""
    created = cli.json("instances", "create", "staging")
    rotated = cli.json("instances", "rotate-key", created["id"], "--grace", "600")
    assert authenticates(cli, created["secret_key"])
    assert authenticates(cli, rotated["secret_key"])


def test_rotate_key_live_and_without_json(cli: Cli) -> None:
    """rotate-key --live prints an sk_live_ key for a person; it authenticates."""
    created = cli.json("instances", "create", "staging")
    out = cli.ok("instances", "rotate-key", created["id"], "--live").stdout
    key = re.search(r"sk_live_[0-9A-Za-z]+", out)
    assert key is not None, out
    assert created["id"] in out
    assert authenticates(cli, key.group())
    assert not authenticates(cli, created["secret_key"])


def test_rotate_key_of_an_unknown_instance_fails_clearly(cli: Cli) -> None:
    """rotate-key for an instance that does not exist exits non-zero saying so."""
    result = cli("instances", "rotate-key", "ins_" + "0" * 27)
    assert result.exit_code != 0
    assert "Instance not found" in result.stderr, result.stderr
    assert result.stdout == ""
