"""Device registry: registration of every platform, device tokens, disabling, provider
addresses for the transports, and the enabled devices of an account.

A device is owned by a subscriber, found by its identifiers (external id, uuid, e-mail, phone
number: the first given one that matches). A push device (ios, android, huawei, web) is found
again by its provider address: registering the same address again updates that device (and
enables it again) instead of adding a second one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.cache import TTLCache
from pushgate.crypto import SecretBox, new_token
from pushgate.domain import addresses
from pushgate.domain.errors import Conflict, InvalidInput
from pushgate.egress import EgressPolicy, EgressRefused
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import devices, subscribers

DEVICE_TOKEN_PREFIX = "dvt_"
DISABLED_REASON_MAX = 200
ADDRESS_CHUNK = 500
DEFAULT_MAX_PER_SUBSCRIBER = 100

# Identifier columns of a subscriber in the order they find one.
IDENTIFIERS = ("external_id", "uuid", "email", "phone_number")


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
    timezone: str | None = None
    email: str | None = None
    phone_number: str | None = None
    uuid: str | None = None
    # What may be shown of the provider address (see ``addresses.address_hint``).
    address_hint: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceRegistration:
    """What a client sent; ``register`` validates and normalizes every field."""

    platform: str
    name: str | None = None
    language: str | None = None
    external_id: str | None = None
    timezone: str | None = None
    # The provider address: ``token`` for ios/android/huawei, ``subscription`` for web.
    token: object = None
    subscription: object = None
    email: str | None = None
    phone_number: str | None = None
    uuid: str | None = None


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    device: Device
    device_token: str
    # False when an existing device with the same provider address was updated.
    created: bool = True


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    """Where and how a transport reaches a device."""

    device_id: int
    account_id: int
    platform: str
    # The provider address (token, or web push subscription JSON); None for channel devices.
    address: str | None
    language: str | None
    timezone: str | None
    enabled: bool


@dataclass(frozen=True, slots=True)
class _Identifiers:
    external_id: str | None = None
    uuid: str | None = None
    email: str | None = None
    phone_number: str | None = None

    def given(self) -> dict[str, str]:
        """The identifiers present, in the order they find a subscriber."""
        values = {name: getattr(self, name) for name in IDENTIFIERS}
        return {name: value for name, value in values.items() if value is not None}


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
    devices.c.timezone,
    subscribers.c.email,
    subscribers.c.phone_number,
    subscribers.c.uuid,
    devices.c.push_token_enc,
)
_device_join = devices.join(subscribers, subscribers.c.id == devices.c.subscriber_id)


def _lock_key(account_id: int, kind: str, value: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key."""
    digest = hashlib.blake2b(f"{account_id}\x00{kind}\x00{value}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class DeviceService:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        egress: EgressPolicy | None = None,
        max_per_subscriber: int = DEFAULT_MAX_PER_SUBSCRIBER,
    ) -> None:
        """``egress``: the policy a Web Push endpoint must pass when it is registered (none:
        not checked here; the transport checks it again when it connects)."""
        self._db = db
        self._box = box
        self._egress = egress
        self._max_per_subscriber = max_per_subscriber
        self._enabled: TTLCache[int, tuple[int, ...]] = TTLCache(ttl_seconds=5)

    # -- registration ------------------------------------------------------------------

    async def register(self, account_id: int, spec: DeviceRegistration) -> RegisteredDevice:
        """Register a device, or update the account's device with the same provider address
        (then ``created`` is False). Raises ``InvalidInput`` naming the field to fix."""
        address = addresses.push_address(spec.platform, spec.token, spec.subscription)
        identifiers = _Identifiers(
            external_id=addresses.optional(addresses.external_id, spec.external_id, "external_id"),
            uuid=addresses.optional(addresses.subscriber_uuid, spec.uuid, "uuid"),
            email=addresses.optional(addresses.email_address, spec.email, "email"),
            phone_number=addresses.optional(
                addresses.phone_number, spec.phone_number, "phone_number"
            ),
        )
        timezone = addresses.optional(addresses.timezone_name, spec.timezone, "timezone")
        key = None if address is None else addresses.address_key(spec.platform, address)
        if spec.platform == "web" and key is not None and self._egress is not None:
            try:
                await self._egress.check_url(key)
            except EgressRefused as exc:
                raise InvalidInput(f"subscription.endpoint is refused: {exc}") from exc
        address_hash = None if key is None else self._box.digest(key)
        token = new_token(24, DEVICE_TOKEN_PREFIX)
        now = now_ms()
        async with self._db.write.begin() as conn:
            await self._lock(conn, account_id, address_hash, identifiers)
            existing = None
            if address_hash is not None:
                existing = (
                    await conn.execute(
                        select(devices.c.id, devices.c.subscriber_id)
                        .where(
                            devices.c.account_id == account_id,
                            devices.c.platform == spec.platform,
                            devices.c.push_token_hash == address_hash,
                        )
                        .order_by(devices.c.id)
                        .limit(1)
                    )
                ).first()
            subscriber_id = await self._subscriber_id(
                conn, account_id, identifiers, now, None if existing is None else existing[1]
            )
            await self._check_room(
                conn, subscriber_id, None if existing is None else int(existing[0])
            )
            values: dict[str, Any] = {
                "subscriber_id": subscriber_id,
                "token_hash": self._box.digest(token),
            }
            if address is not None:
                values["push_token_enc"] = self._box.encrypt(address)
                values["push_token_hash"] = address_hash
            if existing is not None:
                device_id = int(existing[0])
                values.update(enabled=True, disabled_reason=None, last_seen_ms=now)
                # What this registration leaves out stays as it was.
                for column, value in (
                    ("name", spec.name),
                    ("language", spec.language),
                    ("timezone", timezone),
                ):
                    if value is not None:
                        values[column] = value
                await conn.execute(update(devices).where(devices.c.id == device_id), values)
            else:
                values.update(
                    account_id=account_id,
                    platform=spec.platform,
                    name=spec.name,
                    language=spec.language,
                    timezone=timezone,
                    enabled=True,
                    disabled_reason=None,
                    created_ms=now,
                    last_seen_ms=None,
                )
                result = await conn.execute(insert(devices).returning(devices.c.id), values)
                device_id = int(result.scalar_one())
            row = (
                await conn.execute(
                    select(*_device_columns)
                    .select_from(_device_join)
                    .where(devices.c.id == device_id)
                )
            ).one()
        self._enabled.discard(account_id)
        return RegisteredDevice(self._device(row), token, created=existing is None)

    async def _lock(
        self,
        conn: AsyncConnection,
        account_id: int,
        address_hash: str | None,
        identifiers: _Identifiers,
    ) -> None:
        """Serialize registrations that could find or create the same device or subscriber.

        SQLite write transactions are serialized already (``BEGIN IMMEDIATE``); PostgreSQL
        takes a transaction-scoped advisory lock per address and identifier, in one order."""
        if self._db.is_sqlite:
            return
        keys = {_lock_key(account_id, name, value) for name, value in identifiers.given().items()}
        if address_hash is not None:
            keys.add(_lock_key(account_id, "address", address_hash))
        for key in sorted(keys):
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    async def _check_room(
        self, conn: AsyncConnection, subscriber_id: int, device_id: int | None
    ) -> None:
        """Conflict when the subscriber already has as many enabled devices as allowed
        (not counting ``device_id``, the device being registered again)."""
        query = select(func.count()).where(
            devices.c.subscriber_id == subscriber_id, devices.c.enabled.is_(True)
        )
        if device_id is not None:
            query = query.where(devices.c.id != device_id)
        count = int((await conn.execute(query)).scalar_one())
        if count >= self._max_per_subscriber:
            raise Conflict(
                f"This subscriber already has {count} enabled devices, the most allowed "
                f"(setting max_devices_per_subscriber is {self._max_per_subscriber}): register "
                "the device for another subscriber, or let old devices be disabled first"
            )

    @staticmethod
    async def _subscriber_id(
        conn: AsyncConnection,
        account_id: int,
        identifiers: _Identifiers,
        now: int,
        current: int | None,
    ) -> int:
        """The subscriber these identifiers name: the first given identifier that matches one
        of the account's subscribers finds it, and it gets the identifiers it lacks. None
        matching: the device's ``current`` subscriber when it is anonymous (or when nothing
        identifies the owner), else a new subscriber."""
        given = identifiers.given()
        if not given and current is not None:
            return current
        columns = [subscribers.c.id, *(subscribers.c[name] for name in IDENTIFIERS)]
        for name, value in given.items():
            found = (
                await conn.execute(
                    select(*columns)
                    .where(subscribers.c.account_id == account_id, subscribers.c[name] == value)
                    .order_by(subscribers.c.id)
                    .limit(1)
                )
            ).first()
            if found is not None:
                await _fill_identifiers(conn, found, given)
                return int(found.id)
        if current is not None:
            owner = (await conn.execute(select(*columns).where(subscribers.c.id == current))).one()
            if all(getattr(owner, name) is None for name in IDENTIFIERS):
                await _fill_identifiers(conn, owner, given)
                return current
        result = await conn.execute(
            insert(subscribers).returning(subscribers.c.id),
            {"account_id": account_id, **dict.fromkeys(IDENTIFIERS), **given, "created_ms": now},
        )
        return int(result.scalar_one())

    # -- reading -----------------------------------------------------------------------

    def _device(self, row: Sequence[Any]) -> Device:
        """A ``Device`` from a row of ``_device_columns``."""
        (
            device_id,
            account_id,
            subscriber_id,
            platform,
            name,
            language,
            external_id,
            enabled,
            disabled_reason,
            created_ms,
            last_seen_ms,
            timezone,
            email,
            phone_number,
            uuid,
            push_token_enc,
        ) = row
        address = None if push_token_enc is None else self._box.decrypt(push_token_enc)
        return Device(
            id=device_id,
            account_id=account_id,
            subscriber_id=subscriber_id,
            platform=platform,
            name=name,
            language=language,
            external_id=external_id,
            enabled=enabled,
            disabled_reason=disabled_reason,
            created_ms=created_ms,
            last_seen_ms=last_seen_ms,
            timezone=timezone,
            email=email,
            phone_number=phone_number,
            uuid=uuid,
            address_hint=addresses.address_hint(platform, address),
        )

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
        return [self._device(row) for row in rows]

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
        return self._device(row[:-1])

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

    async def addresses(self, device_ids: Iterable[int]) -> dict[int, DeviceAddress]:
        """Platform, decrypted provider address, language and time zone of each of these
        devices that exists (disabled ones too: see ``enabled``)."""
        wanted = sorted(set(device_ids))
        found: dict[int, DeviceAddress] = {}
        for chunk in _chunks(wanted, ADDRESS_CHUNK):
            async with self._db.read.connect() as conn:
                rows = (
                    await conn.execute(
                        select(
                            devices.c.id,
                            devices.c.account_id,
                            devices.c.platform,
                            devices.c.push_token_enc,
                            devices.c.language,
                            devices.c.timezone,
                            devices.c.enabled,
                        ).where(devices.c.id.in_(chunk))
                    )
                ).all()
            for row in rows:
                found[row.id] = DeviceAddress(
                    device_id=row.id,
                    account_id=row.account_id,
                    platform=row.platform,
                    address=(
                        None
                        if row.push_token_enc is None
                        else self._box.decrypt(row.push_token_enc)
                    ),
                    language=row.language,
                    timezone=row.timezone,
                    enabled=bool(row.enabled),
                )
        return found

    # -- disabling ---------------------------------------------------------------------

    async def disable(self, device_id: int, reason: str) -> bool:
        """Disable a device and say why (e.g. the provider reported its token invalid): the
        one place that does it. False when there is no such enabled device."""
        async with self._db.write.begin() as conn:
            account_id = (
                await conn.execute(
                    update(devices)
                    .where(devices.c.id == device_id, devices.c.enabled.is_(True))
                    .values(enabled=False, disabled_reason=reason[:DISABLED_REASON_MAX])
                    .returning(devices.c.account_id)
                )
            ).scalar()
        if account_id is None:
            return False
        self._enabled.discard(int(account_id))
        return True


async def _fill_identifiers(conn: AsyncConnection, row: Row[Any], given: dict[str, str]) -> None:
    """Give the subscriber in ``row`` those of the ``given`` identifiers it lacks."""
    missing = {name: value for name, value in given.items() if getattr(row, name) is None}
    if missing:
        await conn.execute(update(subscribers).where(subscribers.c.id == row.id).values(**missing))


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
