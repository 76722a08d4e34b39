"""``gatepass-server machines …``: the same operations and JSON bodies as the HTTP API."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from cli_support import MACHINE_KEYS, SUMMARY_KEYS, UNKNOWN_MACHINE_ID, authenticates, http

if TYPE_CHECKING:
    from cli_support import Cli

MACHINE_KEY = re.compile(r"ak_[0-9A-Za-z]{38}")


def _create(cli: Cli, name: str, *flags: str) -> dict[str, Any]:
    created: dict[str, Any] = cli.json("machines", "create", name, *flags)
    return created


def _http_get(cli: Cli, sk: str, path: str) -> Any:
    status, body = http(cli, "GET", path, sk)
    assert status == 200, body
    return body


# -- create ---------------------------------------------------------------------------------


def test_create_json_is_the_http_create_body(cli: Cli, instance: dict[str, Any]) -> None:
    """`machines create --json` prints a Machine plus secret_key, as POST /v1/machines does."""
    target = _create(cli, "API")
    created = _create(
        cli, "Email Server", "--scoped-machine", target["id"], "--default-token-ttl", "60"
    )
    assert set(created) == MACHINE_KEYS | {"secret_key"}
    assert created["object"] == "machine"
    assert created["instance_id"] == instance["id"]
    assert (created["name"], created["default_token_ttl"]) == ("Email Server", 60)
    assert MACHINE_KEY.fullmatch(created["secret_key"])
    (nested,) = created["scoped_machines"]
    assert set(nested) == SUMMARY_KEYS
    assert nested["id"] == target["id"]
    over_http = _http_get(cli, instance["secret_key"], f"/v1/machines/{created['id']}")
    assert over_http == {k: v for k, v in created.items() if k != "secret_key"}
    status, http_created = http(
        cli, "POST", "/v1/machines", instance["secret_key"], {"name": "over http"}
    )
    assert status == 200
    assert set(http_created) == set(created)


def test_create_defaults_and_a_working_key(cli: Cli, instance: dict[str, Any]) -> None:
    """Without options a machine has no scopes, a 3600 s TTL and a key that authenticates."""
    del instance
    created = _create(cli, "Plain")
    assert created["scoped_machines"] == []
    assert created["default_token_ttl"] == 3600
    assert authenticates(cli, created["secret_key"])


def test_create_without_json_shows_the_machine_and_its_key(
    cli: Cli, instance: dict[str, Any]
) -> None:
    """The table shows id and name, then the key once; that key authenticates."""
    out = cli.ok("machines", "create", "Billing").stdout
    key = MACHINE_KEY.search(out)
    assert key is not None, out
    assert "Secret key (shown once)" in out
    assert "Billing" in out
    (machine,) = _http_get(cli, instance["secret_key"], "/v1/machines")["data"]
    assert machine["id"] in out
    assert authenticates(cli, key.group())


@pytest.mark.parametrize(
    "flags",
    [("--default-token-ttl", "0"), ("--default-token-ttl", "315360001")],
    ids=["ttl-zero", "ttl-too-big"],
)
def test_create_rejects_an_out_of_range_ttl(
    cli: Cli, instance: dict[str, Any], flags: tuple[str, ...]
) -> None:
    """A TTL outside 1..315360000 is a usage error and creates nothing."""
    result = cli("machines", "create", "Bad", *flags)
    assert result.exit_code != 0
    assert "default-token-ttl" in result.output
    assert _http_get(cli, instance["secret_key"], "/v1/machines")["total_count"] == 0


def test_create_with_an_unknown_scoped_machine_fails(cli: Cli, instance: dict[str, Any]) -> None:
    """A --scoped-machine that does not exist stops create with a message and no machine."""
    result = cli("machines", "create", "Caller", "--scoped-machine", UNKNOWN_MACHINE_ID)
    assert result.exit_code != 0
    assert "does not exist" in result.stderr, result.stderr
    assert _http_get(cli, instance["secret_key"], "/v1/machines")["total_count"] == 0


# -- list -----------------------------------------------------------------------------------


def test_list_json_is_the_http_list_body(cli: Cli, instance: dict[str, Any]) -> None:
    """`machines list --json` prints {data, total_count} exactly as GET /v1/machines."""
    target = _create(cli, "API")
    _create(cli, "Email Server", "--scoped-machine", target["id"])
    _create(cli, "Billing")
    listed = cli.json("machines", "list")
    assert set(listed) == {"data", "total_count"}
    assert listed["total_count"] == 3
    for machine in listed["data"]:
        assert set(machine) == MACHINE_KEYS
    assert listed == _http_get(cli, instance["secret_key"], "/v1/machines")


def test_list_pages_searches_and_orders_like_http(cli: Cli, instance: dict[str, Any]) -> None:
    """--query, --limit, --offset and --order-by mean what the HTTP parameters mean."""
    for name in ("charlie", "alpha", "bravo", "delta"):
        _create(cli, name)
    sk = instance["secret_key"]
    cases = [
        (("--order-by", "name", "--limit", "2", "--offset", "1"), "order_by=name&limit=2&offset=1"),
        (("--order-by", "-name"), "order_by=-name"),
        (("--order-by", "+created_at"), "order_by=%2Bcreated_at"),
        (("--query", "LTA"), "query=LTA"),
    ]
    for flags, query in cases:
        assert cli.json("machines", "list", *flags) == _http_get(cli, sk, f"/v1/machines?{query}")
    names = [m["name"] for m in cli.json("machines", "list", "--order-by", "name")["data"]]
    assert names == ["alpha", "bravo", "charlie", "delta"]


def test_list_without_json_shows_a_table_and_a_count(cli: Cli, instance: dict[str, Any]) -> None:
    """The table lists each machine's id and name and ends with "n of total"."""
    del instance
    made = [_create(cli, name) for name in ("API", "Billing", "Email")]
    out = cli.ok("machines", "list", "--limit", "2", "--order-by", "name").stdout
    assert made[0]["id"] in out
    assert made[1]["id"] in out
    assert made[2]["id"] not in out
    assert "2 of 3" in out


