"""Apps of an account: appID + appSecret (encrypted at rest, compared in constant time)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.cache import TTLCache
from pushgate.crypto import SecretBox, new_token
from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import apps

_NO_HASH = "0" * 64
SETTINGS_SECONDS = 2.0

# Deleting an app, children first (every statement takes the app's id as :app; the group
# members, which hold it as text, as :member).
_DELETE_APP = (
    "DELETE FROM deliveries WHERE notification_id IN "
    "(SELECT id FROM notifications WHERE app_id = :app)",
    "DELETE FROM deliveries WHERE device_id IN (SELECT id FROM devices WHERE app_id = :app)",
    "DELETE FROM notifications WHERE app_id = :app",
    "DELETE FROM devices WHERE app_id = :app",
    "DELETE FROM subscriber_attributes WHERE subscriber_id IN "
    "(SELECT id FROM subscribers WHERE app_id = :app)",
    "DELETE FROM subscriber_tags WHERE subscriber_id IN "
    "(SELECT id FROM subscribers WHERE app_id = :app)",
    "DELETE FROM subscriber_events WHERE subscriber_id IN "
    "(SELECT id FROM subscribers WHERE app_id = :app)",
    "DELETE FROM subscriber_identifiers WHERE app_id = :app",
    "DELETE FROM subscribers WHERE app_id = :app",
    "UPDATE pushes SET campaign_id = NULL WHERE campaign_id IN "
    "(SELECT id FROM campaigns WHERE app_id = :app)",
    "DELETE FROM campaigns WHERE app_id = :app",
    "DELETE FROM group_members WHERE member = :member AND group_id IN "
    "(SELECT id FROM groups WHERE kind = 'apps')",
    "DELETE FROM events WHERE app_id = :app",
    "DELETE FROM app_credentials WHERE app_id = :app",
    "DELETE FROM api_keys WHERE app_id = :app",
    "DELETE FROM apps WHERE id = :app",
)


async def owned_app_id(conn: AsyncConnection, account_id: int, app_key: str, hint: str = "") -> int:
    """The row id of the account's app with this appID; ``NotFound`` (with ``hint``
    appended) when the account has none: an app of another account is not found either."""
    app_id = (
        await conn.execute(
            select(apps.c.id).where(apps.c.app_key == app_key, apps.c.account_id == account_id)
        )
    ).scalar()
    if app_id is None:
        raise NotFound(f"No app {app_key} in this account{hint}")
    return int(app_id)


@dataclass(frozen=True, slots=True)
class App:
    id: int
    account_id: int
    title: str
    app_key: str


@dataclass(frozen=True, slots=True)
class AppSettings:
    # At most this many notifications per subscriber per day (None: no cap).
    frequency_cap: int | None
    # The icon of web pushes that name none.
    default_icon_url: str | None


@dataclass(frozen=True, slots=True)
class AppChanges:
    title: str | None = None
    set_frequency_cap: bool = False
    frequency_cap: int | None = None
    set_default_icon_url: bool = False
    default_icon_url: str | None = None


@dataclass(frozen=True, slots=True)
class AppWithSecret:
    app: App
    secret: str


@dataclass(frozen=True, slots=True)
class _CachedCredential:
    app: App
    secret_hash: str


# Work done in the transaction that creates an app, given its id (e.g. its VAPID key pair).
AppCreated = Callable[[AsyncConnection, int], Awaitable[None]]


class AppService:
    def __init__(self, db: Database, box: SecretBox, on_created: AppCreated | None = None) -> None:
        self._db = db
        self._box = box
        self._on_created = on_created
        self._by_key: TTLCache[str, _CachedCredential] = TTLCache(ttl_seconds=60)
        # Settings as the send path reads them: another process's change shows within this.
        self._settings: TTLCache[tuple[int, str], AppSettings] = TTLCache(SETTINGS_SECONDS)

    async def create(self, account_id: int, title: str) -> AppWithSecret:
        title = title.strip()
        if not title or len(title) > 200:
            raise InvalidInput("title must be 1-200 characters")
        app_key, secret = new_token(12), new_token(16)
        async with self._db.writing() as conn:
            result = await conn.execute(
                insert(apps).returning(apps.c.id),
                {
                    "account_id": account_id,
                    "title": title,
                    "app_key": app_key,
                    "secret_hash": self._box.digest(secret),
                    "secret_enc": self._box.encrypt(secret),
                    "created_ms": now_ms(),
                },
            )
            app_id = int(result.scalar_one())
            if self._on_created is not None:
                await self._on_created(conn, app_id)
        return AppWithSecret(App(app_id, account_id, title, app_key), secret)

    async def list(self, account_id: int) -> list[AppWithSecret]:
        async with self._db.read.connect() as conn:
            rows = (
                await conn.execute(
                    select(apps).where(apps.c.account_id == account_id).order_by(apps.c.id)
                )
            ).all()
        return [
            AppWithSecret(
                App(row.id, row.account_id, row.title, row.app_key),
                self._box.decrypt(row.secret_enc),
            )
            for row in rows
        ]

    async def get(self, account_id: int, app_key: str) -> AppWithSecret:
        """The account's app with its secret; NotFound for another account's app."""
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(apps).where(apps.c.app_key == app_key, apps.c.account_id == account_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"No app {app_key} in this account")
        return AppWithSecret(
            App(row.id, row.account_id, row.title, row.app_key), self._box.decrypt(row.secret_enc)
        )

    async def settings(self, account_id: int, app_key: str) -> AppSettings:
        """The app's settings (cached for ``SETTINGS_SECONDS``; a change made in this process
        shows at once)."""
        cached = self._settings.get((account_id, app_key))
        if cached is not None:
            return cached
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(apps.c.frequency_cap, apps.c.default_icon_url).where(
                        apps.c.app_key == app_key, apps.c.account_id == account_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"No app {app_key} in this account")
        found = AppSettings(row.frequency_cap, row.default_icon_url)
        self._settings.put((account_id, app_key), found)
        return found

    async def update(self, account_id: int, app_key: str, changes: AppChanges) -> App:
        """Rename the app or change its settings (what ``changes`` gives)."""
        self._settings.discard((account_id, app_key))
        values: dict[str, object] = {}
        if changes.title is not None:
            title = changes.title.strip()
            if not title or len(title) > 200:
                raise InvalidInput("title must be 1-200 characters")
            values["title"] = title
        if changes.set_frequency_cap:
            cap = changes.frequency_cap
            if cap is not None and not 1 <= cap <= 10_000:
                raise InvalidInput("frequency_cap must be 1 to 10000 notifications a day, or null")
            values["frequency_cap"] = cap
        if changes.set_default_icon_url:
            icon = changes.default_icon_url
            if icon is not None and (not icon.startswith("https://") or len(icon) > 2048):
                raise InvalidInput("default_icon_url must be an https:// URL, or null")
            values["default_icon_url"] = icon
        async with self._db.writing() as conn:
            query = (
                update(apps)
                .where(apps.c.app_key == app_key, apps.c.account_id == account_id)
                .values(**(values or {"title": apps.c.title}))  # nothing to change: a no-op
            )
            row = (await conn.execute(query.returning(apps.c.id, apps.c.title))).first()
        if row is None:
            raise NotFound(f"No app {app_key} in this account")
        self._by_key.discard(app_key)
        self._settings.discard((account_id, app_key))
        return App(int(row.id), account_id, row.title, app_key)

    async def delete(self, account_id: int, app_key: str) -> None:
        """Delete the app with everything of it: devices and subscribers (with their
        profiles), notifications and their deliveries, events, campaigns, credentials and API
        keys; it leaves the app groups it was in. Sendings that named it no longer reach it."""
        async with self._db.writing() as conn:
            app_id = await owned_app_id(conn, account_id, app_key)
            for statement in _DELETE_APP:
                # ``member`` holds an app's row id as text: bound as text (asyncpg will not
                # send an int where a CAST of the parameter asks for text)
                await conn.execute(text(statement), {"app": app_id, "member": str(app_id)})
        self._by_key.discard(app_key)

    async def of_account(self, account_id: int, app_key: str) -> App | None:
        """The account's app with this key (None for another account's app)."""
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(apps).where(apps.c.app_key == app_key, apps.c.account_id == account_id)
                )
            ).first()
        return None if row is None else App(row.id, row.account_id, row.title, row.app_key)

    async def authenticate(self, app_key: str | None, secret: str | None) -> App | None:
        """The app whose appID and appSecret these are, or None. Constant-time on the secret.

        A refusal costs the same whether the appID exists or not, so that appIDs cannot be
        probed by timing: a wrong secret for a cached app reads the app again (its secret may
        have changed), as an unknown appID is read, and both compare against a hash."""
        if not app_key or not secret or len(app_key) > 64 or len(secret) > 256:
            return None
        credential = self._by_key.get(app_key)
        if credential is not None and self._box.matches(secret, credential.secret_hash):
            return credential.app
        async with self._db.read.connect() as conn:
            row = (await conn.execute(select(apps).where(apps.c.app_key == app_key))).first()
        if row is None:
            self._by_key.discard(app_key)
            self._box.matches(secret, _NO_HASH)  # the same hashing work as a real comparison
            return None
        credential = _CachedCredential(
            App(row.id, row.account_id, row.title, row.app_key), row.secret_hash
        )
        self._by_key.put(app_key, credential)
        if not self._box.matches(secret, credential.secret_hash):
            return None
        return credential.app
