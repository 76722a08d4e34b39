"""What a benchmark needs in a server before it measures: machines, keys and tokens.

:func:`seed_machines` goes through the API, as a deployment would. :func:`bulk_tokens`
writes token rows straight into the database, a million in seconds rather than the hours
a million mint requests would take; the rows are exactly what a mint stores, so the
running server verifies them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import asyncpg
from sqlalchemy.engine import make_url

from bench.servers import postgres_dsn, run_sync
from gatepass import Gatepass
from gatepass_server.domain.keys import (
    BASE62,
    SECRET_BODY_LENGTH,
    SecretKind,
    checksum,
    digest,
    new_token_id,
)
from gatepass_server.domain.tokens import TokenFormat, canonical_json

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["Seeded", "bulk_tokens", "seed_machines", "token_secrets"]

TOKEN_SECONDS: Final = 3600.0
"""Lifetime of the tokens :func:`seed_machines` mints: longer than any benchmark run."""

BULK_LIFETIME_MS: Final = 10 * 365 * 24 * 3600 * 1000
DEFAULT_CHUNK_ROWS: Final = 50_000
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
SQLITE_CACHE_KIB: Final = 256 * 1024
"""Page cache of the inserting connection: random keys touch index pages all over the file."""

_COLUMNS: Final = (
    "id",
    "instance_id",
    "subject",
    "token_format",
    "digest",
    "scopes",
    "expiration",
    "created_at",
    "updated_at",
)
_SQLITE_INSERT: Final = (
    "INSERT INTO m2m_tokens"
    " (id, instance_id, subject, token_format, digest, scopes, expiration, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Random bytes below 248 = 4 x 62 map evenly onto the alphabet; the rest are dropped.
_UNIFORM_LIMIT: Final = 4 * len(BASE62)
_TO_BASE62: Final = bytes(BASE62.encode("ascii")[b % len(BASE62)] for b in range(256))
_OUT_OF_RANGE: Final = bytes(range(_UNIFORM_LIMIT, 256))

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Seeded:
    """The instance, its two machines and their keys, and two tokens ready to verify.

    ``caller`` may call ``receiver`` (named "caller" and "api"); both tokens are minted by
    the caller, so they are scoped to the receiver.
    """

    instance_id: str
    secret_key: str  # the instance's sk_ key
    receiver_id: str
    receiver_key: str  # ak_
    caller_id: str
    caller_key: str  # ak_
    opaque_token: str
    jwt_token: str


def seed_machines(base_url: str, secret_key: str) -> Seeded:
    """Create the receiver "api" and the caller "caller" through the API, and mint as caller."""
    with Gatepass(secret_key=secret_key, api_url=base_url) as admin:
        receiver = admin.machines.create(name="api")
        caller = admin.machines.create(name="caller", scoped_machines=[receiver.id])
    if receiver.secret_key is None or caller.secret_key is None:
        raise RuntimeError("a machine create answered without the machine's secret key")
    with Gatepass(machine_secret_key=caller.secret_key, api_url=base_url) as minter:
        opaque = minter.m2m_tokens.create(seconds_until_expiration=TOKEN_SECONDS).token
        signed = minter.m2m_tokens.create(
            token_format=TokenFormat.JWT.value, seconds_until_expiration=TOKEN_SECONDS
        ).token
    if opaque is None or signed is None:
        raise RuntimeError("a token create answered without the token")
    return Seeded(
        instance_id=caller.instance_id,
        secret_key=secret_key,
        receiver_id=receiver.id,
        receiver_key=receiver.secret_key,
        caller_id=caller.id,
        caller_key=caller.secret_key,
        opaque_token=opaque,
        jwt_token=signed,
    )


def token_secrets(count: int) -> list[str]:
    """``count`` new opaque token secrets, in the exact form of ``generate_secret``.

    The same prefix, a 32-character base62 body drawn uniformly from ``os.urandom``, and
    the same CRC32 checksum; made in bulk, several times faster than one at a time.
    """
    needed = count * SECRET_BODY_LENGTH
    drawn = b""
    while len(drawn) < needed:
        shortfall = needed - len(drawn)
        fresh = os.urandom(shortfall + shortfall // 8 + 64)
        drawn += fresh.translate(_TO_BASE62, _OUT_OF_RANGE)
    text = drawn[:needed].decode("ascii")
    prefix = SecretKind.TOKEN.value
    step = SECRET_BODY_LENGTH
    heads = [prefix + text[i : i + step] for i in range(0, needed, step)]
    return [head + checksum(head) for head in heads]


def bulk_tokens(
    database_url: str,
    *,
    instance_id: str,
    subject: str,
    scopes: Sequence[str],
    count: int,
    keep_every: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[str]:
    """Insert ``count`` live opaque tokens of ``subject`` into the database directly.

    Each row is what minting stores: a fresh secret's digest, a new ``mt_`` id, the
    canonical scopes JSON, created now and expiring in ten years. Returns the secrets of
    tokens number 0, ``keep_every``, twice ``keep_every`` and so on, for verifying.
    Works beside a running server: SQLite in ``BEGIN IMMEDIATE`` batches that wait on the
    busy timeout, PostgreSQL through ``COPY``.
    """
    if count < 0 or keep_every < 1 or chunk_rows < 1:
        raise ValueError("count must be >= 0, keep_every and chunk_rows >= 1")
    chunks = _chunks(
        _RowTemplate(instance_id, subject, canonical_json(list(scopes)), _now_ms()),
        count=count,
        keep_every=keep_every,
        chunk_rows=chunk_rows,
    )
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _insert_sqlite(url.database or "", chunks)
    if backend in {"postgresql", "postgres"}:
        dsn = postgres_dsn(database_url)
        return run_sync(lambda: _insert_postgres(dsn, chunks))
    raise ValueError(f"not a sqlite:/// or postgresql:// URL: {backend}://")


@dataclass(frozen=True, slots=True)
class _RowTemplate:
    instance_id: str
    subject: str
    scopes_json: str
    now_ms: int

    def row(self, secret: str) -> Row:
        return (
            new_token_id(),
            self.instance_id,
            self.subject,
            TokenFormat.OPAQUE.value,
            digest(secret),
            self.scopes_json,
            self.now_ms + BULK_LIFETIME_MS,
            self.now_ms,
            self.now_ms,
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _chunks(
    template: _RowTemplate, *, count: int, keep_every: int, chunk_rows: int
) -> Iterator[tuple[list[Row], list[str]]]:
    """Rows to insert, ``chunk_rows`` at a time, each with the secrets to keep from it."""
    for start in range(0, count, chunk_rows):
        made = token_secrets(min(chunk_rows, count - start))
        kept = [s for i, s in enumerate(made, start) if i % keep_every == 0]
        yield [template.row(s) for s in made], kept


def _insert_sqlite(path: str, chunks: Iterator[tuple[list[Row], list[str]]]) -> list[str]:
    kept: list[str] = []
    existing = Path(path).resolve().as_uri() + "?mode=rw"  # no new empty file for a typo
    connection = sqlite3.connect(
        existing, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None
    )
    with contextlib.closing(connection) as db:
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        for rows, keep in chunks:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_SQLITE_INSERT, rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            kept.extend(keep)
    return kept


async def _insert_postgres(dsn: str, chunks: Iterator[tuple[list[Row], list[str]]]) -> list[str]:
    kept: list[str] = []
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for rows, keep in chunks:
            await conn.copy_records_to_table("m2m_tokens", records=rows, columns=_COLUMNS)
            kept.extend(keep)
        await conn.execute("ANALYZE m2m_tokens")
    finally:
        await conn.close()
    return kept
