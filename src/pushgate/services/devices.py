"""Device registry: registration of every platform in its app's scope, device tokens,
disabling, and provider addresses for the transports.

A device belongs to an app (``app_id``): iOS, Android, Huawei and web devices always (the
app's provider credentials reach them), channel devices when registered with one. A channel
device registered without an app is a **personal** device of the account (``pushgate
listen``): it receives every app of the account, as Instapush's own app did.

A device is owned by a subscriber of its scope, found by its identifiers (see
``services/subscribers.py``). A push device is found again by its provider address within its
app: registering the same address again updates that device (and enables it again) instead
of adding a second one.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.crypto import SecretBox, new_token
from pushgate.domain import addresses
from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.domain.subscribers import STANDARD, Identifiers, parse_identifiers
from pushgate.egress import EgressPolicy, EgressRefused
from pushgate.services.apps import owned_app_id
from pushgate.services.subscribers import Scope, lock, resolve
from pushgate.storage.database import Database, now_ms
from pushgate.storage.delivery_writes import DeliveryWrites
from pushgate.storage.models import apps, devices, subscribers

DEVICE_TOKEN_PREFIX = "dvt_"
DISABLED_REASON_MAX = 200
ADDRESS_CHUNK = 500
DEFAULT_MAX_PER_SUBSCRIBER = 100


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
    # The app's public id (appID); None for a personal (account-wide) channel device.
    app_key: str | None = None
    user_id: str | None = None
    country: str | None = None
    model: str | None = None
    os_version: str | None = None
    app_version: str | None = None
    last_active_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceRegistration:
    """What a client sent; ``register`` validates and normalizes every field."""

    platform: str
    # The app (its appID): required for push platforms; without it a channel device is a
    # personal device of the account.
    app_key: str | None = None
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
    user_id: str | None = None
    country: str | None = None
    model: str | None = None
    os_version: str | None = None
    app_version: str | None = None
    # More identifiers, custom keys included (``INSIDER.`` prefixes accepted).
    identifiers: Mapping[str, object] | None = None


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
    apps.c.app_key,
    subscribers.c.user_id,
    devices.c.country,
    devices.c.model,
    devices.c.os_version,
    devices.c.app_version,
    devices.c.last_active_ms,
)
_device_join = devices.join(subscribers, subscribers.c.id == devices.c.subscriber_id).outerjoin(
    apps, apps.c.id == devices.c.app_id
)


_AUTHENTICATE = (
    select(*_device_columns, devices.c.token_hash)
    .select_from(_device_join)
    .where(devices.c.token_hash == bindparam("token_hash"))
)
_AUTHENTICATE_SQLITE = str(_AUTHENTICATE.compile(dialect=sqlite.dialect()))
_ENABLED = _device_columns.index(devices.c.enabled)


def _typed_device_row(raw: Sequence[Any]) -> list[Any]:
    """A raw SQLite row of ``_AUTHENTICATE`` as SQLAlchemy types it (only ``enabled``, a
    Boolean stored as 0/1, differs)."""
    row = list(raw)
    row[_ENABLED] = bool(row[_ENABLED])
    return row


def _identifiers(spec: DeviceRegistration) -> Identifiers:
    """The owner's identifiers: the registration's own fields (named so in messages) over
    those of its ``identifiers`` object."""
    more = parse_identifiers(spec.identifiers or {}, field="identifiers")
    fields = {name: getattr(spec, name) for name in STANDARD}
    own = parse_identifiers({k: v for k, v in fields.items() if v is not None}, field="")
    return replace(
        own,
        **{k: v for k, v in more.standard().items() if k not in own.standard()},
        custom=more.custom,
    )


def _optional_text(value: str | None, field: str, limit: int) -> str | None:
    if value is not None and (not value or len(value) > limit or "\x00" in value):
        raise InvalidInput(f"{field} must be 1 to {limit} characters")
    return value


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

    # -- registration ------------------------------------------------------------------

    async def register(self, account_id: int, spec: DeviceRegistration) -> RegisteredDevice:
        """Register a device, or update the app's device with the same provider address
        (then ``created`` is False). Raises ``InvalidInput`` naming the field to fix."""
        if spec.app_key is None and spec.platform != "channel":
            raise InvalidInput(
                f"app_id is required for platform {spec.platform}: the app whose provider "
                "credentials reach the device (the id `apps/add` answered)"
            )
        address = addresses.push_address(spec.platform, spec.token, spec.subscription)
        identifiers = _identifiers(spec)
        profile: dict[str, Any] = {
            "name": _optional_text(spec.name, "name", 200),
            "language": addresses.optional(addresses.language_tag, spec.language, "language"),
            "country": addresses.optional(addresses.country_code, spec.country, "country"),
            "timezone": addresses.optional(addresses.timezone_name, spec.timezone, "timezone"),
            "model": _optional_text(spec.model, "model", 100),
            "os_version": _optional_text(spec.os_version, "os_version", 50),
            "app_version": _optional_text(spec.app_version, "app_version", 50),
        }
        key = None if address is None else addresses.address_key(spec.platform, address)
        if spec.platform == "web" and key is not None and self._egress is not None:
            try:
                await self._egress.check_url(key)
            except EgressRefused as exc:
                raise InvalidInput(f"subscription.endpoint is refused: {exc}") from exc
        address_hash = None if key is None else self._box.digest(key)
        token = new_token(24, DEVICE_TOKEN_PREFIX)
        now = now_ms()
        async with self._db.writing() as conn:
            app_id = await self._app_id(conn, account_id, spec.app_key)
            scope = Scope(account_id, app_id)
            extra = () if address_hash is None else (f"{spec.platform}:{address_hash}",)
            await lock(self._db, conn, scope, identifiers, *extra)
            existing = None
            if address_hash is not None:
                existing = (
                    await conn.execute(
                        select(devices.c.id, devices.c.subscriber_id).where(
                            devices.c.app_id == app_id,
                            devices.c.platform == spec.platform,
                            devices.c.push_token_hash == address_hash,
                        )
                    )
                ).first()
            subscriber_id, _created = await resolve(
                conn, scope, identifiers, now, None if existing is None else int(existing[1])
            )
            device_id = None if existing is None else int(existing[0])
            await self._check_room(conn, subscriber_id, device_id)
            values: dict[str, Any] = {
                "subscriber_id": subscriber_id,
                "token_hash": self._box.digest(token),
                "last_active_ms": now,
            }
            if address is not None:
                values["push_token_enc"] = self._box.encrypt(address)
                values["push_token_hash"] = address_hash
            if device_id is not None:
                values.update(enabled=True, disabled_reason=None, last_seen_ms=now)
                # What this registration leaves out stays as it was.
                values.update({k: v for k, v in profile.items() if v is not None})
                await conn.execute(update(devices).where(devices.c.id == device_id), values)
            else:
                values.update(
                    account_id=account_id,
                    app_id=app_id,
                    platform=spec.platform,
                    enabled=True,
                    disabled_reason=None,
                    created_ms=now,
                    last_seen_ms=None,
                    **profile,
                )
                result = await conn.execute(insert(devices).returning(devices.c.id), values)
                device_id = int(result.scalar_one())
            await conn.execute(
                update(subscribers)
                .where(subscribers.c.id == subscriber_id)
                .values(last_active_ms=now)
            )
            row = (
                await conn.execute(
                    select(*_device_columns)
                    .select_from(_device_join)
                    .where(devices.c.id == device_id)
                )
            ).one()
        return RegisteredDevice(self._device(row), token, created=existing is None)

    @staticmethod
    async def _app_id(conn: AsyncConnection, account_id: int, app_key: str | None) -> int | None:
        if app_key is None:
            return None
        return await owned_app_id(
            conn, account_id, app_key, " (GET /v1/apps/list lists the account's apps)"
        )

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
            app_key,
            user_id,
            country,
            model,
            os_version,
            app_version,
            last_active_ms,
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
            app_key=app_key,
            user_id=user_id,
            country=country,
            model=model,
            os_version=os_version,
            app_version=app_version,
            last_active_ms=last_active_ms,
        )

    async def list(self, account_id: int, app_key: str | None = None) -> list[Device]:
        """The account's devices (of one app, when given)."""
        query = (
            select(*_device_columns)
            .select_from(_device_join)
            .where(devices.c.account_id == account_id)
            .order_by(devices.c.id)
        )
        if app_key is not None:
            query = query.where(apps.c.app_key == app_key)
        async with self._db.read.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [self._device(row) for row in rows]

    async def authenticate(self, device_token: str | None) -> Device | None:
        if not device_token or not device_token.startswith(DEVICE_TOKEN_PREFIX):
            return None
        if len(device_token) > 128:
            return None
        digest = self._box.digest(device_token)
        row: Sequence[Any] | None
        if self._db.is_sqlite:  # every channel (re)connection comes here: one thread trip
            rows = await self._db.read_once(_AUTHENTICATE_SQLITE, (digest,))
            row = None if not rows else _typed_device_row(rows[0])
        else:
            async with self._db.read.connect() as conn:
                row = (await conn.execute(_AUTHENTICATE, {"token_hash": digest})).first()
        if row is None or not self._box.matches(device_token, row[-1]):
            return None
        return self._device(row[:-1])

    async def addresses(self, device_ids: Iterable[int]) -> dict[int, DeviceAddress]:
        """Platform, decrypted provider address, language and time zone of each of these
        devices that exists (disabled ones too: see ``enabled``)."""
        async with self._db.read.connect() as conn:
            rows = await self.address_rows(conn, device_ids)
        return self.decode_addresses(rows)

    async def address_rows(
        self, conn: AsyncConnection, device_ids: Iterable[int]
    ) -> builtins.list[Any]:
        """The stored rows ``decode_addresses`` makes addresses of, read on ``conn`` (the push
        delivery reads them in its claim's transaction, and decrypts them after it). Plain
        SQL: it runs once per push job."""
        wanted = sorted(set(device_ids))
        writes = DeliveryWrites(self._db.read.dialect.name)
        rows: builtins.list[Any] = []
        for chunk in _chunks(wanted, ADDRESS_CHUNK):
            rows += await writes.device_addresses(conn, chunk)
        return rows

    def decode_addresses(self, rows: Iterable[Any]) -> dict[int, DeviceAddress]:
        decrypt = self._box.decrypt
        return {
            id_: DeviceAddress(
                id_,
                account_id,
                platform,
                None if token is None else decrypt(token),
                language,
                timezone,
                bool(enabled),
            )
            for id_, account_id, platform, token, language, timezone, enabled in rows
        }

    # -- disabling ---------------------------------------------------------------------

    async def disable(self, device_id: int, reason: str) -> bool:
        """Disable a device and say why (e.g. the provider reported its token invalid): the
        one place that does it. False when there is no such enabled device."""
        async with self._db.writing() as conn:
            account_id = (
                await conn.execute(
                    update(devices)
                    .where(devices.c.id == device_id, devices.c.enabled.is_(True))
                    .values(enabled=False, disabled_reason=reason[:DISABLED_REASON_MAX])
                    .returning(devices.c.account_id)
                )
            ).scalar()
        return account_id is not None

    async def set_enabled(
        self, account_id: int, device_id: int, enabled: bool, reason: str = "disabled by its owner"
    ) -> Device:
        """Enable or disable one of the account's devices (by hand, e.g. from the dashboard);
        enabling clears the reason, and is a Conflict when its subscriber already has as many
        enabled devices as allowed. NotFound for another account's device."""
        values: dict[str, object] = {"enabled": enabled}
        values["disabled_reason"] = None if enabled else reason[:DISABLED_REASON_MAX]
        async with self._db.writing() as conn:
            subscriber_id = (
                await conn.execute(
                    select(devices.c.subscriber_id).where(
                        devices.c.id == device_id, devices.c.account_id == account_id
                    )
                )
            ).scalar()
            if subscriber_id is None:
                raise NotFound(f"No device {device_id} in this account")
            if enabled:
                await self._check_room(conn, subscriber_id, device_id)
            await conn.execute(update(devices).where(devices.c.id == device_id).values(**values))
        return await self.get(account_id, device_id)

    async def get(self, account_id: int, device_id: int) -> Device:
        """One of the account's devices; NotFound for another account's."""
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(*_device_columns)
                    .select_from(_device_join)
                    .where(devices.c.id == device_id, devices.c.account_id == account_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"No device {device_id} in this account")
        return self._device(row)

    async def of_subscriber(self, account_id: int, subscriber_id: int) -> builtins.list[Device]:
        """The devices of one of the account's subscribers."""
        async with self._db.read.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_device_columns)
                    .select_from(_device_join)
                    .where(
                        devices.c.subscriber_id == subscriber_id,
                        devices.c.account_id == account_id,
                    )
                    .order_by(devices.c.id)
                )
            ).all()
        return [self._device(row) for row in rows]


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
