"""The database schema. Times are integer milliseconds since the Unix epoch (UTC).

Alembic migrations in ``storage/migrations`` must produce exactly this schema; a test checks it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("user_token_hash", String(64), nullable=False, unique=True),
    Column("user_token_enc", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

apps = Table(
    "apps",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("title", String(200), nullable=False),
    Column("app_key", String(64), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("secret_enc", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("trackers", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("app_id", "title", name="uq_events_app_id_title"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("external_id", String(200), nullable=True),
    Column("email", String(320), nullable=True),
    Column("phone_number", String(32), nullable=True),
    Column("uuid", String(64), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("account_id", "external_id", name="uq_subscribers_account_id_external_id"),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), nullable=False, index=True),
    Column("platform", String(16), nullable=False),
    Column("name", String(200), nullable=True),
    Column("language", String(16), nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # The provider address (APNs/FCM/HMS token or Web Push subscription JSON), encrypted; its
    # digest finds a re-registration of the same address.
    Column("push_token_enc", Text, nullable=True),
    Column("push_token_hash", String(64), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(200), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=True),
    Index("ix_devices_account_id_push_token_hash", "account_id", "push_token_hash"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=True),
    Column("event", String(200), nullable=True),
    Column("title", String(200), nullable=True),
    Column("message", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False, index=True),
    # PushOptions as JSON (image, deep link, sound, badge, collapse key, priority); null for
    # the defaults.
    Column("options", Text, nullable=True),
    Index("ix_notifications_account_id_id", "account_id", "id"),
)

# Provider credentials of an app, one row per push platform (ios: APNs token key, android: FCM
# service account, huawei: HMS app id and secret, web: VAPID key pair). ``secret_enc`` is the
# whole credential as JSON, encrypted; ``public`` is what may be shown (key id, team, topic,
# project, VAPID public key...).
app_credentials = Table(
    "app_credentials",
    metadata,
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("platform", String(16), primary_key=True),
    Column("secret_enc", Text, nullable=False),
    Column("public", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# One row per notification x device. The primary key (notification_id, device_id) grows at its
# end as notifications are added, so inserting a notification's deliveries is an append; on
# SQLite the table is WITHOUT ROWID, so that key is the table itself. The second index is each
# device's inbox, read when a device (re)connects.
deliveries = Table(
    "deliveries",
    metadata,
    Column("notification_id", Id, ForeignKey("notifications.id"), primary_key=True),
    Column("device_id", Id, ForeignKey("devices.id"), primary_key=True),
    Column("status", String(16), nullable=False),
    # The device's platform when the delivery was made: the transport that carries it.
    Column("transport", String(16), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("reason", String(200), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("sent_ms", BigInteger, nullable=True),
    Column("delivered_ms", BigInteger, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_deliveries_device_id_notification_id", "device_id", "notification_id"),
    sqlite_with_rowid=False,
)

# The embedded queue engine's jobs. A job is visible to workers once ``visible_ms`` has passed:
# a claim pushes it into the future by the lease, an acknowledgement deletes the row, so a job
# whose worker died becomes visible again when its lease runs out.
jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("queue", String(64), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("visible_ms", BigInteger, nullable=False),
    Column("claims", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_jobs_queue_visible_ms", "queue", "visible_ms"),
    # Ids are never reused on SQLite either, so a late acknowledgement of a job that was taken
    # over cannot delete a newer job that got the same id.
    sqlite_autoincrement=True,
)
