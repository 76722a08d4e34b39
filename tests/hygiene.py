"""Secret hygiene for the whole suite (SECURITY.md principle 3), as a pytest plugin.

Every test runs with the server's own log processors at DEBUG (structlog, rendered to
JSON lines and redacted exactly as in production) and every stdlib logger at DEBUG
(uvicorn, asyncpg, httpx, httpcore…; SQL echo only with ``GATEPASS_TEST_SQL_ECHO=1``, see
:func:`_configure_capture`), captured in memory. The plugin records every secret the test
saw:

- each ``secret_key``, ``secret`` or ``token`` string of a JSON response body, and each
  credential of an ``Authorization`` header, from every request any ``httpx`` client
  sends (the ASGI, WSGI and HTTP transports are wrapped, so the SDKs are covered too);
- each secret the services mint or show in process (instance, machine and token
  creates, key rotations, ``GET …/secret_key``), whichever runtime called them;
- the master key of every runtime built.

At teardown the test fails if one of them (its random body is enough: a fragment
counts) appears in a captured log line, or in a response other than the one route and
field CONTRACT.md §2 lets carry it (:data:`ALLOWED`). Servers run as processes
(``helpers.LiveServer``) log at DEBUG and have their log file checked at stop against
every secret the session saw. :class:`Hygiene` is the checker; tests that prove it
works call it directly.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import structlog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

__all__ = [
    "ALLOWED",
    "HYGIENE",
    "Hygiene",
    "check_server_log",
    "needle_of",
    "secret_hygiene",
]

NEEDLE_LENGTH: Final = 32
"""How much of a secret is searched for: the random part of a key, a JWT's signature."""

_PREFIXES: Final = ("sk_test_", "sk_live_", "ak_", "mt_")
_TOKEN_ID: Final = re.compile(r"mt_[0-9a-f]{32}")
_JWT: Final = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.([A-Za-z0-9_-]{32,})")
_RUN: Final = re.compile(r"[A-Za-z0-9_-]{%d,}" % NEEDLE_LENGTH)  # noqa: UP031 - a regex
_MIN_DISTINCT: Final = 10
"""A needle with fewer distinct characters is a made-up test string, not a secret."""
SECRET_FIELDS: Final = frozenset({"secret_key", "secret", "token"})


@dataclass(frozen=True, slots=True)
class Allowed:
    """A response that may carry a secret: this method and route, this status, this field."""

    method: str
    path: re.Pattern[str]
    status: int
    field: str


# NOTE: CONTRACT.md §2/§3 and SECURITY.md principle 3: plaintext only in the create
# responses and in GET …/secret_key and its rotation, each in its one top-level field.
ALLOWED: Final = (
    Allowed("POST", re.compile(r"(?:/v1)?/machines"), 200, "secret_key"),
    Allowed("GET", re.compile(r"(?:/v1)?/machines/mch_[0-9A-Za-z]+/secret_key"), 200, "secret"),
    Allowed(
        "POST", re.compile(r"(?:/v1)?/machines/mch_[0-9A-Za-z]+/secret_key/rotate"), 200, "secret"
    ),
    Allowed("POST", re.compile(r"(?:/v1)?/m2m_tokens"), 201, "token"),
)

_MACHINE_CREATE: Final = ALLOWED[0].path
_SECRET_ROUTE: Final = re.compile(r"(?:/v1)?/machines/(mch_[0-9A-Za-z]+)/secret_key(?:/rotate)?")
_BANNER: Final = re.compile(r"(Its secret key is shown only this once; store it now:\s+)(\S+)")
"""``serve`` prints a generated bootstrap key once, to the operator, by design."""


