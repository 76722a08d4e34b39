"""Settings from ``GATEPASS_*`` variables, and the master key file made on first start."""

from __future__ import annotations

import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gatepass_server.config import Settings, load_master_key
from gatepass_server.domain.keys import SecretKind, generate_secret
from gatepass_server.domain.sealing import decode_master_key, encode_master_key
from gatepass_server.errors import ConfigurationError

MASTER_KEY = encode_master_key(bytes(range(32)))


def test_defaults() -> None:
    """With no variables set: local SQLite under ``gatepass-data``, 127.0.0.1:8080, one worker."""
    settings = Settings.from_env({})
    assert settings.data_dir == Path("gatepass-data")
    assert settings.database_url == "sqlite+aiosqlite:///gatepass-data/gatepass.db"
    assert settings.redis_url is None
    assert settings.master_key is None
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.workers == 1
    assert settings.bootstrap_secret_key is None
    assert settings.log_level == "info"
    assert settings.max_body_bytes == 64 * 1024


def test_every_variable_is_read() -> None:
    """Each ``GATEPASS_*`` variable lands in its setting."""
    bootstrap = generate_secret(SecretKind.INSTANCE_TEST)
    settings = Settings.from_env(
        {
            "GATEPASS_DATA_DIR": "/srv/gatepass",
            "GATEPASS_DATABASE_URL": "postgresql://user:pw@db.internal:5433/gp",
            "GATEPASS_REDIS_URL": "redis://cache:6379/0",
            "GATEPASS_MASTER_KEY": MASTER_KEY,
            "GATEPASS_HOST": "0.0.0.0",  # noqa: S104 - a value under test, nothing binds
            "GATEPASS_PORT": "9000",
            "GATEPASS_WORKERS": "4",
            "GATEPASS_BOOTSTRAP_SECRET_KEY": bootstrap,
            "GATEPASS_LOG_LEVEL": "debug",
            "GATEPASS_MAX_BODY_BYTES": "2048",
        },
    )
    assert settings.data_dir == Path("/srv/gatepass")
    assert settings.database_url == "postgresql+asyncpg://user:pw@db.internal:5433/gp"
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.master_key == MASTER_KEY
    assert settings.host == "0.0.0.0"  # noqa: S104
    assert settings.port == 9000
    assert settings.workers == 4
    assert settings.bootstrap_secret_key == bootstrap
    assert settings.log_level == "debug"
    assert settings.max_body_bytes == 2048


def test_data_dir_places_the_default_database() -> None:
    """Without a database URL, the SQLite file lives in the data directory."""
    settings = Settings.from_env({"GATEPASS_DATA_DIR": "/var/lib/gp"})
    assert settings.database_url == "sqlite+aiosqlite:////var/lib/gp/gatepass.db"


def test_empty_variables_count_as_unset() -> None:
    """``GATEPASS_PORT=`` (empty) leaves the default, as if not set."""
    settings = Settings.from_env(
        {"GATEPASS_PORT": "", "GATEPASS_REDIS_URL": "", "GATEPASS_HOST": ""}
    )
    assert settings.port == 8080
    assert settings.redis_url is None
    assert settings.host == "127.0.0.1"


