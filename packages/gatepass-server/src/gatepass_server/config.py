"""Configuration: ``GATEPASS_*`` environment variables, overridden by ``serve`` flags.

A bad value is a :class:`ConfigurationError` naming the variable; the CLI prints it and
exits non-zero.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gatepass_server.domain.sealing import MASTER_KEY_BYTES, decode_master_key, encode_master_key
from gatepass_server.errors import ConfigurationError
from gatepass_server.storage.database import normalize_url

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["LOG_LEVELS", "Settings", "load_master_key"]

LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
MASTER_KEY_FILE: Final = "master.key"
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
DEFAULT_AUTH_FAILURE_LIMIT: Final = 60
DEFAULT_VERIFY_MISS_LIMIT: Final = 600
MAX_RATE_LIMIT: Final = 60_000


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server reads from its environment. See README for the table."""

    data_dir: Path = Path("gatepass-data")
    database_url: str = ""
    redis_url: str | None = None
    master_key: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    bootstrap_secret_key: str | None = field(default=None, repr=False)
    log_level: str = "info"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    auth_failure_limit: int = DEFAULT_AUTH_FAILURE_LIMIT
    verify_miss_limit: int = DEFAULT_VERIFY_MISS_LIMIT
    forwarded_allow_ips: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``GATEPASS_*`` from ``env`` (default: the process), then apply overrides.

        Overrides that are ``None`` are ignored, so CLI flags that were not given do not
        mask the environment.
        """
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(f"GATEPASS_{name}")
            return value if value not in {None, ""} else None

        values: dict[str, Any] = {}
        if (data_dir := get("DATA_DIR")) is not None:
            values["data_dir"] = Path(data_dir)
        for name in (
            "DATABASE_URL",
            "REDIS_URL",
            "MASTER_KEY",
            "HOST",
            "BOOTSTRAP_SECRET_KEY",
            "FORWARDED_ALLOW_IPS",
        ):
            if (value := get(name)) is not None:
                values[name.lower()] = value
        if (level := get("LOG_LEVEL")) is not None:
            values["log_level"] = level
        for name in (
            "PORT",
            "WORKERS",
            "MAX_BODY_BYTES",
            "AUTH_FAILURE_LIMIT",
            "VERIFY_MISS_LIMIT",
        ):
            if (raw := get(name)) is not None:
                values[name.lower()] = _integer(f"GATEPASS_{name}", raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    def validated(self) -> Settings:
        """Check every value; fill in the database URL from the data directory."""
        if not 1 <= self.port <= 65535:  # noqa: PLR2004 - the TCP port range
            raise ConfigurationError(f"GATEPASS_PORT must be 1..65535, got {self.port}")
        if not 1 <= self.workers <= 256:  # noqa: PLR2004 - a sane upper bound
            raise ConfigurationError(f"GATEPASS_WORKERS must be 1..256, got {self.workers}")
        if self.max_body_bytes < 1024:  # noqa: PLR2004 - smaller breaks legitimate bodies
            raise ConfigurationError("GATEPASS_MAX_BODY_BYTES must be at least 1024")
        self._check_rate_limits()
        level = self.log_level.lower()
        if level not in LOG_LEVELS:
            raise ConfigurationError(
                f"GATEPASS_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level}",
            )
        if self.master_key is not None:
            try:
                decode_master_key(self.master_key)
            except ValueError as exc:
                raise ConfigurationError(f"GATEPASS_MASTER_KEY: {exc}") from exc
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://"),
        ):
            raise ConfigurationError(
                "GATEPASS_REDIS_URL must start with redis://, rediss:// or unix://"
            )
        url = self.database_url or f"sqlite:///{(self.data_dir / 'gatepass.db').as_posix()}"
        return replace(self, log_level=level, database_url=normalize_url(url))

    def _check_rate_limits(self) -> None:
        for name, limit in (
            ("AUTH_FAILURE_LIMIT", self.auth_failure_limit),
            ("VERIFY_MISS_LIMIT", self.verify_miss_limit),
        ):
            if not 0 <= limit <= MAX_RATE_LIMIT:
                raise ConfigurationError(
                    f"GATEPASS_{name} must be 0 (off) .. {MAX_RATE_LIMIT} per minute, got {limit}"
                )
        if not self.forwarded_allow_ips.strip():
            raise ConfigurationError(
                "GATEPASS_FORWARDED_ALLOW_IPS must name at least one address (or *)"
            )


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw, 10)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def load_master_key(settings: Settings) -> bytes:
    """The AES-256-GCM master key: from the setting, or a 0600 key file in the data dir.

    The file is written whole under a temporary name and linked into place, so two
    processes starting at once agree on one key and neither reads a half-written file.
    """
    if settings.master_key is not None:
        return decode_master_key(settings.master_key)
    path = settings.data_dir / MASTER_KEY_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        temporary = settings.data_dir / f".{MASTER_KEY_FILE}.{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(encode_master_key(secrets.token_bytes(MASTER_KEY_BYTES)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won the race; use its key
        finally:
            temporary.unlink()
    try:
        return decode_master_key(path.read_text())
    except ValueError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
