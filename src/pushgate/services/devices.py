"""Device registry: registration, device tokens, and the enabled devices of an account."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.cache import TTLCache
from pushgate.crypto import SecretBox, new_token
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import devices, subscribers

DEVICE_TOKEN_PREFIX = "dvt_"


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    account_id: int
    subscriber_id: int
    platform: str
    name: str | None
    language: str | None
    external_id: str | None
    enabled: bool
    disabled_reason: str | None
    created_ms: int
    last_seen_ms: int | None


@dataclass(frozen=True, slots=True)
class DeviceRegistration:
    platform: str
    name: str | None = None
    language: str | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    device: Device
    device_token: str


_device_columns = (
    devices.c.id,
    devices.c.account_id,
    devices.c.subscriber_id,
    devices.c.platform,
    devices.c.name,
    devices.c.language,
    subscribers.c.external_id,
    devices.c.enabled,
    devices.c.disabled_reason,
    devices.c.created_ms,
    devices.c.last_seen_ms,
)
_device_join = devices.join(subscribers, subscribers.c.id == devices.c.subscriber_id)


class DeviceService:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box
        self._enabled: TTLCache[int, tuple[int, ...]] = TTLCache(ttl_seconds=5)

    async def register(self, account_id: int, spec: DeviceRegistration) -> RegisteredDevice:
        token = new_token(24, DEVICE_TOKEN_PREFIX)
        created = now_ms()
        async with self._db.write.begin() as conn:
            subscriber_id = await self._subscriber_id(conn, account_id, spec.external_id, created)
            result = await conn.execute(
                insert(devices).returning(devices.c.id),
                {
                    "account_id": account_id,
                    "subscriber_id": subscriber_id,
                    "platform": spec.platform,
                    "name": spec.name,
                    "language": spec.language,
                    "token_hash": self._box.digest(token),
                    "enabled": True,
                    "disabled_reason": None,
                    "created_ms": created,
                    "last_seen_ms": None,
                },
            )
            device_id = int(result.scalar_one())
        self._enabled.discard(account_id)
        device = Device(
            device_id,
            account_id,
            subscriber_id,
            spec.platform,
            spec.name,
            spec.language,
            spec.external_id,
            True,
            None,
            created,
            None,
        )
        return RegisteredDevice(device, token)

    @staticmethod
    async def _subscriber_id(
        conn: AsyncConnection, account_id: int, external_id: str | None, created: int
    ) -> int:
        """The subscriber with this external id (created when new); a new anonymous
        subscriber when there is no external id."""
        by_external_id = select(subscribers.c.id).where(
            subscribers.c.account_id == account_id, subscribers.c.external_id == external_id
        )
        if external_id is not None:
            existing = (await conn.execute(by_external_id)).scalar()
            if existing is not None:
                return int(existing)
        try:
            async with conn.begin_nested():
                result = await conn.execute(
                    insert(subscribers).returning(subscribers.c.id),
                    {"account_id": account_id, "external_id": external_id, "created_ms": created},
                )
                return int(result.scalar_one())
        except IntegrityError:
            # Another registration created the same subscriber concurrently.
            return int((await conn.execute(by_external_id)).scalar_one())

    async def list(self, account_id: int) -> list[Device]:
        async with self._db.read.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_device_columns)
                    .select_from(_device_join)
                    .where(devices.c.account_id == account_id)
                    .order_by(devices.c.id)
                )
            ).all()
        return [Device(*row) for row in rows]

    async def authenticate(self, device_token: str | None) -> Device | None:
        if not device_token or not device_token.startswith(DEVICE_TOKEN_PREFIX):
            return None
        if len(device_token) > 128:
            return None
        digest = self._box.digest(device_token)
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(*_device_columns, devices.c.token_hash)
                    .select_from(_device_join)
                    .where(devices.c.token_hash == digest)
                )
            ).first()
        if row is None or not self._box.matches(device_token, row.token_hash):
            return None
        return Device(*row[:-1])

    async def enabled_device_ids(self, account_id: int) -> tuple[int, ...]:
        cached = self._enabled.get(account_id)
        if cached is not None:
            return cached
        async with self._db.read.connect() as conn:
            ids = tuple(
                int(device_id)
                for device_id in (
                    await conn.execute(
                        select(devices.c.id)
                        .where(devices.c.account_id == account_id, devices.c.enabled.is_(True))
                        .order_by(devices.c.id)
                    )
                ).scalars()
            )
        self._enabled.put(account_id, ids)
        return ids
