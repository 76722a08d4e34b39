"""Structured JSON logs with secret redaction, and Prometheus metrics."""

from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING, Any, Final

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["Metrics", "configure_logging", "logger", "redact"]

# Secret shapes of CONTRACT.md §1: prefix + 32 random base62 + 6 checksum characters.
# Token ids (mt_ + 32 hex) are handles, not secrets, and stay readable.
_SECRET_RE: Final = re.compile(r"\b(sk_test_|sk_live_|ak_|mt_)[0-9A-Za-z]{38}(?![0-9A-Za-z])")
_REDACTED: Final = r"\1[REDACTED]"


def redact(text: str) -> str:
    """Replace anything shaped like a secret key or opaque token."""
    return _SECRET_RE.sub(_REDACTED, text)


def _redact_values(
    _logger: Any,
    _name: str,
    event: MutableMapping[str, Any],
) -> MutableMapping[str, Any]:
    """Structlog processor: no secret-shaped string survives into a log line."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr; the same processors for our logs and the libraries'."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_values,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Library loggers (uvicorn errors, alembic) go to stderr at the same level; uvicorn's
    # own access log is off because it prints query strings.
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )


logger: Final = structlog.get_logger("gatepass")


class Metrics:
    """The server's Prometheus metrics, in a registry of their own per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gatepass_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gatepass_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
