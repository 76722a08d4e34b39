"""Bad configuration: every command stops with exit 2 and a message naming the variable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from cli_support import Cli

BAD_VALUES = [
    ("GATEPASS_PORT", "abc"),
    ("GATEPASS_PORT", "70000"),
    ("GATEPASS_LOG_LEVEL", "loud"),
    ("GATEPASS_WORKERS", "0"),
    ("GATEPASS_MAX_BODY_BYTES", "12"),
    ("GATEPASS_MASTER_KEY", "not-base64-of-32-bytes"),
    ("GATEPASS_DATABASE_URL", "mysql://db.internal/gatepass"),
    ("GATEPASS_REDIS_URL", "http://cache.internal"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
@pytest.mark.parametrize(
    "command",
    [("serve",), ("db", "upgrade"), ("machines", "list")],
    ids=["serve", "db-upgrade", "machines-list"],
)
def test_bad_variable_stops_the_command_naming_it(
    bare_cli: Cli, tmp_path: Path, command: tuple[str, ...], variable: str, value: str
) -> None:
    """A bad value exits 2 before any work, with one error line naming the variable."""
    result = bare_cli(*command, **{variable: value})
    assert result.exit_code == 2, result.output
    assert variable in result.stderr, result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "data" / "gatepass.db").exists(), "nothing was started"


def test_bad_flag_value_is_a_usage_error(bare_cli: Cli) -> None:
    """`serve --port abc` is rejected by the option parser, naming the option."""
    result = bare_cli("serve", "--port", "abc")
    assert result.exit_code == 2
    assert "--port" in result.output


def test_bad_flag_overrides_a_good_variable(bare_cli: Cli) -> None:
    """A flag wins over its variable, so a bad --log-level fails even with a good variable."""
    result = bare_cli("serve", "--log-level", "loud", GATEPASS_LOG_LEVEL="info")
    assert result.exit_code == 2
    assert "GATEPASS_LOG_LEVEL" in result.stderr


def test_max_body_bytes_flag_is_validated_like_its_variable(bare_cli: Cli) -> None:
    """`serve --max-body-bytes` reaches the settings: a too-small value is refused by name."""
    result = bare_cli("serve", "--max-body-bytes", "12")
    assert result.exit_code == 2
    assert "GATEPASS_MAX_BODY_BYTES" in result.stderr
