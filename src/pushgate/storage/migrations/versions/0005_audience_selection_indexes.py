"""audience selection: indexes that let a filter on attribute values start from the
subscribers that have them

- the subscriber id joins the attribute value indexes ``(name, text_value)`` and ``(name,
  num_value)``: the index alone yields the subscribers with a value, and a correlated look-up
  of one subscriber's value (``not_in``) is a single index probe instead of a walk over every
  subscriber with that value;
- the index of a subscriber's devices ``(subscriber_id, last_active_ms)`` also carries app,
  account, enabled and platform, so the devices of those subscribers are selected from the
  index without reading their rows;
- the account index of devices becomes ``(account_id, app_id)``: a send without an audience
  also goes to the account's personal channel devices (``app_id`` null), found without reading
  the account's other devices.

Measured by ``benchmarks/audience.py`` (docs/performance.md, "Audience selection").

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ATTRIBUTES = "subscriber_attributes"
_DEVICE_COLUMNS = ["subscriber_id", "last_active_ms", "app_id", "account_id", "enabled", "platform"]


def upgrade() -> None:
    op.create_index(
        "ix_subscriber_attributes_name_text_value_subscriber_id",
        _ATTRIBUTES,
        ["name", "text_value", "subscriber_id"],
        unique=False,
    )
    op.create_index(
        "ix_subscriber_attributes_name_num_value_subscriber_id",
        _ATTRIBUTES,
        ["name", "num_value", "subscriber_id"],
        unique=False,
    )
    op.drop_index("ix_subscriber_attributes_name_text_value", table_name=_ATTRIBUTES)
    op.drop_index("ix_subscriber_attributes_name_num_value", table_name=_ATTRIBUTES)
    op.create_index("ix_devices_subscriber_id_covering", "devices", _DEVICE_COLUMNS, unique=False)
    op.drop_index("ix_devices_subscriber_id_last_active_ms", table_name="devices")
    op.create_index("ix_devices_account_id_app_id", "devices", ["account_id", "app_id"])
    op.drop_index("ix_devices_account_id", table_name="devices")


def downgrade() -> None:
    op.create_index("ix_devices_account_id", "devices", ["account_id"], unique=False)
    op.drop_index("ix_devices_account_id_app_id", table_name="devices")
    op.create_index(
        "ix_devices_subscriber_id_last_active_ms",
        "devices",
        ["subscriber_id", "last_active_ms"],
        unique=False,
    )
    op.drop_index("ix_devices_subscriber_id_covering", table_name="devices")
    op.create_index(
        "ix_subscriber_attributes_name_text_value",
        _ATTRIBUTES,
        ["name", "text_value"],
        unique=False,
    )
    op.create_index(
        "ix_subscriber_attributes_name_num_value", _ATTRIBUTES, ["name", "num_value"], unique=False
    )
    op.drop_index("ix_subscriber_attributes_name_text_value_subscriber_id", table_name=_ATTRIBUTES)
    op.drop_index("ix_subscriber_attributes_name_num_value_subscriber_id", table_name=_ATTRIBUTES)
