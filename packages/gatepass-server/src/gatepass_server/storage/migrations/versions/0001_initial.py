"""initial schema: instances, machines, scopes, keys

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:36:17.180030
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    op.create_table(
        "instance_keys",
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("hint", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name=op.f("fk_instance_keys_instance_id_instances")
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_instance_keys")),
    )
    with op.batch_alter_table("instance_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_keys_instance_id"), ["instance_id"], unique=False
        )

    op.create_table(
        "machines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("name_search", sa.String(length=1020), nullable=False),
        sa.Column("default_token_ttl", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name=op.f("fk_machines_instance_id_instances")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machines")),
    )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machines_instance_id_created_at_id"),
            ["instance_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_machines_instance_id_name"), ["instance_id", "name"], unique=False
        )

    op.create_table(
        "machine_scopes",
        sa.Column("from_machine_id", sa.String(length=32), nullable=False),
        sa.Column("to_machine_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["from_machine_id"],
            ["machines.id"],
            name=op.f("fk_machine_scopes_from_machine_id_machines"),
        ),
        sa.ForeignKeyConstraint(
            ["to_machine_id"],
            ["machines.id"],
            name=op.f("fk_machine_scopes_to_machine_id_machines"),
        ),
        sa.PrimaryKeyConstraint("from_machine_id", "to_machine_id", name=op.f("pk_machine_scopes")),
    )
    with op.batch_alter_table("machine_scopes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machine_scopes_to_machine_id"), ["to_machine_id"], unique=False
        )

    op.create_table(
        "machine_secret_keys",
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_machine_secret_keys_machine_id_machines")
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_machine_secret_keys")),
    )
    with op.batch_alter_table("machine_secret_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machine_secret_keys_machine_id"), ["machine_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("machine_secret_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machine_secret_keys_machine_id"))

    op.drop_table("machine_secret_keys")
    with op.batch_alter_table("machine_scopes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machine_scopes_to_machine_id"))

    op.drop_table("machine_scopes")
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machines_instance_id_name"))
        batch_op.drop_index(batch_op.f("ix_machines_instance_id_created_at_id"))

    op.drop_table("machines")
    with op.batch_alter_table("instance_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_keys_instance_id"))

    op.drop_table("instance_keys")
    op.drop_table("instances")
