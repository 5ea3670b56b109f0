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
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.audience import one_user
from pushgate.domain.errors import Conflict
from pushgate.domain.subscribers import STANDARD, Identifiers
from pushgate.services.apps import App, AppService
from pushgate.services.credentials import CredentialService
from pushgate.services.send import SendCommand, SendService
from pushgate.services.subscribers import Scope, find_many
from pushgate.storage.audience_sql import Params
from pushgate.storage.database import Database, driver_rows, now_ms
from pushgate.storage.models import deliveries, devices, notifications

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
        async with self._db.read.connect() as conn:
            p = Params(conn.dialect.name == "postgresql")
            account, app_marker = p(app.account_id), p(app.id)
            if identifiers.custom:
                (found,) = await find_many(conn, scope, [identifiers])
                if found is None:
                    return UserTarget(None)
                condition = f"s.id = {p(found)}"
            else:
                given = identifiers.standard()
                names = [name for name in STANDARD if name in given]  # columns: only these
                if not names:
                    return UserTarget(None)
                condition = " OR ".join(f"s.{name} = {p(given[name])}" for name in names)
            # Plain SQL in one trip to the driver (see ``find_many``); markers, and columns
            # named in STANDARD.
            rows = await driver_rows(
                conn,
                "SELECT s.id, s.optin_push, (SELECT count(*) FROM devices d "  # noqa: S608
                f"WHERE d.subscriber_id = s.id AND d.app_id = {app_marker} "
                f"AND {p.true('d.enabled')}), "
                f"{', '.join('s.' + name for name in STANDARD)} FROM subscribers s "
                f"WHERE s.account_id = {account} AND s.app_id = {app_marker} AND ({condition})",
                p.values,
            )
        if not rows:
            return UserTarget(None)
        if len(rows) > 1:
            raise Conflict(
                "The identifiers name different subscribers ("
                + ", ".join(str(row[0]) for row in rows)
                + ")"
            )
        subscriber_id, optin, device_count, *identity = rows[0]
        named = {name: value for name, value in zip(STANDARD, identity, strict=True) if value}
        return UserTarget(int(subscriber_id), int(device_count) if optin else 0, named)

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
    postgres = conn.dialect.name == "postgresql"
    rows: list[Any] = []
    # Plain SQL in one trip to the driver per 500 subscribers (see ``find_many``).
    for start in range(0, len(ids), 500):
        p = Params(postgres)
        rows += await driver_rows(
            conn,
            # markers only
            "SELECT s.id, s.optin_push, d.id, d.platform, d.last_active_ms FROM subscribers s "  # noqa: S608
            f"LEFT JOIN devices d ON d.subscriber_id = s.id AND d.app_id = {p(app_id)} "
            f"AND {p.true('d.enabled')} WHERE s.id IN ({p.many(ids[start : start + 500])})",
            p.values,
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
