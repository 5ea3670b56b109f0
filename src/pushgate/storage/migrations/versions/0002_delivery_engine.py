"""delivery engine: jobs table, platform addresses, subscriber identifiers

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("visible_ms", sa.BigInteger(), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_queue_visible_ms", "jobs", ["queue", "visible_ms"], unique=False)
    with op.batch_alter_table("subscribers") as batch_op:
        batch_op.add_column(sa.Column("email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("phone_number", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("uuid", sa.String(length=64), nullable=True))
    with op.batch_alter_table("devices") as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("push_token_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("push_token_hash", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_devices_account_id_push_token_hash",
        "devices",
        ["account_id", "push_token_hash"],
        unique=False,
    )
    op.add_column("deliveries", sa.Column("transport", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_column("transport")
    op.drop_index("ix_devices_account_id_push_token_hash", table_name="devices")
    with op.batch_alter_table("devices") as batch_op:
        batch_op.drop_column("push_token_hash")
        batch_op.drop_column("push_token_enc")
        batch_op.drop_column("timezone")
    with op.batch_alter_table("subscribers") as batch_op:
        batch_op.drop_column("uuid")
        batch_op.drop_column("phone_number")
        batch_op.drop_column("email")
    op.drop_index("ix_jobs_queue_visible_ms", table_name="jobs")
    op.drop_table("jobs")