def test_list_rejects_an_unknown_order(cli: Cli, instance: dict[str, Any]) -> None:
    """--order-by other than name/created_at exits non-zero naming the option."""
    del instance
    result = cli("machines", "list", "--order-by", "secret")
    assert result.exit_code != 0
    assert "--order-by" in result.stderr


# -- get, update, delete --------------------------------------------------------------------


def test_get_json_is_the_http_body_and_the_table_shows_it(
    cli: Cli, instance: dict[str, Any]
) -> None:
    """`machines get --json` equals GET /v1/machines/{id}; without --json a table shows it."""
    target = _create(cli, "API")
    created = _create(cli, "Email", "--scoped-machine", target["id"])
    got = cli.json("machines", "get", created["id"])
    assert set(got) == MACHINE_KEYS
    assert got == _http_get(cli, instance["secret_key"], f"/v1/machines/{created['id']}")
    out = cli.ok("machines", "get", created["id"]).stdout
    assert created["id"] in out
    assert target["id"] in out, "the scoped machines column"
    assert "Email" in out


def test_update_changes_only_what_is_given(cli: Cli, instance: dict[str, Any]) -> None:
    """`update --name` keeps the TTL, --default-token-ttl keeps the name; JSON is the Machine."""
    created = _create(cli, "Before", "--default-token-ttl", "90")
    renamed = cli.json("machines", "update", created["id"], "--name", "After")
    assert set(renamed) == MACHINE_KEYS
    assert (renamed["name"], renamed["default_token_ttl"]) == ("After", 90)
    out = cli.ok("machines", "update", created["id"], "--default-token-ttl", "7200").stdout
    assert created["id"] in out
    now = _http_get(cli, instance["secret_key"], f"/v1/machines/{created['id']}")
    assert (now["name"], now["default_token_ttl"]) == ("After", 7200)
    assert cli.json("machines", "get", created["id"]) == now


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_delete_removes_the_machine_and_its_key(
    cli: Cli, instance: dict[str, Any], as_json: bool
) -> None:
    """`machines delete` removes the machine, its scopes and its key; --json says deleted."""
    doomed = _create(cli, "Doomed")
    caller = _create(cli, "Caller", "--scoped-machine", doomed["id"])
    if as_json:
        assert cli.json("machines", "delete", doomed["id"]) == {
            "object": "machine",
            "id": doomed["id"],
            "deleted": True,
        }
    else:
        assert doomed["id"] in cli.ok("machines", "delete", doomed["id"]).stdout
    status, body = http(cli, "GET", f"/v1/machines/{doomed['id']}", instance["secret_key"])
    assert status == 404, body
    assert cli.json("machines", "get", caller["id"])["scoped_machines"] == []
    assert not authenticates(cli, doomed["secret_key"])


