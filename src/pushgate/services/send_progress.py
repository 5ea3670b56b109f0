"""Where one notification is on its way: fanned out yet, its deliveries by status, and how
many of them can still change by themselves.

A delivery is *settled* when nothing more happens to it without a person: ``delivered``,
``opened``, ``failed``, ``expired``, ``capped``, and ``sent`` through a push platform (the
provider took it; providers do not report arrival). ``queued`` deliveries wait to be sent or
retried, and ``sent`` device-channel deliveries wait for the device's acknowledgement.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select

from pushgate.domain.errors import NotFound
from pushgate.services.delivery_jobs import CHANNEL, FANOUT_QUEUE, fanout_payloads_of
from pushgate.services.notifications import ALL_DELIVERY_STATUSES
from pushgate.storage.database import Database
from pushgate.storage.models import deliveries, jobs, notifications

_d = deliveries.c


@dataclass(frozen=True, slots=True)
class SendProgress:
    notification_id: int
    # Whether the fan-out has made the notification's deliveries.
    fanned_out: bool
    # Deliveries by status (every status, zeros included).
    counts: dict[str, int]
    # Deliveries that can still change by themselves (see the module's notes).
    unsettled: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def settled(self) -> bool:
        return self.fanned_out and self.unsettled == 0


def _unsettled(status: str, transport: str | None) -> bool:
    return status == "queued" or (status == "sent" and transport == CHANNEL)


async def send_progress(db: Database, account_id: int, notification_id: int) -> SendProgress:
    """The progress of the account's notification; ``NotFound`` for another's or none."""
    async with db.read.connect() as conn:
        found = (
            await conn.execute(
                select(notifications.c.id).where(
                    notifications.c.id == notification_id,
                    notifications.c.account_id == account_id,
                )
            )
        ).first()
        if found is None:
            raise NotFound(f"No notification {notification_id} in this account")
        head, low, high = fanout_payloads_of(notification_id)
        waiting = (
            await conn.execute(
                select(jobs.c.id).where(
                    jobs.c.queue == FANOUT_QUEUE,
                    or_(
                        jobs.c.payload == head,
                        and_(jobs.c.payload >= low, jobs.c.payload < high),
                    ),
                )
            )
        ).first()
        rows = (
            await conn.execute(
                select(_d.status, _d.transport, func.count())
                .where(_d.notification_id == notification_id)
                .group_by(_d.status, _d.transport)
            )
        ).all()
    counts = dict.fromkeys(ALL_DELIVERY_STATUSES, 0)
    unsettled = 0
    for status, transport, count in rows:
        counts[status] = counts.get(status, 0) + int(count)
        if _unsettled(status, transport):
            unsettled += int(count)
    return SendProgress(notification_id, waiting is None, counts, unsettled)
