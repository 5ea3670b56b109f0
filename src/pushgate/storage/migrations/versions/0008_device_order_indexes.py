"""fan-out in chunks: an app's devices, and an account's personal ones, in id order

A large fan-out takes its devices in chunks by id (``services/fan_out.py``): "the next N
devices of this app after device X". SQLite's indexes end in the row id already; on PostgreSQL
the indexes ``(app_id)`` and ``(account_id, app_id)`` become ``(app_id, id)`` and
``(account_id, app_id, id)``, so each chunk is one ordered index range instead of a sort of
the whole app.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_app_id_id", "devices", ["app_id", "id"])
    op.drop_index("ix_devices_app_id", table_name="devices")
    op.create_index("ix_devices_account_id_app_id_id", "devices", ["account_id", "app_id", "id"])
    op.drop_index("ix_devices_account_id_app_id", table_name="devices")


def downgrade() -> None:
    op.create_index("ix_devices_account_id_app_id", "devices", ["account_id", "app_id"])
    op.drop_index("ix_devices_account_id_app_id_id", table_name="devices")
    op.create_index("ix_devices_app_id", "devices", ["app_id"])
    op.drop_index("ix_devices_app_id_id", table_name="devices")
