"""API keys: the credentials of the vendor faces (and of the native API, beside user tokens).

A key has one kind (``KINDS``), belongs to an app (or to the account, for faces that target
several apps), may be limited to client addresses (``ip_allowlist``, CIDRs) and has a request
quota per minute (``per_minute``; None: the face's default). It is shown once, when created;
Pushgate keeps it encrypted and finds it by an HMAC of it, compared in constant time.

``authenticate`` is every face's way in: the key must exist, be of the face's kind, not be
revoked, and the client's address must be allowed; then the request counts against the key's
quota. A process trusts what it read of a key for at most ``CACHE_SECONDS``, so a revocation
(or a changed allowlist) takes effect in every process within that time.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Row, insert, select, update

from pushgate.cache import TTLCache
from pushgate.crypto import SecretBox, new_token
from pushgate.domain.errors import Forbidden, InvalidInput, NotFound, TooManyRequests
from pushgate.egress import parse_networks
from pushgate.services.apps import App, owned_app_id
from pushgate.services.quotas import Quotas
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import api_keys, apps
from pushgate.web.timestamps import iso_ms

KINDS = ("native", "insider-mobile", "insider-web", "push-api-v2", "push-express", "browser")
# Kinds whose key belongs to one app, and kinds whose key acts for the whole account.
# A browser key is public (pages hold it): it only registers browsers (pushgate/browser).
APP_KINDS = ("insider-mobile", "insider-web", "push-api-v2", "browser")
ACCOUNT_KINDS = ("native", "push-express")
# Requests per minute when a key names no quota of its own: the vendors' documented limits.
DEFAULT_PER_MINUTE = {
    "native": 6000,
    "insider-mobile": 1000,
    "insider-web": 6000,
    "push-api-v2": 6000,
    "push-express": 6000,
    "browser": 600,
}
# A new key of these kinds allows only these addresses until it is edited (the vendor does).
DEFAULT_ALLOWLIST = {"insider-mobile": ("127.0.0.1/32",)}
KEY_PREFIX = "pgk_"
CACHE_SECONDS = 1.0
MAX_CIDRS = 100


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What may be shown of a key: never the key itself, but its last characters."""

    id: int
    account_id: int
    app_key: str | None
    kind: str
    name: str | None
    hint: str
    ip_allowlist: tuple[str, ...] | None
    per_minute: int | None
    created_ms: int
    revoked_ms: int | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: the account, the key's app (if any) and the key."""

    account_id: int
    app: App | None
    key_id: int
    kind: str


@dataclass(frozen=True, slots=True)
class _Stored:
    key: ApiKey
    app: App | None
    key_hash: str


@dataclass(frozen=True, slots=True)
class _Found:
    value: _Stored | None


def check_cidrs(values: Sequence[str]) -> tuple[str, ...]:
    if len(values) > MAX_CIDRS:
        raise InvalidInput(f"ip_allowlist holds at most {MAX_CIDRS} ranges")
    try:
        return tuple(str(network) for network in parse_networks(values))
    except ValueError as exc:
        raise InvalidInput(f"ip_allowlist: {exc}") from exc


def allowed(allowlist: Sequence[str] | None, address: str | None) -> bool:
    if allowlist is None:
        return True
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(cidr) for cidr in allowlist)


