"""Logs never carry a secret; metrics live in a registry per app."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import structlog

from gatepass_server.domain.keys import SecretKind, generate_secret, new_token_id
from gatepass_server.observability import (
    Metrics,
    configure_logging,
    flush_logs,
    logger,
    redact,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    """Put structlog's defaults back after a test that configured it."""
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("kind", list(SecretKind))
def test_redact_hides_every_secret_kind(kind: SecretKind) -> None:
    """Each secret shape is replaced, its prefix kept so the log stays readable."""
    secret = generate_secret(kind)
    redacted = redact(f"Authorization: Bearer {secret}")
    assert secret not in redacted
    assert f"{kind.value}[REDACTED]" in redacted


def test_redact_keeps_token_ids() -> None:
    """Token ids (``mt_`` + 32 hex) are handles, not secrets: they stay searchable."""
    token_id = new_token_id()
    assert redact(f"revoked {token_id}") == f"revoked {token_id}"


@pytest.mark.usefixtures("restore_structlog")
def test_log_lines_are_json_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A secret passed to the logger, in the event or a field, never reaches the output."""
    configure_logging("debug")  # after capsys replaced stderr: the logger writes there
    secret = generate_secret(SecretKind.MACHINE)
    logger.info(f"saw {secret}", header=f"Bearer {secret}")
    flush_logs()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert secret not in line
    assert record["header"] == "Bearer ak_[REDACTED]"
    assert record["level"] == "info"


@pytest.mark.usefixtures("restore_structlog")
def test_info_lines_wait_for_a_flush_and_warnings_take_them_along(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Info lines are written in batches; a warning writes them and itself at once."""
    configure_logging("debug")
    logger.info("first")
    logger.debug("second")
    assert capsys.readouterr().err == ""
    logger.warning("third")
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["first", "second", "third"]
    logger.info("fourth")
    flush_logs()
    assert json.loads(capsys.readouterr().err)["event"] == "fourth"


def test_metrics_registries_are_independent() -> None:
    """Two apps in one process do not share (or collide on) metric registrations."""
    first, second = Metrics(), Metrics()
    first.requests.labels("/healthz", "GET", "200").inc()
    assert (
        first.registry.get_sample_value(
            "gatepass_http_requests_total",
            {"route": "/healthz", "method": "GET", "status": "200"},
        )
        == 1
    )
    assert (
        second.registry.get_sample_value(
            "gatepass_http_requests_total",
            {"route": "/healthz", "method": "GET", "status": "200"},
        )
        is None
    )


def test_redact_hides_a_jwt() -> None:
    """A JWT M2M token is a bearer secret too: redacted wherever it appears (a traceback)."""
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtY2hfeCJ9." + "s1gnature-_" * 30
    redacted = redact(f"RuntimeError: a library choked on {jwt}.")
    assert redacted == "RuntimeError: a library choked on eyJ[REDACTED]."
