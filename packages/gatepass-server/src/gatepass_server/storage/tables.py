"""The schema, as SQLAlchemy Core tables. Migrations must produce exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
)

__all__ = [
    "instance_keys",
    "instances",
    "machine_scopes",
    "machine_secret_keys",
    "machines",
    "metadata",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    },
)

# Timestamps are integer Unix milliseconds (CONTRACT.md §1).

instances = Table(
    "instances",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

instance_keys = Table(
    "instance_keys",
    metadata,
    # NOTE: secrets are looked up by SHA-256 digest only; the plaintext is never stored.
    Column("digest", LargeBinary(32), primary_key=True),
    Column("instance_id", String(32), ForeignKey("instances.id"), nullable=False, index=True),
    Column("hint", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
)

machines = Table(
    "machines",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("instance_id", String(32), ForeignKey("instances.id"), nullable=False),
    Column("name", String(255), nullable=False),
    # casefold(name): one case-insensitive search on every backend, whatever its collation.
    Column("name_search", String(1020), nullable=False),
    Column("default_token_ttl", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "instance_id", "created_at", "id"),
    Index(None, "instance_id", "name"),
)

machine_scopes = Table(
    "machine_scopes",
    metadata,
    Column("from_machine_id", String(32), ForeignKey("machines.id"), primary_key=True),
    Column("to_machine_id", String(32), ForeignKey("machines.id"), primary_key=True, index=True),
    Column("created_at", BigInteger, nullable=False),
)

machine_secret_keys = Table(
    "machine_secret_keys",
    metadata,
    Column("digest", LargeBinary(32), primary_key=True),
    Column("machine_id", String(32), ForeignKey("machines.id"), nullable=False, index=True),
    # AES-256-GCM under the master key, bound to the machine id: GET …/secret_key needs it.
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # NULL for the current key; set on rotation to the end of the grace period.
    Column("expires_at", BigInteger, nullable=True),
)
