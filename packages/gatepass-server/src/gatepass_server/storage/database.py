"""Engines and transactions for SQLite and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL``: every acknowledged commit is on disk
before the response leaves (SECURITY.md principle 8), and readers never block the writer.
Write transactions start with ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout
instead of failing with ``database is locked`` halfway through.

On PostgreSQL every transaction has a deadline, counted on this side of the wire from the
moment a pooled connection is free for it (waiting for one is bounded apart, by
:data:`POOL_TIMEOUT_SECONDS`): a server that hangs (stopped, partitioned, a lock held
forever) costs a request at most :data:`READ_DEADLINE_SECONDS` (reads: the verify hot path)
or :data:`WRITE_DEADLINE_SECONDS` (writes), then it answers 503. A transaction past its
deadline is rolled back by closing its connection: a rollback would wait on the same silent
server. A session that dies under a statement is a 503 too, and its connection leaves the
pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gatepass_server.errors import ConfigurationError, ServiceUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from sqlalchemy.engine import ExceptionContext

__all__ = ["CHANGED", "Database", "normalize_url"]

SQLITE_BUSY_TIMEOUT_MS: Final = 5000
READ_DEADLINE_SECONDS: Final = 2.0
"""PostgreSQL: how long a read transaction may take, connecting included, before a 503.

NOTE: an auth server's answer is wanted in milliseconds; a verify that waits 30 s on a hung
database holds its caller's request that long. A healthy server answers these indexed reads
in well under this; a hung one gets a 503 + ``Retry-After`` after it."""
WRITE_DEADLINE_SECONDS: Final = 5.0
"""PostgreSQL: the same for a write transaction (as long as SQLite's busy timeout).

NOTE: safe for writes: past the deadline before the commit the transaction is rolled back
(its connection is closed, so the server aborts it); past it during the commit the client
gets a 503 for a write that may have committed, which a retry of any write here tolerates
(revoke and delete are idempotent, a second mint is a second token). Never the reverse: no
success is acknowledged that did not commit."""
CONNECT_TIMEOUT_SECONDS: Final = 2.0
POOL_TIMEOUT_SECONDS: Final = 10.0
"""PostgreSQL: how long a transaction waits for a free connection before a 503.

Not part of the deadlines above, which count the server's time only: a burst of requests
queueing for the pool is load, not a hung server. While the server hangs, the queue drains
at one deadline per connection."""
COMMAND_TIMEOUT_SECONDS: Final = 30.0
"""A backstop for statements outside a deadline (migrations, ``db check``)."""
_WRITE: Final = "gatepass_write"
CHANGED: Final = "gatepass_changed"
"""Set in a connection's ``info`` by a transaction that appended to the change log."""

Dialect = Literal["sqlite", "postgresql"]


def normalize_url(url: str) -> str:
    """Map ``sqlite:///…`` and ``postgresql://…`` onto the async drivers we ship."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"GATEPASS_DATABASE_URL is not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ConfigurationError(
            f"GATEPASS_DATABASE_URL must be sqlite:/// or postgresql://, not {backend}://",
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # NOTE: the driver's own transaction handling is disabled so that we emit BEGIN
    # ourselves (SQLAlchemy's documented recipe for pysqlite/aiosqlite).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """One engine plus the transaction helpers every store uses."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.after_change: Callable[[], Awaitable[None]] | None = None
        self.dialect: Dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        if self.dialect == "sqlite":
            self.engine: AsyncEngine = create_async_engine(self.url)
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_on_begin)
        else:
            self.engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                pool_timeout=POOL_TIMEOUT_SECONDS,
                connect_args={
                    "timeout": CONNECT_TIMEOUT_SECONDS,
                    "command_timeout": COMMAND_TIMEOUT_SECONDS,
                },
            )
            event.listen(self.engine.sync_engine, "handle_error", _postgres_on_error)
        # NOTE: one slot per connection the pool can hold: a transaction takes a slot before
        # its deadline starts, so the pool never makes it wait inside the deadline.
        self._slots = asyncio.Semaphore(2 * pool_size) if self.dialect == "postgresql" else None

    @contextlib.asynccontextmanager
    async def read(
        self, *, deadline: float | None = READ_DEADLINE_SECONDS
    ) -> AsyncIterator[AsyncConnection]:
        """A read transaction, abandoned with a 503 after ``deadline`` seconds (PostgreSQL).

        ``deadline=None`` is for work that may rightly take long (migrations, schema checks).
        """
        with _unavailable_on_failure():
            async with (
                self._slot(),
                asyncio.timeout(self._deadline(deadline)),
                self.engine.connect() as conn,
                _dropped_if_abandoned(conn, self.dialect),
                conn.begin(),
            ):
                yield conn

    @contextlib.asynccontextmanager
    async def write(
        self, *, deadline: float | None = WRITE_DEADLINE_SECONDS
    ) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block exits without an exception.

        If the transaction appended to the change log, :attr:`after_change` runs after the
        commit and before this returns, so the writer's own node has applied the change
        before the write is acknowledged. ``deadline`` as for :meth:`read`.
        """
        with _unavailable_on_failure():
            async with (
                self._slot(),
                asyncio.timeout(self._deadline(deadline)),
                self.engine.connect() as plain,
            ):
                conn = await plain.execution_options(**{_WRITE: True})
                conn.info.pop(CHANGED, None)
                async with _dropped_if_abandoned(conn, self.dialect), conn.begin():
                    yield conn
                # NOTE: read only after a commit: on a failed transaction the connection may
                # be invalidated, and touching ``info`` would check a new one out of the
                # pool, whose error would hide the first. The next write clears it anyway.
                changed = conn.info.pop(CHANGED, False)
        if changed and self.after_change is not None:
            await self.after_change()

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """Wait (at most :data:`POOL_TIMEOUT_SECONDS`) until a pooled connection is free."""
        if self._slots is None:
            yield
            return
        async with asyncio.timeout(POOL_TIMEOUT_SECONDS):
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def _deadline(self, seconds: float | None) -> float | None:
        # NOTE: SQLite is a local file: its only wait is the busy timeout, which already
        # bounds it, and aiosqlite cannot stop a statement that runs in its thread.
        return seconds if self.dialect == "postgresql" else None

    async def ping(self) -> None:
        """Raise :class:`ServiceUnavailable` unless storage answers."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


