"""Statistics counted from the delivery records, and "opened" reports; on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, update

from pushgate.crypto import SecretBox
from pushgate.domain.errors import NotFound
from pushgate.services.accounts import AccountService
from pushgate.services.apps import AppService
from pushgate.services.stats import StatsService, reason_name
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import campaigns, deliveries, devices, notifications, subscribers

BOX = SecretBox("test-secret-" * 4)
# device id -> (status, reason)
ROWS = {
    1: ("failed", "BadDeviceToken: the token is not valid"),
    2: ("failed", "BadDeviceToken: no longer valid"),
    3: ("failed", "Unregistered"),
    4: ("failed", None),
    5: ("delivered", None),
    6: ("sent", None),
    7: ("queued", None),
    8: ("expired", None),
    9: ("capped", "capped: at most 1 notifications per subscriber per day"),
}


async def _campaign(db: Database) -> tuple[int, str, int]:
    """An app with a campaign of two notifications to nine devices; the account id, the app
    key and the first notification's id."""
    account = (await AccountService(db, BOX).create("acme")).account
    app = (await AppService(db, BOX).create(account.id, "shop")).app
    now = now_ms()
    async with db.write.begin() as conn:
        campaign_id = (
            await conn.execute(
                insert(campaigns)
                .values(app_id=app.id, external_id="spring", name="Spring", created_ms=now)
                .returning(campaigns.c.id)
            )
        ).scalar_one()
        device_ids = {}
        for n in ROWS:
            subscriber_id = (
                await conn.execute(
                    insert(subscribers)
                    .values(account_id=account.id, app_id=app.id, created_ms=now)
                    .returning(subscribers.c.id)
                )
            ).scalar_one()
            device_ids[n] = (
                await conn.execute(
                    insert(devices)
                    .values(
                        account_id=account.id,
                        app_id=app.id,
                        subscriber_id=subscriber_id,
                        platform="android",
                        token_hash=f"{account.id}-{n}",
                        enabled=True,
                        created_ms=now,
                    )
                    .returning(devices.c.id)
                )
            ).scalar_one()
        notification_ids = []
        for no_user, opted_out in ((2, 1), (0, 0)):
            notification_ids.append(
                (
                    await conn.execute(
                        insert(notifications)
                        .values(
                            account_id=account.id,
                            app_id=app.id,
                            message="hi",
                            data="{}",
                            created_ms=now,
                            expires_ms=now + 60_000,
                            campaign_id=campaign_id,
                            no_user=no_user,
                            opted_out=opted_out,
                        )
                        .returning(notifications.c.id)
                    )
                ).scalar_one()
            )
        for notification_id in notification_ids:
            await conn.execute(
                insert(deliveries),
                [
                    {
                        "notification_id": notification_id,
                        "device_id": device_ids[n],
                        "status": status,
                        "transport": "android",
                        "attempts": 1,
                        "reason": reason,
                        "created_ms": now,
                        "updated_ms": now,
                    }
                    for n, (status, reason) in ROWS.items()
                ],
            )
    return account.id, app.app_key, notification_ids[0]


async def test_counts_come_from_the_delivery_records(db: Database) -> None:
    account_id, app_key, first = await _campaign(db)
    stats = StatsService(db)
    counts = await stats.notification(account_id, first)
    assert counts.statuses == {
        "queued": 1,
        "sent": 1,
        "delivered": 1,
        "opened": 0,
        "failed": 4,
        "expired": 1,
        "capped": 1,
    }
    assert counts.failed_by_reason == {"BadDeviceToken": 2, "Unregistered": 1, "unknown": 1}
    assert (counts.no_user, counts.opted_out, counts.targeted) == (2, 1, 12)
    view = await stats.campaign(account_id, app_key, "spring")
    assert (view.name, view.counts.notifications, view.counts.targeted) == ("Spring", 2, 21)
    assert view.counts.statuses["failed"] == 8
    assert [c.external_id for c in await stats.campaigns(account_id, app_key)] == ["spring"]
    other = (await AccountService(db, BOX).create("other")).account
    with pytest.raises(NotFound):
        await stats.notification(other.id, first)
    with pytest.raises(NotFound):
        await stats.campaigns(other.id, app_key)
    with pytest.raises(NotFound, match="no campaign 'autumn'"):
        await stats.campaign(account_id, app_key, "autumn")


