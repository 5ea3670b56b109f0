"""Reading notifications and deliveries: a device's backlog, an account's latest sends,
one notification's deliveries and delivery counts by status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select

from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.services.apps import owned_app_id
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import apps, deliveries, devices, notifications, subscribers
from pushgate.transports.base import Content

BACKLOG_PAGE = 500
DELIVERY_STATUSES = ("queued", "sent", "delivered", "failed", "expired")
# Every status a delivery can have (``latest`` keeps reporting ``DELIVERY_STATUSES``).
ALL_DELIVERY_STATUSES = (
    "queued",
    "sent",
    "delivered",
    "opened",
    "failed",
    "expired",
    "capped",
)
DELIVERY_PAGE = 100
MAX_DELIVERY_PAGE = 1000

_n = notifications.c
_d = deliveries.c
_with_app = notifications.outerjoin(apps, apps.c.id == _n.app_id)


@dataclass(frozen=True, slots=True)
class NotificationSummary:
    id: int
    app_key: str | None
    event: str | None
    title: str | None
    message: str
    created_ms: int
    expires_ms: int
    deliveries: dict[str, int]


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    device_id: int
    # The transport that carries it: the device's platform when the delivery was made.
    transport: str
    status: str
    attempts: int
    reason: str | None
    created_ms: int
    sent_ms: int | None
    delivered_ms: int | None
    updated_ms: int


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: list[DeliveryRecord]
    # Pass as ``after_device_id`` for the next page; None on the last page.
    next_after_device_id: int | None


def _language_of(device_id: int) -> Select[Any]:
    """The language a device's notifications are localized to: its own, else its owner's."""
    return (
        select(func.coalesce(devices.c.language, subscribers.c.language))
        .select_from(devices.join(subscribers, subscribers.c.id == devices.c.subscriber_id))
        .where(devices.c.id == device_id)
    )


class NotificationQueries:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def backlog(
        self, device_id: int, since: int | None, limit: int | None = None
    ) -> AsyncIterator[Content]:
        """What a (re)connecting device is owed, oldest first, page by page.

        Without ``since``: everything not yet acknowledged. With ``since``: everything newer
        than that id. Either way, only notifications whose TTL has not run out.
        """
        after = since or 0
        remaining = limit
        language: str | None = None
        language_read = False
        while remaining is None or remaining > 0:
            page = BACKLOG_PAGE if remaining is None else min(BACKLOG_PAGE, remaining)
            query = (
                select(
                    _n.id,
                    _n.account_id,
                    apps.c.app_key,
                    _n.event,
                    _n.title,
                    _n.message,
                    _n.data,
                    _n.created_ms,
                    _n.expires_ms,
                    _n.options,
                    _n.app_id,
                    _n.audience,
                    _n.translations,
                )
                .select_from(_with_app.join(deliveries, _d.notification_id == _n.id))
                .where(_d.device_id == device_id, _d.notification_id > after)
                .where(_n.expires_ms > now_ms())
                .order_by(_d.notification_id)
                .limit(page)
            )
            if since is None:
                query = query.where(_d.status.in_(("queued", "sent")))
            else:
                query = query.where(_d.status.not_in(("failed", "capped")))
            # One connection per page; the device's language is read on the first page's,
            # and only when something is owed (a reconnecting device mostly owes nothing).
            async with self._db.read.connect() as conn:
                rows = (await conn.execute(query)).all()
                if rows and not language_read:
                    language = (await conn.execute(_language_of(device_id))).scalar()
                    language_read = True
            for row in rows:
                yield Content.from_row(row).localized(language)
            if len(rows) < page:
                return
            after = rows[-1].id
            if remaining is not None:
                remaining -= len(rows)

    async def of_device(self, device_id: int, notification_ids: list[int]) -> list[int]:
        """Those of ``notification_ids`` that were sent to this device."""
        if not notification_ids:
            return []
        async with self._db.read.connect() as conn:
            rows = await conn.execute(
                select(_d.notification_id).where(
                    _d.device_id == device_id, _d.notification_id.in_(set(notification_ids))
                )
            )
            return sorted(int(row[0]) for row in rows)

    async def latest(self, account_id: int, limit: int = 50) -> list[NotificationSummary]:
        async with self._db.read.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        _n.id,
                        apps.c.app_key,
                        _n.event,
                        _n.title,
                        _n.message,
                        _n.created_ms,
                        _n.expires_ms,
                    )
                    .select_from(_with_app)
                    .where(_n.account_id == account_id)
                    .order_by(_n.id.desc())
                    .limit(limit)
                )
            ).all()
            ids = [row.id for row in rows]
            counts: dict[int, dict[str, int]] = {
                i: dict.fromkeys(DELIVERY_STATUSES, 0) for i in ids
            }
            if ids:
                for notification_id, status, count in (
                    await conn.execute(
                        select(_d.notification_id, _d.status, func.count())
                        .where(_d.notification_id.in_(ids))
                        .group_by(_d.notification_id, _d.status)
                    )
                ).all():
                    counts[notification_id][status] = count
        return [NotificationSummary(*row, deliveries=counts[row.id]) for row in rows]

    async def deliveries(
        self,
        account_id: int,
        notification_id: int,
        *,
        status: str | None = None,
        after_device_id: int = 0,
        limit: int = DELIVERY_PAGE,
    ) -> DeliveryPage:
        """One page of a notification's deliveries, by device id. Raises ``NotFound`` when
        the notification is not the account's."""
        if status is not None and status not in ALL_DELIVERY_STATUSES:
            raise InvalidInput(
                f"status must be one of {', '.join(ALL_DELIVERY_STATUSES)}; got {status!r}"
            )
        limit = max(1, min(limit, MAX_DELIVERY_PAGE))
        query = (
            select(
                _d.device_id,
                func.coalesce(_d.transport, devices.c.platform),
                _d.status,
                _d.attempts,
                _d.reason,
                _d.created_ms,
                _d.sent_ms,
                _d.delivered_ms,
                _d.updated_ms,
            )
            .select_from(deliveries.join(devices, devices.c.id == _d.device_id))
            .where(
                _d.notification_id == notification_id,
                _d.device_id > after_device_id,
                devices.c.account_id == account_id,
            )
            .order_by(_d.device_id)
            .limit(limit)
        )
        if status is not None:
            query = query.where(_d.status == status)
        async with self._db.read.connect() as conn:
            owner = (
                await conn.execute(
                    select(_n.id).where(_n.id == notification_id, _n.account_id == account_id)
                )
            ).scalar()
            if owner is None:
                raise NotFound(f"No notification {notification_id} in this account")
            rows = (await conn.execute(query)).all()
        records = [DeliveryRecord(*row) for row in rows]
        after = records[-1].device_id if len(records) == limit else None
        return DeliveryPage(records, after)

    async def delivery_counts(self, account_id: int, app_key: str | None = None) -> dict[str, int]:
        """Deliveries by status of the account's notifications, or of one of its apps' (by
        its app key). Raises ``NotFound`` when the app is not the account's."""
        query = (
            select(_d.status, func.count())
            .select_from(notifications.join(deliveries, _d.notification_id == _n.id))
            .where(_n.account_id == account_id)
            .group_by(_d.status)
        )
        async with self._db.read.connect() as conn:
            if app_key is not None:
                app_id = await owned_app_id(conn, account_id, app_key)
                query = query.where(_n.app_id == app_id)
            rows = (await conn.execute(query)).all()
        counts = dict.fromkeys(ALL_DELIVERY_STATUSES, 0)
        for status, count in rows:
            counts[status] = int(count)
        return counts
