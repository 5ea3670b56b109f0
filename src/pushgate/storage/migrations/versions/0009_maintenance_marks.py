"""maintenance marks: where the TTL sweep got to, kept across restarts

The delivery pipeline's expiry sweep looks back to its previous sweep. After a start it did
not know when that was and looked back over the whole history: on a database of 10 million
deliveries, one write transaction of about 7 s, which every accepted notification waited for
once after each start (docs/performance.md). ``maintenance_marks`` keeps the time of the last
sweep.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_marks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_maintenance_marks")),
    )


def downgrade() -> None:
    op.drop_table("maintenance_marks")
