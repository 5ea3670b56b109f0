"""An account's overview: notifications accepted today and this week, what became of this
week's deliveries (by status, failures by reason), and its devices by platform; and the
delivery records the dashboard shows: a device's latest deliveries, and a feed of deliveries
whose status changed (the live page).

Days and weeks are UTC (a week starts on Monday). Every query names the account.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select

from pushgate.services.stats import STATUSES, reason_name
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import apps, deliveries, devices, notifications

_d = deliveries.c
_n = notifications.c
DEVICE_DELIVERIES = 10
FEED_PAGE = 200
# The live feed follows the deliveries of the account's latest notifications accepted within
# this window (each look reads all their deliveries: a bound on its cost).
FEED_WINDOW_MS = 3600 * 1000
FEED_NOTIFICATIONS = 20


@dataclass(frozen=True, slots=True)
class Overview:
    today: int
    this_week: int
    statuses: dict[str, int]
    failed_by_reason: dict[str, int]
    devices_by_platform: dict[str, int]
    disabled_devices: int


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    notification_id: int
    device_id: int
    app_key: str | None
    title: str | None
    message: str
    transport: str | None
    status: str
    reason: str | None
    attempts: int
    updated_ms: int


def day_starts(now: int) -> tuple[int, int]:
    """The start (ms) of today and of this week (Monday), UTC."""
    today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    week = today - dt.timedelta(days=today.weekday())
    return int(today.timestamp() * 1000), int(week.timestamp() * 1000)


_line_columns = (
    _d.notification_id,
    _d.device_id,
    apps.c.app_key,
    _n.title,
    _n.message,
    func.coalesce(_d.transport, devices.c.platform),
    _d.status,
    _d.reason,
    _d.attempts,
    _d.updated_ms,
)
_line_join = (
    deliveries.join(notifications, _n.id == _d.notification_id)
    .join(devices, devices.c.id == _d.device_id)
    .outerjoin(apps, apps.c.id == _n.app_id)
)


def _line(row: Sequence[Any]) -> DeliveryLine:
    return DeliveryLine(
        notification_id=int(row[0]),
        device_id=int(row[1]),
        app_key=row[2],
        title=row[3],
        message=row[4],
        transport=row[5],
        status=row[6],
        reason=row[7],
        attempts=int(row[8]),
        updated_ms=int(row[9]),
    )


class OverviewService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def overview(self, account_id: int, now: int | None = None) -> Overview:
        today_ms, week_ms = day_starts(now_ms() if now is None else now)
        week_ids = (
            select(_n.id)
            .where(_n.account_id == account_id, _n.created_ms >= week_ms)
            .scalar_subquery()
        )
        async with self._db.read.connect() as conn:
            accepted = (
                await conn.execute(
                    select(
                        func.count(),
                        func.coalesce(func.sum(case((_n.created_ms >= today_ms, 1), else_=0)), 0),
                    ).where(_n.account_id == account_id, _n.created_ms >= week_ms)
                )
            ).one()
            by_status = (
                await conn.execute(
                    select(_d.status, func.count())
                    .where(_d.notification_id.in_(week_ids))
                    .group_by(_d.status)
                )
            ).all()
            reasons = (
                await conn.execute(
                    select(_d.reason, func.count())
                    .where(_d.notification_id.in_(week_ids), _d.status == "failed")
                    .group_by(_d.reason)
                )
            ).all()
            platforms = (
                await conn.execute(
                    select(devices.c.platform, devices.c.enabled, func.count())
                    .where(devices.c.account_id == account_id)
                    .group_by(devices.c.platform, devices.c.enabled)
                )
            ).all()
        week, today = int(accepted[0]), int(accepted[1])
        statuses = dict.fromkeys(STATUSES, 0)
        for status, count in by_status:
            statuses[status] = int(count)
        failed: Counter[str] = Counter()
        for reason, count in reasons:
            failed[reason_name(reason)] += int(count)
        by_platform: Counter[str] = Counter()
        disabled = 0
        for platform, enabled, count in platforms:
            if enabled:
                by_platform[platform] += int(count)
            else:
                disabled += int(count)
        return Overview(
            today=today,
            this_week=week,
            statuses=statuses,
            failed_by_reason=dict(failed.most_common()),
            devices_by_platform=dict(sorted(by_platform.items())),
            disabled_devices=disabled,
        )

    async def device_deliveries(
        self, account_id: int, device_id: int, limit: int = DEVICE_DELIVERIES
    ) -> list[DeliveryLine]:
        """The device's latest deliveries, newest first (none for another account's)."""
        async with self._db.read.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_line_columns)
                    .select_from(_line_join)
                    .where(_d.device_id == device_id, devices.c.account_id == account_id)
                    .order_by(_d.notification_id.desc())
                    .limit(limit)
                )
            ).all()
        return [_line(row) for row in rows]

    async def feed(self, account_id: int, after_ms: int) -> list[DeliveryLine]:
        """The account's deliveries changed after ``after_ms``, oldest change first: those
        of its ``FEED_NOTIFICATIONS`` latest notifications accepted within
        ``FEED_WINDOW_MS``."""
        latest = (
            select(_n.id)
            .where(_n.account_id == account_id, _n.created_ms >= now_ms() - FEED_WINDOW_MS)
            .order_by(_n.id.desc())
            .limit(FEED_NOTIFICATIONS)
        )
        async with self._db.read.connect() as conn:
            ids = list((await conn.execute(latest)).scalars())
            if not ids:
                return []
            rows = (
                await conn.execute(
                    select(*_line_columns)
                    .select_from(_line_join)
                    .where(_d.notification_id.in_(ids), _d.updated_ms > after_ms)
                    .order_by(_d.updated_ms, _d.notification_id, _d.device_id)
                    .limit(FEED_PAGE)
                )
            ).all()
        return [_line(row) for row in rows]