def needle_of(value: str) -> str | None:
    """The part of ``value`` whose presence anywhere means it leaked; ``None``: no secret.

    For a prefixed key or opaque token that is its random body (so the body without its
    prefix is caught too); for a JWT, the start of its signature; token ids (``mt_`` +
    32 hex) are handles, not secrets.
    """
    needle: str | None = None
    jwt = _JWT.fullmatch(value)
    if jwt is not None:
        needle = jwt.group(1)[:NEEDLE_LENGTH]
    elif _TOKEN_ID.fullmatch(value) is None:
        for prefix in _PREFIXES:
            if value.startswith(prefix):
                body = value.removeprefix(prefix)
                if len(body) >= NEEDLE_LENGTH and _RUN.fullmatch(body[:NEEDLE_LENGTH]):
                    needle = body[:NEEDLE_LENGTH]
                break
        else:
            if len(value) >= NEEDLE_LENGTH and _RUN.fullmatch(value[:NEEDLE_LENGTH]):
                needle = value[:NEEDLE_LENGTH]
    if needle is None or len(set(needle)) < _MIN_DISTINCT:
        return None
    return needle


def needles_in(text: str, needles: set[str] | frozenset[str]) -> set[str]:
    """Which ``needles`` occur in ``text``: one regex pass, then window look-ups."""
    found: set[str] = set()
    if not needles:
        return found
    for run in _RUN.findall(text):
        for start in range(len(run) - NEEDLE_LENGTH + 1):
            window = run[start : start + NEEDLE_LENGTH]
            if window in needles:
                found.add(window)
    return found


_CONTEXT: Final = 300
"""Characters of a line shown either side of the first masked secret."""


