"""The database schema. Times are integer milliseconds since the Unix epoch (UTC).

Alembic migrations in ``storage/migrations`` must produce exactly this schema; a test checks it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
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
    # At most this many pushes per subscriber per day (null: no cap).
    Column("frequency_cap", Integer, nullable=True),
    # Web push icon when a notification names none (Insider web).
    Column("default_icon_url", String(2048), nullable=True),
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

# The end users of an app. ``app_id`` NULL: an account-wide subscriber, the owner of personal
# channel devices (``pushgate listen``, like Instapush's own app), which receive every app of
# the account. Each identifier is unique per app (NULLs never collide).
subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=True),
    Column("external_id", String(200), nullable=True),
    Column("user_id", String(200), nullable=True),
    Column("email", String(320), nullable=True),
    Column("phone_number", String(32), nullable=True),
    Column("uuid", String(64), nullable=True),
    Column("language", String(35), nullable=True),
    Column("country", String(2), nullable=True),
    Column("timezone", String(64), nullable=True),
    # Opt-ins: push is true unless withdrawn (a device was registered to receive pushes); the
    # others are unknown (NULL) until given, which does not count as opted in.
    Column("optin_push", Boolean, nullable=False, server_default=true()),
    Column("optin_email", Boolean, nullable=True),
    Column("optin_sms", Boolean, nullable=True),
    Column("optin_location", Boolean, nullable=True),
    Column("last_active_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=True),
    UniqueConstraint("app_id", "external_id", name="uq_subscribers_app_id_external_id"),
    UniqueConstraint("app_id", "user_id", name="uq_subscribers_app_id_user_id"),
    UniqueConstraint("app_id", "email", name="uq_subscribers_app_id_email"),
    UniqueConstraint("app_id", "phone_number", name="uq_subscribers_app_id_phone_number"),
    UniqueConstraint("app_id", "uuid", name="uq_subscribers_app_id_uuid"),
)

# Identifiers of the app's own naming (custom keys, e.g. ``INSIDER.member_id``), unique per
# app.
subscriber_identifiers = Table(
    "subscriber_identifiers",
    metadata,
    Column("app_id", Id, ForeignKey("apps.id"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", String(200), primary_key=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), nullable=False, index=True),
)

# Typed attributes, default (``d_*``) and custom (``c_*``): one row per value, a list one row
# per element in ``position`` order. ``kind``: string, number, bool or date, or "list:<kind>".
# Strings go in ``text_value``; numbers, booleans (0/1) and dates (ms since the epoch) in
# ``num_value``, dates also as ISO text. Indexed by name and value for targeting, with the
# subscriber id last: a filter on attribute values reads its subscribers from the index alone
# (see storage/audience_sql.py).
subscriber_attributes = Table(
    "subscriber_attributes",
    metadata,
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("text_value", String(1000), nullable=True),
    Column("num_value", Float(53), nullable=True),
    Index(
        "ix_subscriber_attributes_name_text_value_subscriber_id",
        "name",
        "text_value",
        "subscriber_id",
    ),
    Index(
        "ix_subscriber_attributes_name_num_value_subscriber_id",
        "name",
        "num_value",
        "subscriber_id",
    ),
)

# Tags ("audiences" in Push.express) and named events (install, reg...) of a subscriber.
subscriber_tags = Table(
    "subscriber_tags",
    metadata,
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    Index("ix_subscriber_tags_tag", "tag"),
)

subscriber_events = Table(
    "subscriber_events",
    metadata,
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("first_ms", BigInteger, nullable=False),
    Column("last_ms", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Index("ix_subscriber_events_name", "name"),
)

# ``app_id`` NULL: an account-scope device. Only channel devices are: personal devices that
# receive every app of the account. A provider address is unique per app and platform.
devices = Table(
    "devices",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), nullable=False),
    Column("platform", String(16), nullable=False),
    Column("name", String(200), nullable=True),
    Column("language", String(35), nullable=True),
    Column("country", String(2), nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("model", String(100), nullable=True),
    Column("os_version", String(50), nullable=True),
    Column("app_version", String(50), nullable=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # The provider address (APNs/FCM/HMS token or Web Push subscription JSON), encrypted; its
    # digest finds a re-registration of the same address.
    Column("push_token_enc", Text, nullable=True),
    Column("push_token_hash", String(64), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(200), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=True),
    Column("last_active_ms", BigInteger, nullable=True),
    # A subscriber's devices, most recently active last: its last active device is one index
    # look-up away. The columns after those make it cover the fan-out's device selection when
    # that starts from subscribers (an audience of attribute values or subscriber ids, see
    # storage/audience_sql.py): the devices' rows need not be read.
    # An app's devices, and an account's personal (app-less) channel devices without reading
    # the others (every send without an audience also goes to those), each in id order: a
    # large fan-out goes in chunks of devices by id (services/fan_out.py).
    Index("ix_devices_app_id_id", "app_id", "id"),
    Index("ix_devices_account_id_app_id_id", "account_id", "app_id", "id"),
    Index(
        "ix_devices_subscriber_id_covering",
        "subscriber_id",
        "last_active_ms",
        "app_id",
        "account_id",
        "enabled",
        "platform",
    ),
    Index(
        "uq_devices_app_id_platform_push_token_hash",
        "app_id",
        "platform",
        "push_token_hash",
        unique=True,
    ),
)

# A named group of notifications that statistics are reported by (an Insider camp_id, a web
# push campaign, a Push.express push), per app; ``external_id`` is the caller's id for it.
campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=False),
    Column("external_id", String(64), nullable=True),
    Column("name", String(200), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("app_id", "external_id", name="uq_campaigns_app_id_external_id"),
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
    Column("campaign_id", Id, ForeignKey("campaigns.id"), nullable=True, index=True),
    # The audience (domain/audience.py) as JSON; null: every device of the app and the
    # account's personal channel devices (Instapush).
    Column("audience", Text, nullable=True),
    # Translations as JSON (domain/translations.py).
    Column("translations", Text, nullable=True),
    # When the fan-out is due (a scheduled send); null: at once.
    Column("due_ms", BigInteger, nullable=True),
    # Targets of the request that got no delivery: identifiers that named no subscriber,
    # subscribers who withdrew push opt-in (for campaign statistics).
    Column("no_user", Integer, nullable=False, server_default="0"),
    Column("opted_out", Integer, nullable=False, server_default="0"),
    # The sending and the push it was made from (statistics per sending and per push).
    Column("sending_id", Id, nullable=True, index=True),
    Column("push_id", Id, nullable=True, index=True),
    Index("ix_notifications_account_id_id", "account_id", "id"),
    # An app's notifications of the last day, for its frequency cap.
    Index("ix_notifications_app_id_created_ms", "app_id", "created_ms"),
)

# Named sets of an account's apps (kind "apps": members are app ids) or of audiences (kind
# "audiences": members are subscriber tags), used by a sending's filters.
groups = Table(
    "groups",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("account_id", "kind", "name", name="uq_groups_account_id_kind_name"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", Id, ForeignKey("groups.id"), primary_key=True),
    Column("member", String(200), primary_key=True),
)

# A sending due later (domain/schedules.py): its wall time (as milliseconds read at offset
# 0), the offset it is due at (the fallback offset of a local-time sending), which apps and
# devices it reaches, and its state. ``cursor``: the offsets of a local-time sending at or
# above it have run. ``filters``: the request's filters as given (Push.express), shown back.
sendings = Table(
    "sendings",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("source", String(32), nullable=False),
    Column("wall_ms", BigInteger, nullable=False),
    Column("offset_minutes", Integer, nullable=False),
    Column("local_time", Boolean, nullable=False),
    Column("apps", Text, nullable=False),
    Column("audience", Text, nullable=True),
    Column("filters", Text, nullable=True),
    Column("state", String(16), nullable=False),
    Column("cursor", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("started_ms", BigInteger, nullable=True),
    Column("finished_ms", BigInteger, nullable=True),
    Index("ix_sendings_account_id_id", "account_id", "id"),
)

# The content a sending sends: the default text and options, and its translations. A push
# is bound to at most one sending.
pushes = Table(
    "pushes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("sending_id", Id, ForeignKey("sendings.id"), nullable=True, index=True),
    Column("title", String(200), nullable=True),
    Column("message", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("options", Text, nullable=True),
    Column("ttl_seconds", Integer, nullable=True),
    Column("campaign_id", Id, ForeignKey("campaigns.id"), nullable=True),
    Column("default_language", String(35), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_pushes_account_id_id", "account_id", "id"),
)

push_translations = Table(
    "push_translations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("push_id", Id, ForeignKey("pushes.id"), nullable=False),
    Column("language", String(35), nullable=False),
    Column("title", String(200), nullable=True),
    Column("message", Text, nullable=False),
    Column("image_url", Text, nullable=True),
    Column("icon_url", Text, nullable=True),
    Column("link", Text, nullable=True),
    UniqueConstraint("push_id", "language", name="uq_push_translations_push_id_language"),
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
    Column("opened_ms", BigInteger, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_deliveries_device_id_notification_id", "device_id", "notification_id"),
    sqlite_with_rowid=False,
)

# API keys of the vendor faces and the native API, one kind each, of an app (or of the
# account, for faces that target several apps). Found by an HMAC of the key; the key itself is
# kept encrypted. ``ip_allowlist``: JSON list of CIDRs (null: any address); ``per_minute``:
# the request quota (null: the face's default).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("app_id", Id, ForeignKey("apps.id"), nullable=True, index=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_enc", Text, nullable=False),
    Column("key_hint", String(16), nullable=False),
    Column("ip_allowlist", Text, nullable=True),
    Column("per_minute", Integer, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
)

# Points in time the server's background work has reached, by name, kept across restarts:
# ``expiry_swept`` is where the TTL sweep got to (services/pipeline.py), so that the first
# sweep after a start does not look back over the whole history.
maintenance_marks = Table(
    "maintenance_marks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value_ms", BigInteger, nullable=False),
)

# A retried request with the same idempotency key gets the first answer and sends nothing.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id"), primary_key=True),
    Column("key", String(200), primary_key=True),
    # A digest of the request: the same key with another request is refused.
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer, nullable=True),
    Column("response", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False, index=True),
)

# Dashboard sign-in by e-mail and password, set by the operator's CLI (``pushgate account
# set-password``): one login per account. ``password_hash`` is an scrypt hash with its
# parameters and salt (services/dashboard_auth.py).
dashboard_logins = Table(
    "dashboard_logins",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id"), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# Signed-in dashboard sessions, found by a keyed hash of the cookie's token (the token itself
# is never stored). A session ends at ``expires_ms`` or when its user signs out.
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False, index=True),
)

# Jobs for a queue engine outside the database (Redis), written in the transaction that makes
# them and published after it commits, by the outbox relay.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("queue", String(64), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("delay_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    sqlite_autoincrement=True,
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
