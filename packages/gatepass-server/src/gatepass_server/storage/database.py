"""Engines and transactions for SQLite and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL``: every acknowledged commit is on disk
before the response leaves (SECURITY.md principle 8), and readers never block the writer.
Write transactions start with ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout
instead of failing with ``database is locked`` halfway through.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gatepass_server.errors import ConfigurationError, ServiceUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

__all__ = ["CHANGED", "Database", "normalize_url"]

SQLITE_BUSY_TIMEOUT_MS: Final = 5000
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
                pool_timeout=5,
                connect_args={"timeout": 5, "command_timeout": 30},
            )

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction."""
        with _unavailable_on_failure():
            async with self.engine.connect() as conn, conn.begin():
                yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block exits without an exception.

        If the transaction appended to the change log, :attr:`after_change` runs after the
        commit and before this returns, so the writer's own node has applied the change
        before the write is acknowledged.
        """
        with _unavailable_on_failure():
            async with self.engine.connect() as plain:
                conn = await plain.execution_options(**{_WRITE: True})
                conn.info.pop(CHANGED, None)
                try:
                    async with conn.begin():
                        yield conn
                finally:
                    changed = conn.info.pop(CHANGED, False)
        if changed and self.after_change is not None:
            await self.after_change()

    async def ping(self) -> None:
        """Raise :class:`ServiceUnavailable` unless storage answers."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


# PostgreSQL conditions of the server rather than of the statement: connection exceptions
# (class 08), insufficient resources (53, e.g. too many connections), operator intervention
# (57: shutdown, cancel, "cannot connect now") and system errors (58).
_UNAVAILABLE_SQLSTATE_CLASSES: Final = frozenset({"08", "53", "57", "58"})
# And ones a retry can clear: serialization failure, deadlock, lock timeout, and a database
# that is not accepting connections (55000 when connecting).
_TRANSIENT_SQLSTATES: Final = frozenset({"40001", "40P01", "55P03", "55000"})


def _unavailable(exc: DBAPIError) -> bool:
    code = _sqlstate(exc)
    return exc.connection_invalidated or (
        code is not None
        and (code in _TRANSIENT_SQLSTATES or code[:2] in _UNAVAILABLE_SQLSTATE_CLASSES)
    )


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
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
