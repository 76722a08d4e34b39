"""README.md's claims, checked so that they cannot rot (STYLE.md habit 10)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
from typer.testing import CliRunner

from bench.model import Row
from bench.report import format_table
from gatepass_server.cli.main import app
from gatepass_server.config import Settings
from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.domain.sealing import encode_master_key
from gatepass_server.storage.database import normalize_url
from helpers import live_server

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT: Final = Path(__file__).resolve().parent.parent
README: Final = (ROOT / "README.md").read_text()
README_URL: Final = "http://127.0.0.1:8080"

FENCE: Final = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# A value each README variable accepts, unlike its default, so that reading it shows.
SAMPLE_VALUES: Final = {
    "GATEPASS_DATABASE_URL": "sqlite:////var/lib/gatepass/other.db",
    "GATEPASS_DATA_DIR": "/var/lib/gatepass",
    "GATEPASS_MASTER_KEY": encode_master_key(bytes(range(32))),
    "GATEPASS_BOOTSTRAP_SECRET_KEY": generate_secret(SecretKind.INSTANCE_TEST),
    "GATEPASS_HOST": "0.0.0.0",  # noqa: S104 - a value to parse, nothing binds it
    "GATEPASS_PORT": "9090",
    "GATEPASS_WORKERS": "4",
    "GATEPASS_LOG_LEVEL": "debug",
    "GATEPASS_MAX_BODY_BYTES": "131072",
    "GATEPASS_REDIS_URL": "redis://127.0.0.1:6379/0",
    "GATEPASS_AUTH_FAILURE_LIMIT": "30",
    "GATEPASS_VERIFY_MISS_LIMIT": "1200",
    "GATEPASS_FORWARDED_ALLOW_IPS": "10.0.0.1,10.0.0.2",
}


def _blocks() -> list[tuple[str, str]]:
    """Every fenced block as (language, body)."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README)]


def _section(title: str) -> str:
    """The text of one ``## `` section."""
    pattern = rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)"
    match = re.search(pattern, README, re.DOTALL | re.MULTILINE)
    assert match is not None, f"README has no section {title!r}"
    return match.group(1)


def _commands(block: str) -> list[str]:
    """The commands of a shell block, comments and blank lines dropped."""
    joined = block.replace("\\\n", " ")
    lines = (line.split("#", 1)[0].strip() for line in joined.splitlines())
    return [line for line in lines if line]


def _config_rows() -> list[tuple[str, str]]:
    """(variable, default cell) of each row of the configuration table."""
    row = r"^\| `(GATEPASS_[A-Z_]+)` \| ([^|]*) \|"
    rows = re.findall(row, _section("Configuration"), re.MULTILINE)
    assert rows, "the configuration table lists no variables"
    return [(name, default.strip()) for name, default in rows]


def _field(variable: str) -> str:
    return variable.removeprefix("GATEPASS_").lower()


def test_readme_opens_with_exactly_make_serve_and_make_test() -> None:
    """The first code block holds exactly two commands: `make serve` and `make test`."""
    language, body = _blocks()[0]
    assert language == "sh"
    assert _commands(body) == ["make serve", "make test"]
    assert README.index("```") < README.index("## "), "the block comes before any section"


def test_makefile_has_the_targets_the_readme_names() -> None:
    """The Makefile defines `serve` and `test` (and `help`, which the README mentions)."""
    makefile = (ROOT / "Makefile").read_text()
    for target in ("serve", "test", "test-long", "help", "lint", "format", "lock"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
        assert re.search(rf"^\.PHONY: {target}$", makefile, re.MULTILINE), target


def test_ci_runs_make_test() -> None:
    """`.ci/run` runs the README's test command, so CI and people run the same thing."""
    commands = _commands((ROOT / ".ci" / "run").read_text())
    assert "make test" in commands


@pytest.fixture
def readme_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh server on SQLite, as `make serve` starts it, and its key."""
    key = generate_secret(SecretKind.INSTANCE_TEST)
    env = {
        "GATEPASS_DATA_DIR": str(tmp_path / "data"),
        "GATEPASS_DATABASE_URL": "",
        "GATEPASS_BOOTSTRAP_SECRET_KEY": key,
        "GATEPASS_MASTER_KEY": "",
    }
    with live_server(env, tmp_path / "server.log") as server:
        yield server.url, key


def test_readme_python_example_runs_against_a_live_server(
    readme_server: tuple[str, str],
) -> None:
    """The tour's Python block runs as written, with SK bound and the URL pointing at us."""
    url, key = readme_server
    python_blocks = [body for language, body in _blocks() if language == "python"]
    tour = _section("A 60-second tour")
    (example,) = [body for body in python_blocks if body in tour]
    assert README_URL in example, "the example talks to the README's server address"
    code = example.replace(README_URL, url)
    printed = io.StringIO()
    namespace: dict[str, Any] = {"SK": key}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    lines = printed.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"ak_[0-9A-Za-z]+", lines[0]), "the email machine's key"
    assert lines[1] == "1", "one machine matches 'email'"