def mask(text: str, needles: Iterable[str]) -> str:
    """``text`` around its first needle, each needle shown by its first four characters."""
    needles = list(needles)
    start = min((i for n in needles if (i := text.find(n)) >= 0), default=0)
    head = ""
    if start > _CONTEXT:  # keep the line's start (level and logger name) in view
        head, text = text[:60] + " … ", text[start - _CONTEXT // 2 :]
    for needle in needles:
        text = text.replace(needle, f"<secret {needle[:4]}…>")
    return head + (text if len(text) <= 2 * _CONTEXT else text[: 2 * _CONTEXT] + "…")


@dataclass(slots=True)
class Seen:
    """One response an ``httpx`` client received."""

    method: str
    url: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Hygiene:
    """What one test saw: secrets, log lines, responses; and the check of them."""

    enabled: bool = False
    active: bool = False
    needles: dict[str, str] = field(default_factory=dict)
    """Needle → where it was first seen."""
    session_needles: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)
    responses: list[Seen] = field(default_factory=list)
    test_urls: list[str] = field(default_factory=list)
    """Request URLs the test itself sent (not an SDK) that hold a secret."""
    problems: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    """Machine key needle → the machine it belongs to."""
    formatter: logging.Formatter = field(
        default_factory=lambda: logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> None:
        """Start a test with nothing seen."""
        self.needles = {}
        self.lines = []
        self.records = []
        self.responses = []
        self.test_urls = []
        self.problems = []
        self.owners = {}
        self.active = True

    def saw_secret(self, value: object, where: str) -> None:
        """Remember ``value`` if it is a secret."""
        if not isinstance(value, str):
            return
        needle = needle_of(value)
        if needle is not None and needle not in self.needles:
            with self._lock:
                self.needles.setdefault(needle, where)
                self.session_needles.add(needle)

    def saw_request(self, request: httpx.Request) -> None:
        """Remember the credentials of ``request``; note a secret in its URL."""
        for value in request.headers.get_list("authorization"):
            for part in value.split():
                self.saw_secret(part, "an Authorization header")
        url = str(request.url)
        found = needles_in(url, frozenset(self.needles))
        if found:
            if _sent_by_an_sdk():
                self.problems.append(f"an SDK put a secret in a URL: {mask(url, found)}")
            else:
                self.test_urls.append(url)

    def saw_response(self, request: httpx.Request, response: httpx.Response, body: bytes) -> None:
        """Remember ``response`` and every secret field of its JSON body."""
        seen = Seen(
            request.method,
            str(request.url),
            request.url.path,
            response.status_code,
            list(response.headers.multi_items()),
            body,
        )
        self.responses.append(seen)
        if b'"secret' in body or b'"token"' in body:
            parsed = _json_or_none(body)
            for value in _secret_fields(parsed):
                self.saw_secret(value, f"{seen.method} {seen.path} -> {seen.status}")
            self._check_owner(seen, parsed)

    def _check_owner(self, seen: Seen, parsed: object) -> None:
        """A machine key is shown, via ``GET …/secret_key``, only for its own machine."""
        if seen.status != 200 or not isinstance(parsed, dict):
            return
        if _MACHINE_CREATE.fullmatch(seen.path) and seen.method == "POST":
            machine_id, secret = parsed.get("id"), parsed.get("secret_key")
        elif (shown := _SECRET_ROUTE.fullmatch(seen.path)) is not None:
            machine_id, secret = shown.group(1), parsed.get("secret")
        else:
            return
        needle = needle_of(secret) if isinstance(secret, str) else None
        if needle is None or not isinstance(machine_id, str):
            return
        owner = self.owners.setdefault(needle, machine_id)
        if owner != machine_id:
            self.problems.append(
                f"the key of {owner} was shown for {machine_id}: {seen.method} {seen.url}"
            )

    def saw_line(self, line: str) -> None:
        """Remember one rendered log line."""
        self.lines.append(line)

    def end(self) -> list[str]:
        """Stop the test; every problem found, secrets masked."""
        self.active = False
        return self.take_problems()

    def take_problems(self) -> list[str]:
        """The problems so far, forgiven: for the tests that leak on purpose to prove this."""
        problems = list(self.problems)
        needles = frozenset(self.needles)
        if needles:
            problems += self._log_problems(needles)
            problems += self._response_problems(needles)
        self.lines, self.records, self.responses, self.problems = [], [], [], []
        return problems

    def _log_problems(self, needles: frozenset[str]) -> list[str]:
        lines = [*self.lines, *(self._format(record) for record in self.records)]
        problems = []
        for line in lines:
            found = needles_in(line, needles)
            if found and not self._exempt(line, found):
                problems.append(f"a secret in a log line: {mask(line, found)}")
        return problems

    def _exempt(self, line: str, found: set[str]) -> bool:
        # NOTE: the test client's own "HTTP Request: <url>" line (httpx, INFO) of a URL the
        # test itself built with a key in it (the query-string attacks): the client
        # logging what it was told to send, not the server or an SDK leaking.
        if not line.startswith("INFO httpx HTTP Request: "):
            return False
        return all(any(needle in url and url in line for url in self.test_urls) for needle in found)

    def _format(self, record: logging.LogRecord) -> str:
        try:
            return self.formatter.format(record)
        except Exception as exc:  # noqa: BLE001 - a library's bad format args: still report
            return f"{record.levelname} {record.name} {record.msg!r} {record.args!r} ({exc})"

    def _response_problems(self, needles: frozenset[str]) -> list[str]:
        problems = []
        for seen in self.responses:
            text = _scannable(seen)
            found = needles_in(text, needles)
            if found:
                where = f"{seen.method} {seen.url} -> {seen.status}"
                problems.append(f"a secret in the response to {where}: {mask(text, found)}")
        return problems


def _scannable(seen: Seen) -> str:
    """Headers and body of ``seen``, without the one field :data:`ALLOWED` lets it carry."""
    headers = "\n".join(f"{name}: {value}" for name, value in seen.headers)
    body = seen.body.decode("utf-8", "replace")
    for allowed in ALLOWED:
        if (
            allowed.method == seen.method
            and allowed.status == seen.status
            and allowed.path.fullmatch(seen.path)
        ):
            parsed = _json_or_none(seen.body)
            if isinstance(parsed, dict) and isinstance(parsed.get(allowed.field), str):
                body = json.dumps({k: v for k, v in parsed.items() if k != allowed.field})
            break
    return f"{headers}\n{body}"


def _json_or_none(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _secret_fields(value: object) -> Iterator[object]:
    """Every value under a :data:`SECRET_FIELDS` key, at any depth."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in SECRET_FIELDS:
                yield inner
            yield from _secret_fields(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _secret_fields(inner)


_SDK_MODULES: Final = ("gatepass.", "clerk_backend_api")


def _sent_by_an_sdk() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_SDK_MODULES):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


HYGIENE: Final = Hygiene()
"""The one checker of this process."""


def check_server_log(log: str, name: str) -> None:
    """Check a server process's whole log against every secret this session saw.

    The problems go to the running test; outside one (a session fixture's teardown)
    they raise at once.
    """
    if not HYGIENE.enabled:
        return
    log = _BANNER.sub(r"\1<the generated bootstrap key>", log, count=1)
    needles = frozenset(HYGIENE.session_needles)
    found = needles_in(log, needles)
    if not found:
        return
    problems = [
        f"a secret in the log of {name}: {mask(line, found)}"
        for line in log.splitlines()
        if needles_in(line, found)
    ]
    if HYGIENE.active:
        HYGIENE.problems += problems
    else:
        pytest.fail("\n".join(problems), pytrace=False)


# --- capture -------------------------------------------------------------------------


class _CapturedLines:
    """A structlog logger: each rendered line goes to the checker, none is written."""

    def msg(self, line: str) -> None:
        HYGIENE.saw_line(line)

    debug = info = log = warn = warning = err = error = critical = exception = fatal = msg


_CAPTURED: Final = _CapturedLines()


class _CaptureHandler(logging.Handler):
    """Keeps every stdlib record; formatted at teardown only when a secret was seen."""

    def emit(self, record: logging.LogRecord) -> None:
        HYGIENE.records.append(record)


_structlog_config: dict[str, Any] = {}


def _configure_capture() -> None:
    """The server's own processors at DEBUG, rendering into memory."""
    from gatepass_server.observability import configure_logging  # noqa: PLC0415

    root = logging.getLogger()
    root.addHandler(_CaptureHandler())  # first: configure_logging's basicConfig is then a no-op
    configure_logging("debug")
    root.setLevel(logging.DEBUG)
    # NOTE: SQLAlchemy keeps its loggers at WARNING whatever the root level, so no log
    # level of the server turns SQL echo on. Echo with bound parameters (INFO) and
    # aiosqlite's DEBUG lines (each statement and its parameters again) were most of the
    # capture's cost, so they are off here unless GATEPASS_TEST_SQL_ECHO=1; the SQL echo
    # test of test_security_hygiene.py drives every secret-bearing route with echo on, and
    # servers run as processes (``LiveServer``) write aiosqlite's lines, which are checked.
    if os.environ.get("GATEPASS_TEST_SQL_ECHO") == "1":
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    else:
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
    _structlog_config.update(
        processors=structlog.get_config()["processors"],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=lambda *_args: _CAPTURED,
        cache_logger_on_first_use=False,
    )


# --- hooks into httpx and the services ---------------------------------------------


class _AsyncTee(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, done: Callable[[bytes], None]) -> None:
        self._inner, self._done, self._chunks = inner, done, list[bytes]()
        self._finished = False

    async def __aiter__(self) -> Any:
        async for chunk in self._inner:
            self._chunks.append(chunk)
            yield chunk
        self._finish()

    async def aclose(self) -> None:
        await self._inner.aclose()
        self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._done(b"".join(self._chunks))


class _SyncTee(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, done: Callable[[bytes], None]) -> None:
        self._inner, self._done, self._chunks = inner, done, list[bytes]()
        self._finished = False

    def __iter__(self) -> Any:
        for chunk in self._inner:
            self._chunks.append(chunk)
            yield chunk
        self._finish()

    def close(self) -> None:
        self._inner.close()
        self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._done(b"".join(self._chunks))


def _watch_async_transport(cls: type[Any]) -> None:
    original = cls.handle_async_request

    @functools.wraps(original)
    async def handle(self: Any, request: httpx.Request) -> httpx.Response:
        HYGIENE.saw_request(request)
        response: httpx.Response = await original(self, request)
        inner = response.stream
        assert isinstance(inner, httpx.AsyncByteStream)
        response.stream = _AsyncTee(
            inner, functools.partial(HYGIENE.saw_response, request, response)
        )
        return response

    cls.handle_async_request = handle


def _watch_sync_transport(cls: type[Any]) -> None:
    original = cls.handle_request

    @functools.wraps(original)
    def handle(self: Any, request: httpx.Request) -> httpx.Response:
        HYGIENE.saw_request(request)
        response: httpx.Response = original(self, request)
        inner = response.stream
        assert isinstance(inner, httpx.SyncByteStream)
        response.stream = _SyncTee(
            inner, functools.partial(HYGIENE.saw_response, request, response)
        )
        return response

    cls.handle_request = handle


def _watch_service(cls: type[Any], name: str, pick: Callable[[Any], Iterable[object]]) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(cls, name)

    @functools.wraps(original)
    async def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        for value in pick(result):
            HYGIENE.saw_secret(value, f"{cls.__name__}.{name}")
        return result

    setattr(cls, name, watched)


def _install_hooks() -> None:
    from gatepass_server.runtime import Runtime  # noqa: PLC0415
    from gatepass_server.services.instances import InstanceService  # noqa: PLC0415
    from gatepass_server.services.machines import MachineService  # noqa: PLC0415
    from gatepass_server.services.tokens import TokenService  # noqa: PLC0415

    _watch_async_transport(httpx.ASGITransport)
    _watch_async_transport(httpx.AsyncHTTPTransport)
    _watch_sync_transport(httpx.HTTPTransport)
    _watch_sync_transport(httpx.WSGITransport)
    _watch_service(InstanceService, "create", lambda r: [r.secret_key])
    _watch_service(InstanceService, "rotate_key", lambda r: [r])
    _watch_service(
        InstanceService, "bootstrap", lambda r: [getattr(r, "generated_secret_key", None)]
    )
    _watch_service(MachineService, "create", lambda r: [r.secret_key])
    _watch_service(MachineService, "secret_key", lambda r: [r])
    _watch_service(MachineService, "rotate_secret_key", lambda r: [r])
    _watch_service(TokenService, "create", lambda r: [r.secret])

    original_build = Runtime.build.__func__  # type: ignore[attr-defined]

    def build(cls: type[Runtime], settings: Any, **kwargs: Any) -> Runtime:
        HYGIENE.saw_secret(settings.master_key, "the master key")
        HYGIENE.saw_secret(settings.bootstrap_secret_key, "the bootstrap key")
        return original_build(cls, settings, **kwargs)  # type: ignore[no-any-return]

    Runtime.build = classmethod(build)  # type: ignore[method-assign,assignment]


# --- the plugin ----------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Capture logs at DEBUG and watch every client and service, for the whole session."""
    # NOTE: the root logger now passes DEBUG records; pytest's own capture (caplog and the
    # "Captured log" report) keeps its default threshold, so tests see what they saw before
    # and pytest does not format every DEBUG record a second time.
    if config.pluginmanager.has_plugin("logging") and (
        config.getoption("log_level") is None and not config.getini("log_level")
    ):
        config.option.log_level = "WARNING"
    _configure_capture()
    _install_hooks()
    HYGIENE.enabled = True


@pytest.fixture(autouse=True)
def secret_hygiene() -> Iterator[Hygiene]:
    """Fail the test if a secret it saw reached a log line or a response it may not be in."""
    structlog.configure(**_structlog_config)  # again: a test may have reconfigured it
    HYGIENE.begin()
    yield HYGIENE
    problems = HYGIENE.end()
    if problems:
        pytest.fail(
            "secret hygiene (SECURITY.md principle 3):\n" + "\n".join(problems), pytrace=False
        )
