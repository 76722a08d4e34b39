"""The schema, as SQLAlchemy Core tables. Migrations must produce exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "changes",
    "instance_keys",
    "instances",
    "m2m_tokens",
    "machine_scopes",
    "machine_secret_keys",
    "machines",
    "metadata",
    "signing_keys",
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

m2m_tokens = Table(
    "m2m_tokens",
    metadata,
    Column("id", String(35), primary_key=True),  # mt_ + 32 hex: the handle, not the secret
    Column("instance_id", String(32), ForeignKey("instances.id"), nullable=False),
    # No foreign key: a deleted machine's tokens stay, revoked, for audit and lists.
    Column("subject", String(32), nullable=False),
    Column("token_format", String(8), nullable=False),
    # Opaque tokens only: SHA-256 of the secret, and a sealed copy when minted for reuse
    # (min_remaining_ttl_seconds) so the same secret can be handed out again.
    Column("digest", LargeBinary(32), nullable=True, unique=True),
    Column("sealed", LargeBinary, nullable=True),
    Column("kid", String(64), nullable=True, index=True),  # JWT only: the signing key used
    Column("claims", Text, nullable=True),  # canonical JSON, or NULL
    Column("scopes", Text, nullable=False),  # canonical JSON array of machine ids
    Column("expiration", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("revocation_reason", Text, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "instance_id", "subject", "created_at", "id"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("instance_id", String(32), ForeignKey("instances.id"), nullable=False, index=True),
    Column("algorithm", String(8), nullable=False),
    # The private key as PKCS#8 PEM, AES-256-GCM sealed under the master key, bound to kid.
    Column("sealed_private_key", LargeBinary, nullable=False),
    Column("public_jwk", Text, nullable=False),  # JSON: public members only
    Column("created_at", BigInteger, nullable=False),
    # NULL while the key signs; set when a newer key takes over. A retired key stays in
    # the JWKS while any token it signed (m2m_tokens.kid) has not expired.
    Column("retired_at", BigInteger, nullable=True),
)

changes = Table(
    "changes",
    metadata,
    # NOTE: INTEGER on SQLite makes the column the rowid, which is what autoincrements.
    # Ids are allocated and committed in order (see storage.changes), so a reader that has
    # seen id N has seen every id below it: the log's cursor is just the last id.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("instance_id", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("subject", String(35), nullable=False),
    Column("target", String(35), nullable=True),
    Column("scopes", Text, nullable=True),  # token_revoked: the token's scopes (JSON)
    Column("created_at", BigInteger, nullable=False),
    # When the entry may be pruned: a revoked token's expiration, for a token no verifier
    # accepts after it anyway; otherwise a day, as the log only serves cache sync.
    Column("expires_at", BigInteger, nullable=False, index=True),
    Index(None, "instance_id", "kind", "id"),
)