def test_delete_json_matches_the_http_delete_body(cli: Cli, instance: dict[str, Any]) -> None:
    """The JSON of machines delete has the keys and values DELETE /v1/machines/{id} answers."""
    one, two = _create(cli, "One"), _create(cli, "Two")
    from_cli = cli.json("machines", "delete", one["id"])
    status, from_http = http(cli, "DELETE", f"/v1/machines/{two['id']}", instance["secret_key"])
    assert status == 200
    assert from_cli == {**from_http, "id": one["id"]}


# -- secret keys ----------------------------------------------------------------------------


def test_secret_key_prints_the_current_key(cli: Cli, instance: dict[str, Any]) -> None:
    """secret-key prints the bare key; --json prints the HTTP machine_secret_key body."""
    created = _create(cli, "Keyed")
    assert cli.ok("machines", "secret-key", created["id"]).stdout == created["secret_key"] + "\n"
    body = cli.json("machines", "secret-key", created["id"])
    assert body == {"object": "machine_secret_key", "secret": created["secret_key"]}
    path = f"/v1/machines/{created['id']}/secret_key"
    assert body == _http_get(cli, instance["secret_key"], path)


def test_rotate_key_without_grace_kills_the_old_key(cli: Cli, instance: dict[str, Any]) -> None:
    """rotate-key (default --previous-token-ttl 0) prints the new key; the old one is dead."""
    created = _create(cli, "Rotating")
    rotated = cli.ok("machines", "rotate-key", created["id"]).stdout.strip()
    assert MACHINE_KEY.fullmatch(rotated)
    assert authenticates(cli, rotated)
    assert not authenticates(cli, created["secret_key"])
    path = f"/v1/machines/{created['id']}/secret_key"
    assert _http_get(cli, instance["secret_key"], path)["secret"] == rotated


def test_rotate_key_json_with_grace_keeps_the_old_key(cli: Cli, instance: dict[str, Any]) -> None:
    """rotate-key --json --previous-token-ttl 600: the HTTP rotate body; both keys work."""
    created = _create(cli, "Rotating")
    body = cli.json("machines", "rotate-key", created["id"], "--previous-token-ttl", "600")
    assert set(body) == {"object", "secret"}
    assert body["object"] == "machine_secret_key"
    assert authenticates(cli, body["secret"])
    assert authenticates(cli, created["secret_key"])
    status, over_http = http(
        cli,
        "POST",
        f"/v1/machines/{created['id']}/secret_key/rotate",
        instance["secret_key"],
        {"previous_token_ttl": 0},
    )
    assert status == 200
    assert set(over_http) == set(body)
    assert not authenticates(cli, body["secret"])


def test_rotate_key_rejects_grace_beyond_eight_hours(cli: Cli, instance: dict[str, Any]) -> None:
    """--previous-token-ttl above 28800 is a usage error; the key stays as it was."""
    del instance
    created = _create(cli, "Rotating")
    result = cli("machines", "rotate-key", created["id"], "--previous-token-ttl", "28801")
    assert result.exit_code != 0
    assert authenticates(cli, created["secret_key"])


# -- scopes ---------------------------------------------------------------------------------