class ApiKeyService:
    def __init__(self, db: Database, box: SecretBox, quotas: Quotas) -> None:
        self._db = db
        self._box = box
        self._quotas = quotas
        self._cache: TTLCache[str, _Found] = TTLCache(CACHE_SECONDS)

    async def close(self) -> None:
        await self._quotas.close()

    async def create(
        self,
        account_id: int,
        kind: str,
        *,
        app_key: str | None = None,
        name: str | None = None,
        ip_allowlist: Sequence[str] | None = None,
        per_minute: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key; returns it and the key itself (shown this once)."""
        if kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
        if kind in APP_KINDS and app_key is None:
            raise InvalidInput(f"a {kind} key belongs to an app: give its app_id")
        if kind in ACCOUNT_KINDS and app_key is not None:
            raise InvalidInput(f"a {kind} key acts for the whole account: leave app_id out")
        _check_name(name)
        _check_quota(per_minute)
        cidrs = (
            check_cidrs(ip_allowlist) if ip_allowlist is not None else DEFAULT_ALLOWLIST.get(kind)
        )
        secret = new_token(24, KEY_PREFIX)
        now = now_ms()
        async with self._db.writing() as conn:
            app_id = None
            if app_key is not None:
                app_id = await owned_app_id(conn, account_id, app_key)
            result = await conn.execute(
                insert(api_keys).returning(api_keys.c.id),
                {
                    "account_id": account_id,
                    "app_id": app_id,
                    "kind": kind,
                    "name": name,
                    "key_hash": self._box.digest(secret),
                    "key_enc": self._box.encrypt(secret),
                    "key_hint": secret[-4:],
                    "ip_allowlist": None if cidrs is None else orjson.dumps(cidrs).decode(),
                    "per_minute": per_minute,
                    "created_ms": now,
                    "updated_ms": now,
                },
            )
            key_id = int(result.scalar_one())
        return (
            ApiKey(
                key_id, account_id, app_key, kind, name, secret[-4:], cidrs, per_minute, now, None
            ),
            secret,
        )

    async def list(self, account_id: int, app_key: str | None = None) -> list[ApiKey]:
        query = (
            select(api_keys, apps.c.app_key)
            .select_from(api_keys.outerjoin(apps, apps.c.id == api_keys.c.app_id))
            .where(api_keys.c.account_id == account_id)
            .order_by(api_keys.c.id)
        )
        if app_key is not None:
            query = query.where(apps.c.app_key == app_key)
        async with self._db.read.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_key(row) for row in rows]

    async def update(
        self,
        account_id: int,
        key_id: int,
        *,
        name: str | None = None,
        ip_allowlist: Sequence[str] | None = None,
        any_address: bool = False,
        per_minute: int | None = None,
        default_quota: bool = False,
    ) -> ApiKey:
        """Change a key's name, allowlist (``any_address``: drop it) or quota
        (``default_quota``: the face's default)."""
        values: dict[str, object] = {"updated_ms": now_ms()}
        if name is not None:
            _check_name(name)
            values["name"] = name
        if any_address:
            values["ip_allowlist"] = None
        elif ip_allowlist is not None:
            values["ip_allowlist"] = orjson.dumps(check_cidrs(ip_allowlist)).decode()
        if default_quota:
            values["per_minute"] = None
        elif per_minute is not None:
            _check_quota(per_minute)
            values["per_minute"] = per_minute
        async with self._db.writing() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.account_id == account_id)
                .values(**values)
                .returning(api_keys.c.key_hash)
            )
            digest = result.scalar()
        if digest is None:
            raise NotFound(f"No API key {key_id} in this account")
        self._cache.discard(digest)
        return await self._one(account_id, key_id)

    async def revoke(self, account_id: int, key_id: int) -> ApiKey:
        """The key stops working (in every process within ``CACHE_SECONDS``)."""
        async with self._db.writing() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.account_id == account_id,
                    api_keys.c.revoked_ms.is_(None),
                )
                .values(revoked_ms=now_ms(), updated_ms=now_ms())
                .returning(api_keys.c.key_hash)
            )
            digest = result.scalar()
        if digest is not None:
            self._cache.discard(digest)
        return await self._one(account_id, key_id)

    async def _one(self, account_id: int, key_id: int) -> ApiKey:
        for key in await self.list(account_id):
            if key.id == key_id:
                return key
        raise NotFound(f"No API key {key_id} in this account")

    async def authenticate(
        self, kind: str, presented: str | None, address: str | None
    ) -> Principal | None:
        """The principal of a valid, unrevoked key of ``kind``: None when there is none;
        ``Forbidden`` when the client's address is not on the key's allowlist;
        ``TooManyRequests`` past the key's quota."""
        if not presented or len(presented) > 256:
            return None
        digest = self._box.digest(presented)
        found = self._cache.get(digest)
        if found is None:
            found = _Found(await self._read(digest))
            self._cache.put(digest, found)
        stored = found.value
        # The digest found the row; compared again in constant time (``SecretBox.matches``
        # would hash the presented key a second time).
        if stored is None or not hmac.compare_digest(digest, stored.key_hash):
            return None
        key = stored.key
        if key.kind != kind or key.revoked_ms is not None:
            return None
        if not allowed(key.ip_allowlist, address):
            raise Forbidden(
                f"This API key may not be used from {address}: add the address to the key's "
                "IP allowlist"
            )
        limit = key.per_minute or DEFAULT_PER_MINUTE[kind]
        wait = await self._quotas.hit(f"key:{key.id}", limit)
        if wait is not None:
            raise TooManyRequests(
                f"This API key's quota of {limit} requests per minute is used up: try again "
                f"in {wait} s",
                retry_after=wait,
            )
        return Principal(key.account_id, stored.app, key.id, key.kind)

    async def _read(self, digest: str) -> _Stored | None:
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys, apps.c.app_key, apps.c.title)
                    .select_from(api_keys.outerjoin(apps, apps.c.id == api_keys.c.app_id))
                    .where(api_keys.c.key_hash == digest)
                )
            ).first()
        if row is None:
            return None
        app = None
        if row.app_id is not None:
            app = App(int(row.app_id), int(row.account_id), row.title, row.app_key)
        return _Stored(_key(row), app, row.key_hash)


def _key(row: Row[Any]) -> ApiKey:
    m = row._mapping
    cidrs = m["ip_allowlist"]
    return ApiKey(
        id=int(m["id"]),
        account_id=int(m["account_id"]),
        app_key=m["app_key"],
        kind=m["kind"],
        name=m["name"],
        hint=m["key_hint"],
        ip_allowlist=None if cidrs is None else tuple(orjson.loads(cidrs)),
        per_minute=m["per_minute"],
        created_ms=int(m["created_ms"]),
        revoked_ms=m["revoked_ms"],
    )


def _check_name(name: str | None) -> None:
    if name is not None and (not 0 < len(name) <= 200 or "\x00" in name):
        raise InvalidInput("name must be 1 to 200 characters")


def _check_quota(per_minute: int | None) -> None:
    if per_minute is not None and not 1 <= per_minute <= 10_000_000:
        raise InvalidInput("per_minute must be a whole number from 1 to 10000000")


def key_record(key: ApiKey) -> dict[str, Any]:
    """What the API and the CLI show of a key (never the key itself): its id, kind, app,
    name, last 4 characters, allowlist, quota, the ids the faces need (Push API v2's
    ``company_id``, Insider web's ``partner_id``: the account's), and its times."""
    return {
        "id": key.id,
        "kind": key.kind,
        "app_id": key.app_key,
        "name": key.name,
        "hint": key.hint,
        "ip_allowlist": None if key.ip_allowlist is None else list(key.ip_allowlist),
        "per_minute": key.per_minute,
        "company_id": key.account_id,
        "partner_id": str(key.account_id),
        "created_at": iso_ms(key.created_ms),
        "revoked_at": iso_ms(key.revoked_ms) if key.revoked_ms else None,
    }
