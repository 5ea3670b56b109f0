"""Reading notifications and deliveries: a device's backlog, an account's latest sends,
one notification's deliveries and delivery counts by status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Select, bindparam, func, or_, select
from sqlalchemy.dialects import sqlite

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


def _backlog_query(unacknowledged: bool) -> Select[Any]:
    """One page of a device's backlog (parameters ``device_id``, ``after``, ``now`` and
    ``page``), each row with the language it is localized to: the device's, else its
    owner's (a scalar subquery, so a page is one statement)."""
    device_id: BindParameter[Any] = bindparam("device_id")
    language = (
        select(func.coalesce(devices.c.language, subscribers.c.language))
        .select_from(devices.join(subscribers, subscribers.c.id == devices.c.subscriber_id))
        .where(devices.c.id == device_id)
        .scalar_subquery()
    )
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
            language,
        )
        .select_from(_with_app.join(deliveries, _d.notification_id == _n.id))
        .where(_d.device_id == device_id, _d.notification_id > bindparam("after"))
        .where(_n.expires_ms > bindparam("now"))
        .order_by(_d.notification_id)
        .limit(bindparam("page"))
    )
    # Plain comparisons rather than IN: their parameters compile to fixed positions.
    if unacknowledged:
        return query.where(or_(_d.status == "queued", _d.status == "sent"))
    return query.where(_d.status != "failed", _d.status != "capped")


def _sqlite_positional(query: Select[Any]) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """``query`` compiled for SQLite: its SQL, the names of its ``?`` parameters in order,
    and the values of those it fixes itself (the statuses)."""
    compiled = query.compile(dialect=sqlite.dialect())
    fixed = {k: v for k, v in compiled.params.items() if v is not None}
    return str(compiled), tuple(compiled.positiontup or ()), fixed


_BACKLOG = {True: _backlog_query(True), False: _backlog_query(False)}
_BACKLOG_SQLITE = {k: _sqlite_positional(q) for k, q in _BACKLOG.items()}
_LANGUAGE = 13


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
        unacknowledged = since is None
        while remaining is None or remaining > 0:
            page = BACKLOG_PAGE if remaining is None else min(BACKLOG_PAGE, remaining)
            params = {"device_id": device_id, "after": after, "now": now_ms(), "page": page}
            rows: Sequence[Sequence[Any]]
            if self._db.is_sqlite:  # every channel (re)connection comes here: one thread trip
                sql, names, fixed = _BACKLOG_SQLITE[unacknowledged]
                values = {**fixed, **params}
                rows = await self._db.read_once(sql, tuple(values[n] for n in names))
            else:
                async with self._db.read.connect() as conn:
                    rows = (await conn.execute(_BACKLOG[unacknowledged], params)).all()
            for row in rows:
                yield Content.from_row(row).localized(row[_LANGUAGE])
            if len(rows) < page:
                return
            after = rows[-1][0]
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
