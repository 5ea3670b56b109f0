"""Sends to single users: each notification of a batch goes to one subscriber's last active
device, and the caller learns at once what became of each (Insider's per-user result classes).

For each item, in order of the checks:

- ``no_user``: its identifiers name none of the app's subscribers;
- ``opted_out``: the subscriber withdrew push opt-in;
- ``unregistered``: the subscriber has no enabled device of the app (none registered, or all
  disabled by the provider's answers or by hand);
- ``capped``: the app's frequency cap (notifications per subscriber per day) is reached;
- ``invalid_certificate``: the app has no provider credentials for the platform of the
  device it would use (the device channel needs none);
- ``sent``: the notification is stored (its id), for that subscriber's last active device.

The checks read the state at accept time; the fan-out applies the same rules again when it
makes the delivery (a device that became active since then is the one used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.audience import one_user
from pushgate.domain.errors import Conflict
from pushgate.domain.subscribers import STANDARD, Identifiers
from pushgate.services.apps import App, AppService
from pushgate.services.credentials import CredentialService
from pushgate.services.send import SendCommand, SendService
from pushgate.services.subscribers import Scope, find_many
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import deliveries, devices, notifications, subscribers

Outcome = Literal["sent", "no_user", "opted_out", "unregistered", "capped", "invalid_certificate"]
PROVIDER_PLATFORMS = ("ios", "android", "huawei", "web")
DAY_MS = 86_400_000
LIVE = ("queued", "sent", "delivered", "opened")


@dataclass(frozen=True, slots=True)
class UserSend:
    """One notification for the subscriber ``identifiers`` name; ``command`` says what it is
    (its audience is set here)."""

    identifiers: Identifiers
    command: SendCommand


@dataclass(frozen=True, slots=True)
class TargetDevice:
    id: int
    platform: str


@dataclass(frozen=True, slots=True)
class UserSendResult:
    outcome: Outcome
    subscriber_id: int | None = None
    device: TargetDevice | None = None
    notification_id: int | None = None


@dataclass(frozen=True, slots=True)
class UserTarget:
    """The subscriber some identifiers name (None: nobody), its identifiers, and how many of
    its devices a send would reach now (its enabled devices of the app; none when it
    withdrew push opt-in)."""

    subscriber_id: int | None
    devices: int = 0
    identifiers: dict[str, str] = field(default_factory=dict)


class UserSendService:
    def __init__(
        self, db: Database, apps: AppService, credentials: CredentialService, send: SendService
    ) -> None:
        self._db = db
        self._apps = apps
        self._credentials = credentials
        self._send = send

    async def target(self, app: App, identifiers: Identifiers) -> UserTarget:
        """Who ``identifiers`` name among the app's subscribers (``Conflict`` when they name
        different ones). One query for standard identifiers."""
        scope = Scope(app.account_id, app.id)
        count = (
            select(func.count())
            .where(
                devices.c.subscriber_id == subscribers.c.id,
                devices.c.app_id == app.id,
                devices.c.enabled.is_(True),
            )
            .scalar_subquery()
        )
        columns = [subscribers.c.id, subscribers.c.optin_push, count.label("devices")]
        columns += [subscribers.c[name] for name in STANDARD]
        async with self._db.read.connect() as conn:
            if identifiers.custom:
                (found,) = await find_many(conn, scope, [identifiers])
                if found is None:
                    return UserTarget(None)
                condition = subscribers.c.id == found
            else:
                condition = or_(
                    *(
                        subscribers.c[name] == value
                        for name, value in identifiers.standard().items()
                    )
                )
            rows = (await conn.execute(select(*columns).where(scope.where(), condition))).all()
        if not rows:
            return UserTarget(None)
        if len(rows) > 1:
            raise Conflict(
                "The identifiers name different subscribers ("
                + ", ".join(str(row.id) for row in rows)
                + ")"
            )
        row = rows[0]
        named = {name: getattr(row, name) for name in STANDARD if getattr(row, name)}
        return UserTarget(int(row.id), int(row.devices) if row.optin_push else 0, named)

    async def send(self, app: App, items: Sequence[UserSend]) -> list[UserSendResult]:
        """What became of each item, in order; the ``sent`` ones are stored (durable) when
        this returns."""
        results: list[UserSendResult] = []
        cap = (await self._apps.settings(app.account_id, app.app_key)).frequency_cap
        async with self._db.read.connect() as conn:
            scope = Scope(app.account_id, app.id)
            found = await find_many(conn, scope, [item.identifiers for item in items])
            known = [s for s in dict.fromkeys(found) if s is not None]
            opted_out, targets = await _optins_and_devices(conn, app.id, known)
            capped = await _capped(conn, app.id, known, cap) if cap else set()
        for subscriber_id in found:
            if subscriber_id is None:
                results.append(UserSendResult("no_user"))
                continue
            device = targets.get(subscriber_id)
            outcome: Outcome = "sent"
            if subscriber_id in opted_out:
                outcome = "opted_out"
            elif device is None:
                outcome = "unregistered"
            elif subscriber_id in capped:
                outcome = "capped"
            elif device.platform in PROVIDER_PLATFORMS and (
                await self._credentials.get(app.app_key, device.platform) is None
            ):
                outcome = "invalid_certificate"
            results.append(UserSendResult(outcome, subscriber_id, device))
        chosen = [n for n, result in enumerate(results) if result.outcome == "sent"]
        commands = [
            replace(
                items[n].command,
                audience=one_user(results[n].subscriber_id or 0),
            )
            for n in chosen
        ]
        ids = await self._send.send_many(commands)
        for n, notification_id in zip(chosen, ids, strict=True):
            results[n] = replace(results[n], notification_id=notification_id)
        return results


async def _optins_and_devices(
    conn: AsyncConnection, app_id: int, ids: list[int]
) -> tuple[set[int], dict[int, TargetDevice]]:
    """In one query: the subscribers who withdrew push opt-in, and each subscriber's most
    recently active enabled device of the app (the audience's ``last_active_device_only``
    choice)."""
    if not ids:
        return set(), {}
    joined = subscribers.outerjoin(
        devices,
        (devices.c.subscriber_id == subscribers.c.id)
        & (devices.c.app_id == app_id)
        & devices.c.enabled.is_(True),
    )
    rows = await conn.execute(
        select(
            subscribers.c.id,
            subscribers.c.optin_push,
            devices.c.id,
            devices.c.platform,
            devices.c.last_active_ms,
        )
        .select_from(joined)
        .where(subscribers.c.id.in_(ids))
    )
    opted_out: set[int] = set()
    best: dict[int, tuple[tuple[int, int], TargetDevice]] = {}
    for subscriber_id, optin, device_id, platform, last_active in rows:
        if not optin:
            opted_out.add(int(subscriber_id))
        if device_id is None:
            continue
        rank = (int(last_active or 0), int(device_id))
        current = best.get(int(subscriber_id))
        if current is None or rank > current[0]:
            best[int(subscriber_id)] = (rank, TargetDevice(int(device_id), platform))
    return opted_out, {subscriber_id: found for subscriber_id, (_, found) in best.items()}


async def _capped(conn: AsyncConnection, app_id: int, ids: list[int], cap: int) -> set[int]:
    """The subscribers who got ``cap`` or more of the app's notifications in the last day (the
    rule the fan-out's ``cap`` applies)."""
    if not ids:
        return set()
    since = now_ms() - DAY_MS
    recent = select(notifications.c.id).where(
        notifications.c.app_id == app_id, notifications.c.created_ms > since
    )
    rows = await conn.execute(
        select(devices.c.subscriber_id)
        .select_from(deliveries.join(devices, devices.c.id == deliveries.c.device_id))
        .where(
            devices.c.app_id == app_id,
            devices.c.subscriber_id.in_(ids),
            deliveries.c.notification_id.in_(recent),
            deliveries.c.status.in_(LIVE),
        )
        .group_by(devices.c.subscriber_id)
        .having(func.count(deliveries.c.notification_id.distinct()) >= cap)
    )
    return {int(row[0]) for row in rows}