@contextlib.asynccontextmanager
async def _dropped_if_abandoned(conn: AsyncConnection, dialect: Dialect) -> AsyncIterator[None]:
    """Close the connection, rather than roll back over the wire, if the block is cancelled.

    A deadline (or a caller's own timeout) cancels a transaction that is most likely waiting
    on a silent server: a ``ROLLBACK`` would wait on it too. Closing the socket makes the
    server abort the transaction once it runs again. (SQLite, a local file, rolls back.)
    """
    try:
        yield
    except asyncio.CancelledError:
        if dialect == "postgresql":
            await _drop(conn)
        raise


async def _drop(conn: AsyncConnection) -> None:
    """Close the driver connection at once (no round trip), and take it out of the pool."""
    with contextlib.suppress(Exception):
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        terminate = getattr(driver, "terminate", None)
        if callable(terminate):
            terminate()
    with contextlib.suppress(Exception):
        await conn.invalidate()


# PostgreSQL conditions of the server rather than of the statement: connection exceptions
# (class 08), insufficient resources (53, e.g. too many connections), operator intervention
# (57: shutdown, cancel, "cannot connect now") and system errors (58).
_UNAVAILABLE_SQLSTATE_CLASSES: Final = frozenset({"08", "53", "57", "58"})
# And ones a retry can clear: serialization failure, deadlock, lock timeout, and a database
# that is not accepting connections (55000 when connecting).
_TRANSIENT_SQLSTATES: Final = frozenset({"40001", "40P01", "55P03", "55000"})


# Driver errors that mean "the connection is gone" without a SQLSTATE of their own.
_LOST_CONNECTION_ERRORS: Final = frozenset({"ConnectionDoesNotExistError"})
_CHAIN_LIMIT: Final = 8


def _unavailable(exc: DBAPIError) -> bool:
    """Whether ``exc``, or what caused it, is the server's condition rather than ours."""
    return exc.connection_invalidated or _server_condition(exc.orig, transient=True)


def _server_condition(exc: BaseException | None, *, transient: bool) -> bool:
    """Whether the chain of causes from ``exc`` shows a lost or refusing server.

    NOTE: SQLAlchemy's asyncpg adapter reports a session killed under a statement
    (``pg_terminate_backend``, a crash) as a bare ``Error`` without a SQLSTATE: the reason
    (57P01, a reset socket) is further down the chain of causes, so the whole chain is
    read. ``transient`` also counts conditions a retry clears (deadlock, serialization).
    """
    cause = exc
    for _ in range(_CHAIN_LIMIT):
        if cause is None:
            return False
        code = _sqlstate(cause)
        if code is not None and (
            code[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
            or (transient and code in _TRANSIENT_SQLSTATES)
        ):
            return True
        if isinstance(cause, (OSError, TimeoutError)) or (
            type(cause).__name__ in _LOST_CONNECTION_ERRORS
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _postgres_on_error(context: ExceptionContext) -> None:
    """Mark a lost session as a disconnect, so its connection leaves the pool.

    NOTE: without this, a connection whose session was terminated under a statement goes
    back to the pool in a state asyncpg cannot use again ("another operation is in
    progress"), and the next request on it fails with an error that is not ours to 503.
    """
    if not context.is_disconnect and _server_condition(context.original_exception, transient=False):
        context.is_disconnect = True


def _sqlstate(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else None


@contextlib.contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """Turn "storage cannot be reached or is full or locked" into a 503.

    Integrity errors are not caught here: they are logic, and the stores handle them.
    """
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise ServiceUnavailable(headers={"Retry-After": "1"}) from exc
    except DBAPIError as exc:
        if _unavailable(exc):
            raise ServiceUnavailable(headers={"Retry-After": "1"}) from exc
        raise
    except (OSError, TimeoutError) as exc:
        raise ServiceUnavailable(headers={"Retry-After": "1"}) from exc
