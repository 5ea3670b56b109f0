"""audience and access: app-scoped subscribers and devices, subscriber profiles (identifiers,
attributes, tags, events), campaigns, API keys, idempotency keys, the outbox

Existing data is moved to app scope:

- a channel device stays account-wide (``app_id`` NULL): a personal device that receives
  every app of its account, as ``pushgate listen`` and Instapush's own app always did;
- a push device goes to the app of the latest notification its provider accepted for it
  (that app's credentials reached it), else to the account's oldest app; in an account
  without apps it is disabled, with a reason that says to register it again;
- a subscriber takes the scope of its devices; one with devices in several scopes is copied
  once per further scope, with its identifiers;
- an identifier (external id, e-mail, phone number, uuid) used by several subscribers of one
  scope stays with the oldest of them.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
IDENTIFIERS = ("external_id", "user_id", "email", "phone_number", "uuid")
NO_APP_REASON = (
    "registered before devices belonged to apps, in an account without apps: register it "
    "again with app_id"
)


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("frequency_cap", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("default_icon_url", sa.String(length=2048), nullable=True))

    op.create_table(
        "campaigns",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("app_id", _Id, nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_campaigns_app_id_apps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("app_id", "external_id", name="uq_campaigns_app_id_external_id"),
    )

    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("app_id", _Id, nullable=True))
        batch.add_column(sa.Column("user_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("language", sa.String(length=35), nullable=True))
        batch.add_column(sa.Column("country", sa.String(length=2), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("optin_push", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("optin_email", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("optin_sms", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("optin_location", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("last_active_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("updated_ms", sa.BigInteger(), nullable=True))
        batch.drop_constraint("uq_subscribers_account_id_external_id", type_="unique")
        batch.create_foreign_key(op.f("fk_subscribers_app_id_apps"), "apps", ["app_id"], ["id"])
        batch.create_index("ix_subscribers_account_id", ["account_id"], unique=False)

    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("app_id", _Id, nullable=True))
        batch.add_column(sa.Column("country", sa.String(length=2), nullable=True))
        batch.add_column(sa.Column("model", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("os_version", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("app_version", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("last_active_ms", sa.BigInteger(), nullable=True))
        batch.alter_column(
            "language", existing_type=sa.String(length=16), type_=sa.String(length=35)
        )
        batch.drop_index("ix_devices_account_id_push_token_hash")
        batch.drop_index("ix_devices_subscriber_id")
        batch.create_foreign_key(op.f("fk_devices_app_id_apps"), "apps", ["app_id"], ["id"])
        batch.create_index("ix_devices_app_id", ["app_id"], unique=False)
        batch.create_index(
            "ix_devices_subscriber_id_last_active_ms",
            ["subscriber_id", "last_active_ms"],
            unique=False,
        )

    _move_to_app_scope(op.get_bind())

    with op.batch_alter_table("subscribers") as batch:
        for name in IDENTIFIERS:
            batch.create_unique_constraint(f"uq_subscribers_app_id_{name}", ["app_id", name])
    op.create_index(
        "uq_devices_app_id_platform_push_token_hash",
        "devices",
        ["app_id", "platform", "push_token_hash"],
        unique=True,
    )

    op.create_table(
        "subscriber_identifiers",
        sa.Column("app_id", _Id, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("subscriber_id", _Id, nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_subscriber_identifiers_app_id_apps")
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_subscriber_identifiers_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("app_id", "name", "value", name=op.f("pk_subscriber_identifiers")),
    )
    op.create_index(
        "ix_subscriber_identifiers_subscriber_id",
        "subscriber_identifiers",
        ["subscriber_id"],
        unique=False,
    )
    op.create_table(
        "subscriber_attributes",
        sa.Column("subscriber_id", _Id, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text_value", sa.String(length=1000), nullable=True),
        sa.Column("num_value", sa.Float(precision=53), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_subscriber_attributes_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint(
            "subscriber_id", "name", "position", name=op.f("pk_subscriber_attributes")
        ),
    )
    op.create_index(
        "ix_subscriber_attributes_name_text_value",
        "subscriber_attributes",
        ["name", "text_value"],
        unique=False,
    )
    op.create_index(
        "ix_subscriber_attributes_name_num_value",
        "subscriber_attributes",
        ["name", "num_value"],
        unique=False,
    )
    op.create_table(
        "subscriber_tags",
        sa.Column("subscriber_id", _Id, nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_subscriber_tags_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "tag", name=op.f("pk_subscriber_tags")),
    )
    op.create_index("ix_subscriber_tags_tag", "subscriber_tags", ["tag"], unique=False)
    op.create_table(
        "subscriber_events",
        sa.Column("subscriber_id", _Id, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("first_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_subscriber_events_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "name", name=op.f("pk_subscriber_events")),
    )
    op.create_index("ix_subscriber_events_name", "subscriber_events", ["name"], unique=False)

    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("campaign_id", _Id, nullable=True))
        batch.add_column(sa.Column("audience", sa.Text(), nullable=True))
        batch.add_column(sa.Column("translations", sa.Text(), nullable=True))
        batch.add_column(sa.Column("due_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("no_user", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("opted_out", sa.Integer(), nullable=False, server_default="0"))
        batch.create_foreign_key(
            op.f("fk_notifications_campaign_id_campaigns"), "campaigns", ["campaign_id"], ["id"]
        )
    op.create_index("ix_notifications_campaign_id", "notifications", ["campaign_id"], unique=False)
    op.create_index(
        "ix_notifications_app_id_created_ms",
        "notifications",
        ["app_id", "created_ms"],
        unique=False,
    )

    op.add_column("deliveries", sa.Column("opened_ms", sa.BigInteger(), nullable=True))

    op.create_table(
        "api_keys",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("account_id", _Id, nullable=False),
        sa.Column("app_id", _Id, nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_enc", sa.Text(), nullable=False),
        sa.Column("key_hint", sa.String(length=16), nullable=False),
        sa.Column("ip_allowlist", sa.Text(), nullable=True),
        sa.Column("per_minute", sa.Integer(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_api_keys_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_api_keys_app_id_apps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"], unique=False)
    op.create_index("ix_api_keys_app_id", "api_keys", ["app_id"], unique=False)
    op.create_table(
        "idempotency_keys",
        sa.Column("account_id", _Id, nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_idempotency_keys_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "ix_idempotency_keys_created_ms", "idempotency_keys", ["created_ms"], unique=False
    )
    op.create_table(
        "outbox",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("delay_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sqlite_autoincrement=True,
    )


def _move_to_app_scope(bind: Any) -> None:
    """Devices and subscribers into their app (see the module docstring)."""
    true = "true" if bind.dialect.name != "sqlite" else "1"
    false = "false" if bind.dialect.name != "sqlite" else "0"
    # The app whose credentials the provider last accepted for the device.
    bind.execute(
        sa.text(
            "UPDATE devices SET app_id = (SELECT n.app_id FROM deliveries d "
            "JOIN notifications n ON n.id = d.notification_id "
            "WHERE d.device_id = devices.id AND d.status IN ('sent', 'delivered') "
            "AND n.app_id IS NOT NULL ORDER BY n.id DESC LIMIT 1) "
            "WHERE platform <> 'channel'"
        )
    )
    bind.execute(
        sa.text(
            "UPDATE devices SET app_id = (SELECT min(apps.id) FROM apps "
            "WHERE apps.account_id = devices.account_id) "
            "WHERE platform <> 'channel' AND app_id IS NULL"
        )
    )
    bind.execute(
        sa.text(
            f"UPDATE devices SET enabled = {false}, disabled_reason = :reason "
            f"WHERE platform <> 'channel' AND app_id IS NULL AND enabled = {true}"
        ),
        {"reason": NO_APP_REASON},
    )
    scopes: dict[int, list[int | None]] = defaultdict(list)
    for subscriber_id, app_id in bind.execute(
        sa.text("SELECT DISTINCT subscriber_id, app_id FROM devices ORDER BY subscriber_id")
    ):
        scopes[int(subscriber_id)].append(None if app_id is None else int(app_id))
    columns = "account_id, external_id, email, phone_number, uuid, created_ms"
    for subscriber_id, apps in scopes.items():
        first, *others = sorted(apps, key=lambda app: -1 if app is None else app)
        bind.execute(
            sa.text("UPDATE subscribers SET app_id = :app WHERE id = :id"),
            {"app": first, "id": subscriber_id},
        )
        for app_id in others:
            copy = bind.execute(
                sa.text(
                    f"INSERT INTO subscribers ({columns}, app_id, optin_push) "
                    f"SELECT {columns}, :app, optin_push FROM subscribers WHERE id = :id "
                    "RETURNING id"
                ),
                {"app": app_id, "id": subscriber_id},
            ).scalar_one()
            if app_id is None:
                scope, params = "app_id IS NULL", {"sub": subscriber_id, "copy": copy}
            else:
                scope = "app_id = :app"
                params = {"sub": subscriber_id, "copy": copy, "app": app_id}
            bind.execute(
                sa.text(
                    f"UPDATE devices SET subscriber_id = :copy WHERE subscriber_id = :sub "
                    f"AND {scope}"
                ),
                params,
            )
    for name in IDENTIFIERS:
        # An identifier used twice in one scope stays with the oldest subscriber.
        bind.execute(
            sa.text(
                f"UPDATE subscribers SET {name} = NULL WHERE {name} IS NOT NULL AND "
                "app_id IS NOT NULL AND EXISTS (SELECT 1 FROM subscribers older "
                f"WHERE older.app_id = subscribers.app_id AND older.{name} = subscribers.{name} "
                "AND older.id < subscribers.id)"
            )
        )


def downgrade() -> None:
    raise NotImplementedError("0004 moved data into app scope; restore a backup to go back")
