"""The delivery pipeline: group commit of accepted notifications with their deliveries,
batched delivery-status updates, TTL expiry, and hand-off to live device connections.

One writer task owns every write on this path. Each cycle takes everything pending and writes
it in ONE transaction: new notifications, one delivery row per notification x enabled device,
status changes reported by connections (sent, delivered), and expired deliveries. Only after
the commit are the callers answered and the notifications handed to the hub, so nothing is
answered as accepted before it is durable, and no acknowledgement can reach a delivery row
before that row exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.channel.hub import Hub, Outgoing
from pushgate.channel.messages import notification_message
from pushgate.services.devices import DeviceService
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import deliveries, devices, notifications

log = logging.getLogger(__name__)

MAX_NOTIFICATIONS_PER_CYCLE = 512
SWEEP_INTERVAL_SECONDS = 1.0
OPEN_STATUSES = ("queued", "sent")


class PipelineUnavailable(Exception):
    """The notification could not be stored; the caller should answer 503."""


@dataclass(frozen=True, slots=True)
class NewNotification:
    account_id: int
    app_id: int | None
    app_key: str | None
    event: str | None
    title: str | None
    message: str
    data_json: str
    ttl_seconds: int


@dataclass(slots=True)
class _Pending:
    notification: NewNotification
    future: asyncio.Future[int]


_insert_notification = insert(notifications).returning(
    notifications.c.id, sort_by_parameter_order=True
)
_insert_delivery = insert(deliveries)
_d = deliveries.c


def _status_is(*statuses: str) -> ColumnElement[bool]:
    # Not ``status.in_(...)``: an expanding IN cannot be used with executemany.
    return or_(*(_d.status == status for status in statuses))


_match_delivery = (_d.device_id == bindparam("d_id"), _d.notification_id == bindparam("n_id"))
_mark_sent = (
    update(deliveries)
    .where(*_match_delivery, _status_is(*OPEN_STATUSES))
    .values(
        status="sent",
        attempts=_d.attempts + bindparam("sends"),
        sent_ms=bindparam("at"),
        updated_ms=bindparam("at"),
    )
)
_mark_delivered = (
    update(deliveries)
    .where(*_match_delivery, _status_is(*OPEN_STATUSES, "expired"))
    .values(
        status="delivered",
        attempts=_d.attempts + bindparam("sends"),
        delivered_ms=bindparam("at"),
        updated_ms=bindparam("at"),
    )
)
_mark_seen = (
    update(devices).where(devices.c.id == bindparam("dev_id")).values(last_seen_ms=bindparam("at"))
)


class DeliveryPipeline:
    def __init__(self, db: Database, device_service: DeviceService, hub: Hub) -> None:
        self._db = db
        self._devices = device_service
        self._hub = hub
        self._pending: list[_Pending] = []
        self._sent: dict[tuple[int, int], tuple[int, int]] = {}
        self._delivered: dict[tuple[int, int], int] = {}
        self._seen: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_sweep_ms = 0

    # -- producers ---------------------------------------------------------------------------

    async def submit(self, notification: NewNotification) -> int:
        """Store ``notification`` and its deliveries; returns its id once committed."""
        if self._task is None or self._stopping:
            raise PipelineUnavailable("the server is shutting down")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(notification, future))
        self._wake.set()
        return await future

    def record_sent(self, device_id: int, notification_id: int) -> None:
        key = (device_id, notification_id)
        sends, _ = self._sent.get(key, (0, 0))
        self._sent[key] = (sends + 1, now_ms())
        self._wake.set()

    def record_delivered(self, device_id: int, notification_ids: list[int]) -> None:
        at = now_ms()
        for notification_id in notification_ids:
            self._delivered[(device_id, notification_id)] = at
        self._wake.set()

    def record_seen(self, device_id: int) -> None:
        self._seen[device_id] = now_ms()
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pushgate-delivery-pipeline")

    async def stop(self) -> None:
        """Finish what is pending, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _has_work(self) -> bool:
        return bool(self._pending or self._sent or self._delivered or self._seen)

    async def _run(self) -> None:
        while True:
            if not self._has_work():
                if self._stopping:
                    return
                timeout = max(0.0, SWEEP_INTERVAL_SECONDS - (now_ms() - self._last_sweep_ms) / 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
            try:
                await self._cycle()
            except Exception:  # never let the writer die; the cycle has answered its callers
                log.exception("delivery pipeline cycle failed")
                await asyncio.sleep(0.05)

    # -- one write cycle -----------------------------------------------------------------------

    async def _cycle(self) -> None:
        batch = self._pending[:MAX_NOTIFICATIONS_PER_CYCLE]
        del self._pending[:MAX_NOTIFICATIONS_PER_CYCLE]
        sent, self._sent = self._sent, {}
        delivered, self._delivered = self._delivered, {}
        seen, self._seen = self._seen, {}
        now = now_ms()
        sweep = now - self._last_sweep_ms >= SWEEP_INTERVAL_SECONDS * 1000

        audiences: dict[int, tuple[int, ...]] = {}
        try:
            audiences = {
                account_id: await self._devices.enabled_device_ids(account_id)
                for account_id in {p.notification.account_id for p in batch}
            }
            async with self._db.write.begin() as conn:
                ids: list[int | None] = list(
                    await self._store_notifications(conn, batch, audiences, now)
                )
                await self._store_statuses(conn, sent, delivered, seen)
                if sweep:
                    await self._expire(conn, now)
        except Exception:
            log.exception("delivery pipeline write failed; retrying its parts separately")
            # One bad part must not take the others down with it, cycle after cycle.
            ids = await self._retry_notifications(batch, audiences, now)
            await self._retry_statuses(sent, delivered, seen)
        if sweep:
            self._last_sweep_ms = now
        for pending, notification_id in zip(batch, ids, strict=True):
            if notification_id is None:
                continue
            if not pending.future.done():
                pending.future.set_result(notification_id)
            self._publish(pending.notification, notification_id, now, audiences)

    async def _retry_notifications(
        self, batch: list[_Pending], audiences: dict[int, tuple[int, ...]], now: int
    ) -> list[int | None]:
        """Store the batch without the status updates; if it still fails, store each
        notification on its own so one bad row cannot fail the requests batched with it."""
        if not batch:
            return []
        try:
            for account_id in {p.notification.account_id for p in batch} - audiences.keys():
                audiences[account_id] = await self._devices.enabled_device_ids(account_id)
            async with self._db.write.begin() as conn:
                return list(await self._store_notifications(conn, batch, audiences, now))
        except Exception as exc:
            if len(batch) == 1:
                log.exception("storing a notification failed; answering 503")
                if not batch[0].future.done():
                    batch[0].future.set_exception(PipelineUnavailable(str(exc)))
                return [None]
        ids: list[int | None] = []
        for pending in batch:
            ids.extend(await self._retry_notifications([pending], audiences, now))
        return ids

    async def _retry_statuses(
        self,
        sent: dict[tuple[int, int], tuple[int, int]],
        delivered: dict[tuple[int, int], int],
        seen: dict[int, int],
    ) -> None:
        try:
            async with self._db.write.begin() as conn:
                await self._store_statuses(conn, sent, delivered, seen)
        except Exception:
            # Unrecorded "sent"/"delivered" marks only mean the device is offered these
            # notifications again on its next connection (at-least-once), never a loss.
            log.exception(
                "recording %d delivery statuses failed; dropped", len(sent) + len(delivered)
            )

    async def _store_notifications(
        self,
        conn: AsyncConnection,
        batch: list[_Pending],
        audiences: dict[int, tuple[int, ...]],
        now: int,
    ) -> list[int]:
        if not batch:
            return []
        result = await conn.execute(
            _insert_notification,
            [
                {
                    "account_id": n.account_id,
                    "app_id": n.app_id,
                    "event": n.event,
                    "title": n.title,
                    "message": n.message,
                    "data": n.data_json,
                    "created_ms": now,
                    "expires_ms": now + n.ttl_seconds * 1000,
                }
                for n in (p.notification for p in batch)
            ],
        )
        ids = [int(row[0]) for row in result]
        rows = [
            {
                "notification_id": notification_id,
                "device_id": device_id,
                "status": "queued",
                "attempts": 0,
                "created_ms": now,
                "updated_ms": now,
            }
            for pending, notification_id in zip(batch, ids, strict=True)
            for device_id in audiences[pending.notification.account_id]
        ]
        if rows:
            await conn.execute(_insert_delivery, rows)
        return ids

    @staticmethod
    async def _store_statuses(
        conn: AsyncConnection,
        sent: dict[tuple[int, int], tuple[int, int]],
        delivered: dict[tuple[int, int], int],
        seen: dict[int, int],
    ) -> None:
        sent_rows = [
            {"d_id": d, "n_id": n, "sends": sends, "at": at}
            for (d, n), (sends, at) in sent.items()
            if (d, n) not in delivered
        ]
        delivered_rows = [
            {"d_id": d, "n_id": n, "sends": sent.get((d, n), (0, 0))[0], "at": at}
            for (d, n), at in delivered.items()
        ]
        if sent_rows:
            await conn.execute(_mark_sent, sent_rows)
        if delivered_rows:
            await conn.execute(_mark_delivered, delivered_rows)
        if seen:
            await conn.execute(_mark_seen, [{"dev_id": d, "at": at} for d, at in seen.items()])

    async def _expire(self, conn: AsyncConnection, now: int) -> None:
        expired_ids = (
            select(notifications.c.id)
            .where(notifications.c.expires_ms <= now)
            .where(notifications.c.expires_ms > self._last_sweep_ms - 60_000)
        )
        await conn.execute(
            update(deliveries)
            .where(_d.status.in_(OPEN_STATUSES), _d.notification_id.in_(expired_ids))
            .values(status="expired", updated_ms=now)
        )

    def _publish(
        self,
        n: NewNotification,
        notification_id: int,
        created_ms: int,
        audiences: dict[int, tuple[int, ...]],
    ) -> None:
        payload = notification_message(
            notification_id=notification_id,
            app_key=n.app_key,
            event=n.event,
            title=n.title,
            message=n.message,
            data_json=n.data_json,
            created_ms=created_ms,
            expires_ms=created_ms + n.ttl_seconds * 1000,
        )
        self._hub.publish(audiences[n.account_id], Outgoing(notification_id, payload))
