"""sendings: one-time sendings due later with their pushes and translations, app and
audience groups, and the sending and push of each notification

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("account_id", _Id, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_groups_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("account_id", "kind", "name", name="uq_groups_account_id_kind_name"),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", _Id, nullable=False),
        sa.Column("member", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_members_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("group_id", "member", name=op.f("pk_group_members")),
    )
    op.create_table(
        "sendings",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("account_id", _Id, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("wall_ms", sa.BigInteger(), nullable=False),
        sa.Column("offset_minutes", sa.Integer(), nullable=False),
        sa.Column("local_time", sa.Boolean(), nullable=False),
        sa.Column("apps", sa.Text(), nullable=False),
        sa.Column("audience", sa.Text(), nullable=True),
        sa.Column("filters", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=True),
        sa.Column("finished_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_sendings_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sendings")),
    )
    op.create_index("ix_sendings_account_id_id", "sendings", ["account_id", "id"], unique=False)
    op.create_table(
        "pushes",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("account_id", _Id, nullable=False),
        sa.Column("sending_id", _Id, nullable=True),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("options", sa.Text(), nullable=True),
        sa.Column("ttl_seconds", sa.Integer(), nullable=True),
        sa.Column("campaign_id", _Id, nullable=True),
        sa.Column("default_language", sa.String(length=35), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_pushes_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["sending_id"], ["sendings.id"], name=op.f("fk_pushes_sending_id_sendings")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_pushes_campaign_id_campaigns")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pushes")),
    )
    op.create_index("ix_pushes_sending_id", "pushes", ["sending_id"], unique=False)
    op.create_index("ix_pushes_account_id_id", "pushes", ["account_id", "id"], unique=False)
    op.create_table(
        "push_translations",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("push_id", _Id, nullable=False),
        sa.Column("language", sa.String(length=35), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("icon_url", sa.Text(), nullable=True),
        sa.Column("link", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["push_id"], ["pushes.id"], name=op.f("fk_push_translations_push_id_pushes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_translations")),
        sa.UniqueConstraint("push_id", "language", name="uq_push_translations_push_id_language"),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("sending_id", _Id, nullable=True))
        batch.add_column(sa.Column("push_id", _Id, nullable=True))
        batch.create_index("ix_notifications_sending_id", ["sending_id"], unique=False)
        batch.create_index("ix_notifications_push_id", ["push_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_push_id")
        batch.drop_index("ix_notifications_sending_id")
        batch.drop_column("push_id")
        batch.drop_column("sending_id")
    op.drop_table("push_translations")
    op.drop_index("ix_pushes_account_id_id", table_name="pushes")
    op.drop_index("ix_pushes_sending_id", table_name="pushes")
    op.drop_table("pushes")
    op.drop_index("ix_sendings_account_id_id", table_name="sendings")
    op.drop_table("sendings")
    op.drop_table("group_members")
    op.drop_table("groups")