def test_scope_add_and_remove_json_are_the_http_bodies(cli: Cli, instance: dict[str, Any]) -> None:
    """scope-add --json prints a MachineScope, scope-remove --json the deleted scope."""
    caller, target = _create(cli, "Caller"), _create(cli, "Target")
    added = cli.json("machines", "scope-add", caller["id"], target["id"])
    assert set(added) == {"object", "from_machine_id", "to_machine_id", "created_at"}
    assert (added["object"], added["from_machine_id"], added["to_machine_id"]) == (
        "machine_scope",
        caller["id"],
        target["id"],
    )
    assert type(added["created_at"]) is int
    got = _http_get(cli, instance["secret_key"], f"/v1/machines/{caller['id']}")
    assert [s["id"] for s in got["scoped_machines"]] == [target["id"]]

    removed = cli.json("machines", "scope-remove", caller["id"], target["id"])
    assert removed == {
        "object": "machine_scope",
        "from_machine_id": caller["id"],
        "to_machine_id": target["id"],
        "deleted": True,
    }
    assert cli.json("machines", "get", caller["id"])["scoped_machines"] == []

    sk = instance["secret_key"]
    path = f"/v1/machines/{caller['id']}/scopes"
    status, http_added = http(cli, "POST", path, sk, {"to_machine_id": target["id"]})
    assert status == 200
    assert set(http_added) == set(added)
    status, http_removed = http(cli, "DELETE", f"{path}/{target['id']}", sk)
    assert status == 200
    assert http_removed == removed


def test_scope_add_and_remove_without_json(cli: Cli, instance: dict[str, Any]) -> None:
    """Without --json the scope commands say in words who may call whom."""
    del instance
    caller, target = _create(cli, "Caller"), _create(cli, "Target")
    added = cli.ok("machines", "scope-add", caller["id"], target["id"]).stdout
    assert f"{caller['id']} may now call {target['id']}" in added
    removed = cli.ok("machines", "scope-remove", caller["id"], target["id"]).stdout
    assert f"{caller['id']} may no longer call {target['id']}" in removed
    assert cli.json("machines", "get", caller["id"])["scoped_machines"] == []


def test_scope_add_twice_fails_with_a_conflict(cli: Cli, instance: dict[str, Any]) -> None:
    """Adding an existing scope exits non-zero saying it exists."""
    del instance
    caller, target = _create(cli, "Caller"), _create(cli, "Target")
    cli.ok("machines", "scope-add", caller["id"], target["id"])
    result = cli("machines", "scope-add", caller["id"], target["id"])
    assert result.exit_code != 0
    assert "already exists" in result.stderr, result.stderr


# -- errors ---------------------------------------------------------------------------------

ON_UNKNOWN_MACHINE = [
    ("get",),
    ("update", "--name", "x"),
    ("delete",),
    ("secret-key",),
    ("rotate-key",),
    ("scope-add", "TARGET"),
    ("scope-remove", "TARGET"),
]


@pytest.mark.parametrize("command", ON_UNKNOWN_MACHINE, ids=lambda c: c[0])
def test_unknown_machine_fails_with_a_clear_message(
    cli: Cli, instance: dict[str, Any], command: tuple[str, ...]
) -> None:
    """Every per-machine command exits 1 with "Machine not found" on stderr, nothing on stdout."""
    del instance
    other = _create(cli, "Existing")
    args = [a.replace("TARGET", other["id"]) for a in command[1:]]
    for flags in ([], ["--json"]):
        result = cli("machines", command[0], UNKNOWN_MACHINE_ID, *args, *flags)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error:"), result.stderr
        assert "Machine not found" in result.stderr, result.stderr
        assert result.stdout == "", "no partial output, not even with --json"
        assert "Traceback" not in result.output


def test_machine_of_another_instance_is_not_found(cli: Cli, instance: dict[str, Any]) -> None:
    """Machine commands act on the default instance; --instance reaches another one."""
    del instance
    other = cli.json("instances", "create", "other")
    theirs = _create(cli, "Theirs", "--instance", other["id"])
    assert theirs["instance_id"] == other["id"]
    result = cli("machines", "get", theirs["id"])
    assert result.exit_code == 1
    assert "Machine not found" in result.stderr
    assert cli.json("machines", "get", theirs["id"], "--instance", other["id"]) == {
        k: v for k, v in theirs.items() if k != "secret_key"
    }


def test_machine_commands_without_any_instance_fail_clearly(cli: Cli) -> None:
    """After db upgrade alone, machine commands exit 1 saying how to get an instance."""
    cli.ok("db", "upgrade")
    result = cli("machines", "list")
    assert result.exit_code == 1
    assert "No instance exists yet" in result.stderr, result.stderr
    assert "instances create" in result.stderr, "a way out that db upgrade did not already take"
    cli.ok("instances", "create", "first")
    assert cli.json("machines", "list") == {"data": [], "total_count": 0}