async def test_opened_never_revives_a_failed_or_capped_delivery(db: Database) -> None:
    account_id, _, first = await _campaign(db)
    stats = StatsService(db)
    async with db.read.connect() as conn:
        device_ids = list(
            (
                await conn.execute(
                    select(deliveries.c.device_id)
                    .where(deliveries.c.notification_id == first)
                    .order_by(deliveries.c.device_id)
                )
            ).scalars()
        )
    other = (await AccountService(db, BOX).create("other")).account
    assert await stats.opened(other.id, first, device_ids) == 0
    # queued, sent, delivered and expired become opened; failed and capped stay.
    assert await stats.opened(account_id, first, device_ids) == 4
    assert await stats.opened(account_id, first, device_ids) == 0
    counts = await stats.notification(account_id, first)
    assert counts.statuses["opened"] == 4 and counts.statuses["failed"] == 4
    async with db.read.connect() as conn:
        stamps = (
            await conn.execute(
                select(deliveries.c.opened_ms, deliveries.c.delivered_ms).where(
                    deliveries.c.status == "opened"
                )
            )
        ).all()
    assert stamps and all(opened and delivered for opened, delivered in stamps)
    assert await stats.opened_on_device(device_ids[8], [first]) == 0  # capped


def test_reason_names() -> None:
    assert reason_name("BadDeviceToken: x") == "BadDeviceToken"
    assert reason_name(None) == "unknown"
    assert reason_name(" : x") == "unknown"


async def test_a_campaign_over_time_counts_each_delivery_where_it_last_changed(
    db: Database,
) -> None:
    account_id, app_key, first = await _campaign(db)
    stats = StatsService(db)
    view = (await stats.campaigns(account_id, app_key))[0]
    assert (await stats.campaign_by_id(account_id, app_key, view.id)).counts == view.counts
    # Two hours later, three deliveries of the first notification changed again.
    async with db.write.begin() as conn:
        later = (
            (
                await conn.execute(
                    select(deliveries.c.device_id)
                    .where(deliveries.c.notification_id == first)
                    .order_by(deliveries.c.device_id)
                    .limit(3)
                )
            )
            .scalars()
            .all()
        )
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.notification_id == first, deliveries.c.device_id.in_(later))
            .values(status="opened", updated_ms=deliveries.c.updated_ms + 2 * 3_600_000)
        )
    timeline = await stats.timeline(view.id)
    # 2 hours in 5-minute buckets (the smallest size that fits), empty ones included.
    assert (timeline.bucket_ms, len(timeline.buckets)) == (300_000, 25)
    assert [b.counts["targeted"] for b in timeline.buckets] == [18] + [0] * 24
    assert timeline.buckets[-1].counts["opened"] == 3
    # The three that were opened were failed ones (the first devices): 8 - 3 failed left.
    assert sum(b.counts["failed"] for b in timeline.buckets) == 5
    assert timeline.buckets[0].failed_by_reason == {
        "BadDeviceToken": 2,
        "Unregistered": 1,
        "unknown": 2,
    }
    total = sum(sum(v for k, v in b.counts.items() if k != "targeted") for b in timeline.buckets)
    assert total == 18
    other = (await AccountService(db, BOX).create("other")).account
    with pytest.raises(NotFound):
        await stats.campaign_by_id(other.id, app_key, view.id)
    with pytest.raises(NotFound, match="no campaign"):
        await stats.campaign_by_id(account_id, app_key, view.id + 1000)
