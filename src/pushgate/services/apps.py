"""Apps of an account: appID + appSecret (encrypted at rest, compared in constant time)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.cache import TTLCache
from pushgate.crypto import SecretBox, new_token
from pushgate.domain.errors import InvalidInput
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import apps

_NO_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class App:
    id: int
    account_id: int
    title: str
    app_key: str


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

    async def create(self, account_id: int, title: str) -> AppWithSecret:
        title = title.strip()
        if not title or len(title) > 200:
            raise InvalidInput("title must be 1-200 characters")
        app_key, secret = new_token(12), new_token(16)
        async with self._db.write.begin() as conn:
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
