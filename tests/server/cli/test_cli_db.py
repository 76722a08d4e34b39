"""``gatepass-server db upgrade|check``: apply the migrations, detect drift and strangers."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from cli_support import execute

from gatepass_server.storage.database import Database
from gatepass_server.storage.schema import SchemaState, SchemaStatus, schema_status

if TYPE_CHECKING:
    from cli_support import Cli


def _status(url: str) -> SchemaStatus:
    async def go() -> SchemaStatus:
        database = Database(url)
        try:
            return await schema_status(database)
        finally:
            await database.dispose()

    return asyncio.run(go())


def test_upgrade_migrates_an_empty_database_and_prints_the_revision(
    scratch_cli: Cli, empty_database_url: str
) -> None:
    """`db upgrade` brings a new database to head and says which revision that is."""
    assert _status(empty_database_url).state is SchemaState.EMPTY
    result = scratch_cli.ok("db", "upgrade")
    status = _status(empty_database_url)
    assert status.state is SchemaState.CURRENT
    match = re.search(r"Schema is at revision (\S+) \(head (\S+)\)\.", result.stdout)
    assert match is not None, result.stdout
    assert match.groups() == (status.head, status.head)


def test_upgrade_twice_is_harmless(scratch_cli: Cli, empty_database_url: str) -> None:
    """A second db upgrade finds nothing to do and still reports the head."""
    scratch_cli.ok("db", "upgrade")
    again = scratch_cli.ok("db", "upgrade")
    assert _status(empty_database_url).head in again.stdout


def test_check_passes_on_a_migrated_database(cli: Cli) -> None:
    """`db check` exits 0 when the migrations produce exactly the code's tables."""
    result = cli.ok("db", "check")
    assert "Schema matches the code." in result.stdout


def test_check_fails_on_an_unmigrated_database(scratch_cli: Cli) -> None:
    """`db check` on a database no migration touched exits non-zero and says to upgrade."""
    result = scratch_cli("db", "check")
    assert result.exit_code != 0
    assert "db upgrade" in result.stderr, result.stderr


def test_check_fails_on_a_drifted_schema(scratch_cli: Cli, empty_database_url: str) -> None:
    """A column added by hand is drift: db check exits non-zero and names the change."""
    scratch_cli.ok("db", "upgrade")
    execute(empty_database_url, "ALTER TABLE machines ADD COLUMN hand_made INTEGER")
    result = scratch_cli("db", "check")
    assert result.exit_code != 0
    assert "drift" in result.stderr
    assert "hand_made" in result.stderr, result.stderr


def test_check_fails_on_a_dropped_index(scratch_cli: Cli, empty_database_url: str) -> None:
    """An index missing from the database is drift too."""
    scratch_cli.ok("db", "upgrade")
    execute(empty_database_url, "DROP INDEX ix_machine_scopes_to_machine_id")
    result = scratch_cli("db", "check")
    assert result.exit_code != 0
    assert "ix_machine_scopes_to_machine_id" in result.stderr, result.stderr


def test_upgrade_and_check_refuse_an_unknown_revision(
    scratch_cli: Cli, empty_database_url: str
) -> None:
    """A revision from a newer release stops db upgrade and db check with that revision named."""
    scratch_cli.ok("db", "upgrade")
    execute(empty_database_url, "UPDATE alembic_version SET version_num = '9999_future'")
    for command in ("upgrade", "check"):
        result = scratch_cli("db", command)
        assert result.exit_code != 0, command
        assert "9999_future" in result.stderr, result.stderr
    assert _status(empty_database_url).current == "9999_future", "nothing was downgraded"


def test_admin_commands_refuse_an_unmigrated_database(scratch_cli: Cli) -> None:
    """Admin commands do not run on a database that is not at this release's schema."""
    result = scratch_cli("machines", "list")
    assert result.exit_code != 0
    assert "db upgrade" in result.stderr, result.stderr
