"""Statistics of notifications and campaigns, counted from the delivery records (never
estimated), and "opened" reports.

For a notification or a campaign (every notification that carries it):

- ``targeted``: every target of the request: deliveries made, plus identifiers that named no
  subscriber (``no_user``) and subscribers who had withdrawn push opt-in (``opted_out``);
- one count per delivery status: ``queued``, ``sent``, ``delivered``, ``opened``, ``failed``,
  ``expired``, ``capped`` (the app's frequency cap kept it back);
- ``failed_by_reason``: failed deliveries by the name their reason starts with
  (``BadDeviceToken``, ``InvalidCertificate``...).

The counts read the deliveries through their primary key, a notification's deliveries side
by side: one index range per notification (``benchmarks/stats.py`` measures a campaign of a
million deliveries).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import and_, func, select, update

from pushgate.domain.errors import NotFound
from pushgate.services.apps import owned_app_id
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import apps, campaigns, deliveries, devices, notifications

STATUSES = ("queued", "sent", "delivered", "opened", "failed", "expired", "capped")
_d = deliveries.c
_n = notifications.c


@dataclass(frozen=True, slots=True)
class Counts:
    targeted: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    no_user: int = 0
    opted_out: int = 0
    notifications: int = 0


@dataclass(frozen=True, slots=True)
class CampaignView:
    id: int
    external_id: str | None
    name: str | None
    created_ms: int
    counts: Counts


@dataclass(frozen=True, slots=True)
class TimelineBucket:
    start_ms: int
    # "targeted" (deliveries made) and each status (deliveries that reached it then)
    counts: dict[str, int]
    # the failed ones of the bucket by reason
    failed_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Timeline:
    start_ms: int
    bucket_ms: int
    buckets: tuple[TimelineBucket, ...]


HOUR_MS = 3_600_000
MAX_BUCKETS = 48
# Bucket sizes a timeline chooses from: the smallest that fits the span in MAX_BUCKETS.
BUCKET_SIZES_MS = (60_000, 300_000, 900_000, HOUR_MS, 6 * HOUR_MS, 24 * HOUR_MS, 7 * 24 * HOUR_MS)


def bucket_span(first_ms: int, last_ms: int, buckets: int = MAX_BUCKETS) -> tuple[int, int]:
    """(start, size) of the buckets that cover ``first_ms`` to ``last_ms`` in at most
    ``buckets`` buckets (the last size when none is large enough); the start is a multiple of
    the size."""
    for size in BUCKET_SIZES_MS:
        start = first_ms // size * size
        if (last_ms - start) // size < buckets:
            return start, size
    size = BUCKET_SIZES_MS[-1]
    return first_ms // size * size, size


def reason_name(reason: str | None) -> str:
    """The name a failure reason starts with (``BadDeviceToken: ...`` -> ``BadDeviceToken``)."""
    if not reason:
        return "unknown"
    return reason.split(":", 1)[0].strip()[:64] or "unknown"


class StatsService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _count(self, notification_filter: object) -> Counts:
        ids = select(_n.id).where(notification_filter)  # type: ignore[arg-type]
        async with self._db.read.connect() as conn:
            # One aggregate per status (FILTER) rather than GROUP BY status: no sort of the
            # rows, about 1.5x faster on SQLite at a million deliveries.
            by_status = (
                await conn.execute(
                    select(
                        *(func.count().filter(_d.status == status) for status in STATUSES)
                    ).where(_d.notification_id.in_(ids))
                )
            ).one()
            by_reason = (
                await conn.execute(
                    select(_d.reason, func.count())
                    .where(_d.notification_id.in_(ids), _d.status == "failed")
                    .group_by(_d.reason)
                )
            ).all()
            skipped = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(_n.no_user), 0),
                        func.coalesce(func.sum(_n.opted_out), 0),
                        func.count(),
                    ).where(notification_filter)  # type: ignore[arg-type]
                )
            ).one()
        statuses: Counter[str] = Counter(dict.fromkeys(STATUSES, 0))
        for status, count in zip(STATUSES, by_status, strict=True):
            statuses[status] += int(count or 0)
        reasons: Counter[str] = Counter()
        for reason, count in by_reason:
            reasons[reason_name(reason)] += int(count)
        no_user, opted_out, notification_count = (int(v) for v in skipped)
        return Counts(
            targeted=sum(statuses.values()) + no_user + opted_out,
            statuses=dict(statuses),
            failed_by_reason=dict(reasons.most_common()),
            no_user=no_user,
            opted_out=opted_out,
            notifications=notification_count,
        )

    async def notification(self, account_id: int, notification_id: int) -> Counts:
        async with self._db.read.connect() as conn:
            found = (
                await conn.execute(
                    select(_n.id).where(_n.id == notification_id, _n.account_id == account_id)
                )
            ).first()
        if found is None:
            raise NotFound(f"No notification {notification_id} in this account")
        return await self._count(_n.id == notification_id)

    async def sending(self, account_id: int, sending_id: int) -> Counts:
        """Counts of every notification a sending made (one per app, push and offset)."""
        return await self._count(and_(_n.sending_id == sending_id, _n.account_id == account_id))

    async def push(self, account_id: int, push_id: int) -> Counts:
        """Counts of every notification made from a push."""
        return await self._count(and_(_n.push_id == push_id, _n.account_id == account_id))

    async def _campaigns(
        self, account_id: int, app_key: str, external_id: str | None = None
    ) -> list[tuple[int, str | None, str | None, int]]:
        query = (
            select(
                campaigns.c.id, campaigns.c.external_id, campaigns.c.name, campaigns.c.created_ms
            )
            .join(apps, apps.c.id == campaigns.c.app_id)
            .where(apps.c.app_key == app_key, apps.c.account_id == account_id)
            .order_by(campaigns.c.id)
        )
        if external_id is not None:
            query = query.where(campaigns.c.external_id == external_id)
        async with self._db.read.connect() as conn:
            await owned_app_id(conn, account_id, app_key)
            return [(int(r[0]), r[1], r[2], int(r[3])) for r in (await conn.execute(query)).all()]

    async def campaign(self, account_id: int, app_key: str, external_id: str) -> CampaignView:
        """A campaign of the app by the caller's id for it, with its counts."""
        found = await self._campaigns(account_id, app_key, external_id)
        if not found:
            raise NotFound(f"App {app_key} has no campaign {external_id!r}")
        campaign_id, external, name, created = found[0]
        counts = await self._count(_n.campaign_id == campaign_id)
        return CampaignView(campaign_id, external, name, created, counts)

    async def campaign_by_id(self, account_id: int, app_key: str, campaign_id: int) -> CampaignView:
        """A campaign of the app by its own id (``CampaignView.id``), with its counts."""
        found = [c for c in await self._campaigns(account_id, app_key) if c[0] == campaign_id]
        if not found:
            raise NotFound(f"App {app_key} has no campaign {campaign_id}")
        _, external, name, created = found[0]
        counts = await self._count(_n.campaign_id == campaign_id)
        return CampaignView(campaign_id, external, name, created, counts)

    async def timeline(self, campaign_id: int, buckets: int = MAX_BUCKETS) -> Timeline:
        """A campaign's deliveries over time: per time bucket, how many were made (targeted)
        and how many reached each status then (a delivery counts where it last changed).
        Check the campaign's owner first (``campaign_by_id``)."""
        ids = select(_n.id).where(_n.campaign_id == campaign_id)
        async with self._db.read.connect() as conn:
            span = (
                await conn.execute(
                    select(func.min(_d.created_ms), func.max(_d.updated_ms)).where(
                        _d.notification_id.in_(ids)
                    )
                )
            ).one()
            if span[0] is None:
                return Timeline(0, HOUR_MS, ())
            start, size = bucket_span(int(span[0]), int(span[1]), buckets)
            made = (_d.created_ms - start) // size
            moved = (_d.updated_ms - start) // size
            targeted: dict[int, int] = {
                int(bucket): int(count)
                for bucket, count in await conn.execute(
                    select(made, func.count()).where(_d.notification_id.in_(ids)).group_by(made)
                )
            }
            changed = (
                await conn.execute(
                    select(moved, _d.status, _d.reason, func.count())
                    .where(_d.notification_id.in_(ids))
                    .group_by(moved, _d.status, _d.reason)
                )
            ).all()
        rows: dict[int, dict[str, int]] = {}
        reasons: dict[int, Counter[str]] = {}

        def row(bucket: object) -> dict[str, int]:
            return rows.setdefault(int(str(bucket)), dict.fromkeys(("targeted", *STATUSES), 0))

        for bucket, count in targeted.items():
            row(bucket)["targeted"] = count
        for bucket, status, reason, count in changed:
            row(bucket)[status] += int(count)
            if status == "failed":
                reasons.setdefault(int(bucket), Counter())[reason_name(reason)] += int(count)
        empty = dict.fromkeys(("targeted", *STATUSES), 0)
        return Timeline(
            start,
            size,
            tuple(
                TimelineBucket(start + b * size, rows.get(b, empty), dict(reasons.get(b, {})))
                for b in range(max(rows) + 1)
            ),
        )

    async def campaigns(self, account_id: int, app_key: str) -> list[CampaignView]:
        """The app's campaigns, oldest first, each with its counts."""
        return [
            CampaignView(cid, external, name, created, await self._count(_n.campaign_id == cid))
            for cid, external, name, created in await self._campaigns(account_id, app_key)
        ]

    async def opened(self, account_id: int, notification_id: int, device_ids: list[int]) -> int:
        """Record that these devices' users opened (tapped) the notification (a report from
        the app's backend). Returns how many deliveries became ``opened``; devices of other
        accounts count as none."""
        if not device_ids:
            return 0
        owned = select(devices.c.id).where(
            devices.c.account_id == account_id, devices.c.id.in_(device_ids)
        )
        return await self._open(_d.notification_id == notification_id, _d.device_id.in_(owned))

    async def opened_on_device(self, device_id: int, notification_ids: list[int]) -> int:
        """Record that the user opened these notifications on this device (a report from the
        device itself, over the channel). Returns how many deliveries became ``opened``."""
        if not notification_ids:
            return 0
        return await self._open(_d.device_id == device_id, _d.notification_id.in_(notification_ids))

    async def _open(self, *where: object) -> int:
        """Deliveries become ``opened`` from any status but ``failed`` and ``capped``: an
        opened notification was delivered, whatever the provider reported so far (an
        ``expired`` one had its acknowledgement lost). A later acknowledgement leaves it
        opened."""
        now = now_ms()
        async with self._db.writing() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(*where, _d.status.in_(("queued", "sent", "delivered", "expired")))  # type: ignore[arg-type]
                .values(
                    status="opened",
                    opened_ms=now,
                    delivered_ms=func.coalesce(_d.delivered_ms, now),
                    sent_ms=func.coalesce(_d.sent_ms, now),
                    updated_ms=now,
                )
            )
        return int(result.rowcount or 0)
