"""Provider credentials of apps: stored encrypted, checked when given, read by transports.

One credential per app and push platform (ios: APNs token key, android: FCM service account,
huawei: HMS app id and secret, web: VAPID key pair). Every call names the account, and an app
of another account is "not found": one tenant never sees or changes another's credentials.
Every new app gets a VAPID key pair when it is created (``add_initial``), so browsers can
subscribe before anyone uploads anything; reading the public key never writes.

Checking an upload can take a few hundred milliseconds (an RSA key's consistency check), so it
runs in a worker thread. A stored credential is decrypted and loaded once per change: reading
it again only compares the stored ciphertext with the one already loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.cache import TTLCache
from pushgate.crypto import SecretBox
from pushgate.domain import credentials as kinds
from pushgate.domain.credentials import Credentials, Rules, VapidCredentials
from pushgate.domain.errors import NotFound
from pushgate.services.apps import owned_app_id
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import app_credentials, apps

# How long a process keeps using credentials it has read: a change made through another
# process is seen within this time (the process that makes it sees it at once).
CACHE_SECONDS = 5.0
MAX_LOADED = 10_000


@dataclass(frozen=True, slots=True)
class StoredCredential:
    platform: str
    public: dict[str, Any]
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class _Found:
    value: Credentials | None


class CredentialService:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        vapid_subject: str,
        token_hosts: Collection[str] = (),
    ) -> None:
        self._db = db
        self._box = box
        self._vapid_subject = vapid_subject
        self._rules = Rules(token_hosts=frozenset(token_hosts))
        self._cache: TTLCache[tuple[str, str], _Found] = TTLCache(CACHE_SECONDS)
        # The credential last loaded per (app, platform), with the ciphertext it came from.
        self._loaded: dict[tuple[str, str], tuple[str, Credentials]] = {}

    async def _app_id(self, conn: AsyncConnection, account_id: int, app_key: str) -> int:
        return await owned_app_id(conn, account_id, app_key)

    async def owner(self, app_key: str) -> int:
        """The account id of the app (for operators' tools that name only the app)."""
        async with self._db.read.connect() as conn:
            account_id = (
                await conn.execute(select(apps.c.account_id).where(apps.c.app_key == app_key))
            ).scalar()
        if account_id is None:
            raise NotFound(f"No app {app_key} (see `pushgate app list`)")
        return int(account_id)

    async def put(
        self, account_id: int, app_key: str, platform: str, raw: Any
    ) -> tuple[StoredCredential, bool]:
        """Check and store ``raw`` as the app's ``platform`` credential, replacing any earlier
        one. Returns it (public part) and whether it is new."""
        credential = await asyncio.to_thread(kinds.parse, platform, raw, self._rules)
        return await self._store(account_id, app_key, platform, credential)

    async def generate_vapid(
        self, account_id: int, app_key: str, subject: str | None
    ) -> tuple[StoredCredential, bool]:
        """A new VAPID key pair for the app. Subscriptions made with the old public key stop
        working: browsers must subscribe again."""
        credential = VapidCredentials.generate(subject or self._vapid_subject)
        return await self._store(account_id, app_key, "web", credential)

    def _values(self, credential: Credentials, now: int) -> dict[str, Any]:
        """The stored columns of ``credential``: the whole of it encrypted, its public part."""
        return {
            "secret_enc": self._box.encrypt(orjson.dumps(credential.secret()).decode()),
            "public": orjson.dumps(credential.public()).decode(),
            "updated_ms": now,
        }

    async def _store(
        self, account_id: int, app_key: str, platform: str, credential: Credentials
    ) -> tuple[StoredCredential, bool]:
        now = now_ms()
        values = self._values(credential, now)
        self._loaded[(app_key, platform)] = (values["secret_enc"], credential)
        async with self._db.writing() as conn:
            app_id = await self._app_id(conn, account_id, app_key)
            changed = await conn.execute(
                update(app_credentials)
                .where(app_credentials.c.app_id == app_id, app_credentials.c.platform == platform)
                .values(**values)
                .returning(app_credentials.c.created_ms)
            )
            existing = changed.scalar()
            created = existing is None
            if created:
                await conn.execute(
                    insert(app_credentials),
                    {"app_id": app_id, "platform": platform, "created_ms": now, **values},
                )
        self._cache.put((app_key, platform), _Found(credential))
        return (
            StoredCredential(platform, credential.public(), int(existing or now), now),
            created,
        )

    async def list(self, account_id: int, app_key: str) -> list[StoredCredential]:
        async with self._db.read.connect() as conn:
            app_id = await self._app_id(conn, account_id, app_key)
            rows = (
                await conn.execute(
                    select(app_credentials)
                    .where(app_credentials.c.app_id == app_id)
                    .order_by(app_credentials.c.platform)
                )
            ).all()
        return [
            StoredCredential(row.platform, orjson.loads(row.public), row.created_ms, row.updated_ms)
            for row in rows
        ]

    async def delete(self, account_id: int, app_key: str, platform: str) -> None:
        async with self._db.writing() as conn:
            app_id = await self._app_id(conn, account_id, app_key)
            result = await conn.execute(
                delete(app_credentials).where(
                    app_credentials.c.app_id == app_id, app_credentials.c.platform == platform
                )
            )
        self._cache.discard((app_key, platform))
        self._loaded.pop((app_key, platform), None)
        if not result.rowcount:
            raise NotFound(f"App {app_key} has no {platform} credentials")

    async def add_initial(self, conn: AsyncConnection, app_id: int) -> None:
        """Give a new app (in the transaction that creates it) a VAPID key pair with the
        configured subject."""
        credential = VapidCredentials.generate(self._vapid_subject)
        now = now_ms()
        await conn.execute(
            insert(app_credentials),
            {
                "app_id": app_id,
                "platform": "web",
                "created_ms": now,
                **self._values(credential, now),
            },
        )

    async def vapid_public_key(self, app_key: str) -> str:
        """The app's VAPID public key (base64url). Public by nature: browsers need it to
        subscribe. NotFound when the app has none (it was created before apps got one)."""
        found = await self.get(app_key, "web")
        if isinstance(found, VapidCredentials):
            return found.public_key
        async with self._db.read.connect() as conn:
            exists = (
                await conn.execute(select(apps.c.id).where(apps.c.app_key == app_key))
            ).first()
        if exists is None:
            raise NotFound(f"No app {app_key}")
        raise NotFound(
            f"App {app_key} has no Web Push key pair yet: create one with "
            f"POST /api/v1/apps/{app_key}/credentials/web/generate "
            "(or `pushgate credentials generate-vapid`)"
        )

    async def get(self, app_key: str | None, platform: str) -> Credentials | None:
        """The app's ``platform`` credential, decrypted (the transports' ``CredentialSource``).
        Cached for a few seconds, including "none"."""
        if app_key is None:
            return None
        cached = self._cache.get((app_key, platform))
        if cached is not None:
            return cached.value
        async with self._db.read.connect() as conn:
            secret = (
                await conn.execute(
                    select(app_credentials.c.secret_enc)
                    .join(apps, apps.c.id == app_credentials.c.app_id)
                    .where(apps.c.app_key == app_key, app_credentials.c.platform == platform)
                )
            ).scalar()
        value = None if secret is None else self._load(app_key, platform, secret)
        self._cache.put((app_key, platform), _Found(value))
        return value

    def _load(self, app_key: str, platform: str, secret_enc: str) -> Credentials:
        """The stored credential, loaded again only when it changed."""
        loaded = self._loaded.get((app_key, platform))
        if loaded is not None and loaded[0] == secret_enc:
            return loaded[1]
        value = kinds.from_secret(platform, orjson.loads(self._box.decrypt(secret_enc)))
        if len(self._loaded) >= MAX_LOADED:
            self._loaded.clear()
        self._loaded[(app_key, platform)] = (secret_enc, value)
        return value
