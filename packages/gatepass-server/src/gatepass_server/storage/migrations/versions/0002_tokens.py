"""m2m tokens and signing keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:53:10.592810
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "m2m_tokens",
        sa.Column("id", sa.String(length=35), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=32), nullable=False),
        sa.Column("token_format", sa.String(length=8), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("kid", sa.String(length=64), nullable=True),
        sa.Column("claims", sa.Text(), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("expiration", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name=op.f("fk_m2m_tokens_instance_id_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_m2m_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_m2m_tokens_digest")),
    )
    with op.batch_alter_table("m2m_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_m2m_tokens_instance_id_subject_created_at_id"),
            ["instance_id", "subject", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_m2m_tokens_kid"), ["kid"], unique=False)

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("algorithm", sa.String(length=8), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name=op.f("fk_signing_keys_instance_id_instances")
        ),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_signing_keys_instance_id"), ["instance_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_keys_instance_id"))

    op.drop_table("signing_keys")
    with op.batch_alter_table("m2m_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_m2m_tokens_kid"))
        batch_op.drop_index(batch_op.f("ix_m2m_tokens_instance_id_subject_created_at_id"))

    op.drop_table("m2m_tokens")