def test_other_variables_are_ignored() -> None:
    """Only the ``GATEPASS_`` prefix is read."""
    settings = Settings.from_env({"PORT": "1", "DATABASE_URL": "mysql://x", "gatepass_port": "2"})
    assert settings.port == 8080


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, the process environment is read."""
    monkeypatch.setenv("GATEPASS_PORT", "8181")
    assert Settings.from_env().port == 8181


def test_overrides_beat_the_environment() -> None:
    """``serve`` flags override variables."""
    settings = Settings.from_env(
        {"GATEPASS_PORT": "9000", "GATEPASS_LOG_LEVEL": "debug"}, port=9001
    )
    assert settings.port == 9001
    assert settings.log_level == "debug"


def test_none_overrides_are_ignored() -> None:
    """A flag that was not given (``None``) does not mask the variable."""
    settings = Settings.from_env(
        {"GATEPASS_PORT": "9000", "GATEPASS_REDIS_URL": "redis://r"},
        port=None,
        redis_url=None,
        host=None,
    )
    assert settings.port == 9000
    assert settings.redis_url == "redis://r"
    assert settings.host == "127.0.0.1"


def test_overrides_are_validated_too() -> None:
    """A bad flag value is refused like a bad variable."""
    with pytest.raises(ConfigurationError, match="GATEPASS_PORT"):
        Settings.from_env({}, port=0)


def test_log_level_is_case_insensitive() -> None:
    """``WARNING`` is read as ``warning``."""
    assert Settings.from_env({"GATEPASS_LOG_LEVEL": "WARNING"}).log_level == "warning"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEPASS_PORT", "0"),
        ("GATEPASS_PORT", "70000"),
        ("GATEPASS_PORT", "-1"),
        ("GATEPASS_PORT", "abc"),
        ("GATEPASS_PORT", "80.5"),
        ("GATEPASS_PORT", "8" * 5000),
        ("GATEPASS_WORKERS", "0"),
        ("GATEPASS_WORKERS", "257"),
        ("GATEPASS_WORKERS", "many"),
        ("GATEPASS_MAX_BODY_BYTES", "100"),
        ("GATEPASS_MAX_BODY_BYTES", "lots"),
        ("GATEPASS_LOG_LEVEL", "loud"),
        ("GATEPASS_LOG_LEVEL", "trace"),
        ("GATEPASS_MASTER_KEY", "not base64!"),
        ("GATEPASS_MASTER_KEY", encode_master_key(bytes(16))),
        ("GATEPASS_MASTER_KEY", encode_master_key(bytes(48))),
        ("GATEPASS_MASTER_KEY", MASTER_KEY[:20] + "*" + MASTER_KEY[20:]),
        ("GATEPASS_DATABASE_URL", "mysql://root@localhost/gatepass"),
        ("GATEPASS_DATABASE_URL", "mongodb://localhost/gatepass"),
        ("GATEPASS_DATABASE_URL", "not a url"),
        ("GATEPASS_REDIS_URL", "http://cache:6379"),
        ("GATEPASS_REDIS_URL", "cache:6379"),
        ("GATEPASS_AUTH_FAILURE_LIMIT", "-1"),
        ("GATEPASS_AUTH_FAILURE_LIMIT", "60001"),
        ("GATEPASS_AUTH_FAILURE_LIMIT", "fast"),
        ("GATEPASS_VERIFY_MISS_LIMIT", "-5"),
        ("GATEPASS_VERIFY_MISS_LIMIT", "1e9"),
        ("GATEPASS_FORWARDED_ALLOW_IPS", "  "),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    """Each bad value is a ``ConfigurationError`` whose message names the variable."""
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({name: value})


def test_rate_limits_default_to_sixty_and_six_hundred_and_zero_turns_them_off() -> None:
    """The limits per minute: 60 auth failures, 600 verify misses; 0 is accepted (off)."""
    defaults = Settings.from_env({})
    assert (defaults.auth_failure_limit, defaults.verify_miss_limit) == (60, 600)
    assert defaults.forwarded_allow_ips == "127.0.0.1"
    off = Settings.from_env({"GATEPASS_AUTH_FAILURE_LIMIT": "0", "GATEPASS_VERIFY_MISS_LIMIT": "0"})
    assert (off.auth_failure_limit, off.verify_miss_limit) == (0, 0)


def test_master_key_is_not_in_the_error_message() -> None:
    """A rejected master key is not echoed back (it may be nearly right)."""
    almost = encode_master_key(bytes(range(31)))
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"GATEPASS_MASTER_KEY": almost})
    assert almost not in str(caught.value)


def test_secrets_are_not_in_the_repr() -> None:
    """Printing settings (a log line, a traceback) shows neither master nor bootstrap key."""
    bootstrap = generate_secret(SecretKind.INSTANCE_TEST)
    settings = Settings.from_env(
        {"GATEPASS_MASTER_KEY": MASTER_KEY, "GATEPASS_BOOTSTRAP_SECRET_KEY": bootstrap},
    )
    assert MASTER_KEY not in repr(settings)
    assert bootstrap not in repr(settings)


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("sqlite:///data/gp.db", "sqlite+aiosqlite:///data/gp.db"),
        ("sqlite:////abs/gp.db", "sqlite+aiosqlite:////abs/gp.db"),
        ("sqlite+aiosqlite:///gp.db", "sqlite+aiosqlite:///gp.db"),
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db?ssl=require", "postgresql+asyncpg://u@h/db?ssl=require"),
    ],
)
def test_database_urls_are_normalized_to_the_async_drivers(given: str, normalized: str) -> None:
    """SQLite and PostgreSQL URLs of any spelling map onto aiosqlite and asyncpg."""
    assert Settings.from_env({"GATEPASS_DATABASE_URL": given}).database_url == normalized


def test_database_password_survives_normalization() -> None:
    """Normalizing keeps the real password (not SQLAlchemy's ``***`` mask)."""
    url = Settings.from_env({"GATEPASS_DATABASE_URL": "postgres://u:s3cr%40t@h/db"}).database_url
    assert url == "postgresql+asyncpg://u:s3cr%40t@h/db"


def test_validated_is_idempotent() -> None:
    """Validating settings twice gives the same settings."""
    settings = Settings.from_env({"GATEPASS_LOG_LEVEL": "ERROR"})
    assert settings.validated() == settings


# -- the master key file ----------------------------------------------------------------


def test_master_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    """First start writes a 0600 key file; the second start reads the same key back."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir).validated()
    first = load_master_key(settings)
    path = data_dir / "master.key"
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    assert decode_master_key(path.read_text()) == first
    written = path.read_bytes()

    assert load_master_key(settings) == first
    assert path.read_bytes() == written
    assert sorted(p.name for p in data_dir.iterdir()) == ["master.key"]


def test_master_key_files_differ_between_data_dirs(tmp_path: Path) -> None:
    """Each new data directory gets its own random key."""
    one = load_master_key(Settings(data_dir=tmp_path / "one").validated())
    two = load_master_key(Settings(data_dir=tmp_path / "two").validated())
    assert one != two


def test_configured_master_key_wins_and_writes_no_file(tmp_path: Path) -> None:
    """``GATEPASS_MASTER_KEY`` is used as given; no key file appears."""
    settings = Settings.from_env({"GATEPASS_MASTER_KEY": MASTER_KEY}, data_dir=tmp_path)
    assert load_master_key(settings) == bytes(range(32))
    assert not (tmp_path / "master.key").exists()


def test_corrupt_master_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A key file that is not base64 of 32 bytes is refused, naming the file."""
    (tmp_path / "master.key").write_text("garbage\n")
    with pytest.raises(ConfigurationError, match=r"master\.key"):
        load_master_key(Settings(data_dir=tmp_path).validated())


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    """Sixteen simultaneous first starts all get the same key, and no temporary file is left."""
    settings = Settings(data_dir=tmp_path / "data").validated()
    starters = 16
    barrier = threading.Barrier(starters)

    def start() -> bytes:
        barrier.wait(timeout=30)
        return load_master_key(settings)

    with ThreadPoolExecutor(max_workers=starters) as pool:
        keys = list(pool.map(lambda _: start(), range(starters)))
    assert len(set(keys)) == 1
    assert decode_master_key((tmp_path / "data" / "master.key").read_text()) == keys[0]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["master.key"]
