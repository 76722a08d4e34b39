"""Structured JSON logs with secret redaction, and Prometheus metrics."""

from __future__ import annotations

import atexit
import logging
import re
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["LOG_FLUSH_SECONDS", "Metrics", "configure_logging", "flush_logs", "logger", "redact"]

# Secret shapes of CONTRACT.md §1: prefix + 32 random base62 + 6 checksum characters.
# Token ids (mt_ + 32 hex) are handles, not secrets, and stay readable.
_SECRET_RE: Final = re.compile(r"\b(sk_test_|sk_live_|ak_|mt_)[0-9A-Za-z]{38}(?![0-9A-Za-z])")
_REDACTED: Final = r"\1[REDACTED]"
# A compact JWS (a JWT M2M token is a bearer secret too): its header is base64url of
# '{"', so it starts with "eyJ".
_JWT_RE: Final = re.compile(r"eyJ[0-9A-Za-z_-]*\.[0-9A-Za-z_-]+\.[0-9A-Za-z_-]+")
_REDACTED_JWT: Final = "eyJ[REDACTED]"


def redact(text: str) -> str:
    """Replace anything shaped like a secret key, an opaque token or a JWT."""
    # NOTE: a JWT in an exception message (a library's, say) reached the traceback of
    # "unhandled_error" in full; the secret shapes below did not cover it.
    if "eyJ" in text:
        text = _JWT_RE.sub(_REDACTED_JWT, text)
    # NOTE: every prefix ends in "k_" or "t_"; two substring scans are far cheaper than
    # the regex on the strings of an access-log line, which rarely hold either.
    if "k_" not in text and "t_" not in text:
        return text
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


_json_encoder: Final = msgspec.json.Encoder(enc_hook=repr)


def _json_line(event: MutableMapping[str, Any], **_options: Any) -> str:
    # NOTE: msgspec, not json.dumps: this runs once per request for the access log.
    return _json_encoder.encode(event).decode()


LOG_FLUSH_SECONDS: Final = 0.1
"""How long an info or debug line may wait in memory before it is written."""


class _BufferedLines:
    """A structlog logger: info and debug lines are written in batches, others at once.

    One write per request (the access log) costs more than the rest of a cached verify;
    batched, it costs almost nothing. :func:`flush_logs` runs every
    :data:`LOG_FLUSH_SECONDS` while the app runs, and at exit; a warning or an error
    writes itself and everything before it at once.
    """

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._lines: list[str] = []

    def msg(self, line: str) -> None:
        """Queue one line."""
        self._lines.append(line + "\n")

    debug = info = log = msg

    def flush(self) -> None:
        """Write the queued lines."""
        lines, self._lines = self._lines, []
        if lines:
            self._file.write("".join(lines))
            self._file.flush()

    def urgent(self, line: str) -> None:
        """Write the queued lines and this one now."""
        self.msg(line)
        self.flush()

    warn = warning = err = error = critical = exception = fatal = urgent


_sink = _BufferedLines(sys.stderr)


def flush_logs() -> None:
    """Write every queued log line."""
    _sink.flush()


atexit.register(flush_logs)


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
            structlog.processors.JSONRenderer(serializer=_json_line),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_sink_for_stderr,
        cache_logger_on_first_use=False,
    )
    # Library loggers (uvicorn errors, alembic) go to stderr at the same level; uvicorn's
    # own access log is off because it prints query strings.
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )


def _sink_for_stderr(*_args: Any) -> _BufferedLines:
    global _sink  # noqa: PLW0603 - one sink per process, rebound if stderr was replaced
    if _sink._file is not sys.stderr:  # noqa: SLF001 - this module's own object
        _sink.flush()
        _sink = _BufferedLines(sys.stderr)
    return _sink


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
        # NOTE: labels() takes a lock and builds a key on every call; once per request
        # is measurable on the verify hot path, so each child is looked up once.
        self._counted: dict[tuple[str, str, int], Counter] = {}
        self._timed: dict[str, Histogram] = {}

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request and observe its latency."""
        counter = self._counted.get((route, method, status))
        if counter is None:
            counter = self.requests.labels(route, method, str(status))
            self._counted[route, method, status] = counter
        counter.inc()
        histogram = self._timed.get(route)
        if histogram is None:
            histogram = self._timed[route] = self.latency.labels(route)
        histogram.observe(seconds)