def test_readme_shell_examples_use_commands_and_flags_that_exist() -> None:
    """Every `gatepass-server …` line in the README names a real command and real flags."""
    runner = CliRunner()
    seen = set()
    for language, body in _blocks():
        if language != "sh":
            continue
        for line in _commands(body):
            words = shlex.split(line)
            if not words or not words[0].endswith("gatepass-server"):
                continue
            positional = [w for w in words[1:] if not w.startswith("-")]
            groups = {group.name for group in app.registered_groups}
            depth = 2 if positional and positional[0] in groups else 1
            path = positional[:depth] if words[1] != "--help" else []
            seen.add(tuple(path))
            result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
            assert result.exit_code == 0, (line, result.output)
            for flag in (w.split("=", 1)[0] for w in words[1:] if w.startswith("--")):
                assert flag in result.output, (line, flag)
    assert {("machines", "create"), ("db", "upgrade"), ("serve",)} <= seen


@pytest.mark.parametrize(("variable", "default"), _config_rows())
def test_every_configuration_variable_is_read(variable: str, default: str) -> None:
    """Settings.from_env accepts each README variable and the value changes the settings."""
    assert variable in SAMPLE_VALUES, f"give {variable} a sample value in this test"
    del default
    base = Settings.from_env(env={})
    changed = Settings.from_env(env={variable: SAMPLE_VALUES[variable]})
    assert changed != base, f"{variable} was not read"
    if variable not in {"GATEPASS_DATABASE_URL", "GATEPASS_DATA_DIR"}:
        assert str(getattr(changed, _field(variable))) == SAMPLE_VALUES[variable]


@pytest.mark.parametrize(("variable", "default"), _config_rows())
def test_documented_defaults_are_the_real_defaults(variable: str, default: str) -> None:
    """A literal default in the table is Settings' default; a described one leaves it unset."""
    settings = Settings().validated()
    actual = getattr(settings, _field(variable))
    literal = re.fullmatch(r"`([^`<>]+)`", default)
    if literal is not None:
        expected = literal.group(1)
        assert (Path(expected) if isinstance(actual, Path) else expected) == (
            actual if isinstance(actual, Path) else str(actual)
        )
    elif variable == "GATEPASS_DATABASE_URL":
        assert default == "`sqlite:///<data dir>/gatepass.db`"
        assert actual == normalize_url(f"sqlite:///{settings.data_dir}/gatepass.db")
    else:
        assert actual is None, f"{variable}: {default!r} means no configured value"


def test_serve_has_a_flag_for_every_configuration_variable() -> None:
    """`gatepass-server serve --help` lists a matching --flag for each README variable."""
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    flags = set(re.findall(r"--[a-z][a-z-]+", result.output))
    missing = [
        variable
        for variable, _ in _config_rows()
        if "--" + _field(variable).replace("_", "-") not in flags
    ]
    assert missing == [], f"serve has no flag for {missing}"
    for variable, _ in _config_rows():
        assert variable in result.output, f"--help does not name {variable}"


def test_the_performance_table_is_the_committed_full_report() -> None:
    """README's table is the committed full run's, row for row (`make bench` writes it)."""
    report = json.loads((ROOT / "bench" / "results" / "results.json").read_text())
    assert report["meta"]["mode"] == "full"
    names = {f.name for f in dataclasses.fields(Row)}
    rows = [Row(**{k: v for k, v in row.items() if k in names}) for row in report["rows"]]
    assert format_table(rows) in README
    for link in ("bench/results/results.md", "bench/results/ANALYSIS.md"):
        assert f"]({link})" in README
        assert (ROOT / link).is_file()
