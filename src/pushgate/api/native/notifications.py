"""Native API: an account's latest notifications, one notification's deliveries, and
delivery counts by status of an account or one of its apps."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from pushgate.api.native.deps import AccountDependency
from pushgate.domain.errors import MAX_ID
from pushgate.services.accounts import Account
from pushgate.services.notifications import (
    DELIVERY_PAGE,
    MAX_DELIVERY_PAGE,
    NotificationQueries,
)
from pushgate.web.route import GuardedRoute
from pushgate.web.timestamps import iso_ms

DeliveryStatus = Literal["queued", "sent", "delivered", "opened", "failed", "expired", "capped"]


class NotificationOut(BaseModel):
    id: int
    app_id: str | None
    event: str | None
    title: str | None
    message: str
    created_at: str
    expires_at: str
    deliveries: dict[str, int]


class NotificationList(BaseModel):
    notifications: list[NotificationOut]


class DeliveryOut(BaseModel):
    device_id: int
    transport: str = Field(
        description="The transport that carries it: the device's platform when the delivery "
        "was made (ios, android, huawei, web or channel)."
    )
    status: str = Field(
        description="queued, sent, delivered, opened, failed, expired or capped (see the docs)."
    )
    attempts: int
    reason: str | None = Field(description="The last reason the provider or Pushgate gave.")
    created_at: str
    sent_at: str | None
    delivered_at: str | None
    updated_at: str


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next_after_device_id: int | None = Field(
        description="More deliveries follow: pass this as `after_device_id` for the next page."
    )


class DeliveryCounts(BaseModel):
    app_id: str | None = Field(description="The app counted; null: every app of the account.")
    counts: dict[str, int] = Field(description="Deliveries by status, every status listed.")
    total: int


def _maybe_iso(ms: int | None) -> str | None:
    return iso_ms(ms) if ms is not None else None


def _counts(app_key: str | None, counts: dict[str, int]) -> DeliveryCounts:
    return DeliveryCounts(app_id=app_key, counts=counts, total=sum(counts.values()))


def notifications_router(
    queries: NotificationQueries, current_account: AccountDependency
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["notifications"], route_class=GuardedRoute)
    auth = Depends(current_account)

    @router.get("/notifications", response_model=NotificationList)
    async def list_notifications(
        limit: int = Query(50, ge=1, le=500), account: Account = auth
    ) -> NotificationList:
        """The account's latest notifications, newest first, with delivery counts by status."""
        items = await queries.latest(account.id, limit)
        return NotificationList(
            notifications=[
                NotificationOut(
                    id=n.id,
                    app_id=n.app_key,
                    event=n.event,
                    title=n.title,
                    message=n.message,
                    created_at=iso_ms(n.created_ms),
                    expires_at=iso_ms(n.expires_ms),
                    deliveries=n.deliveries,
                )
                for n in items
            ]
        )

    @router.get("/notifications/{notification_id}/deliveries", response_model=DeliveryList)
    async def list_deliveries(
        notification_id: int = Path(ge=1, le=MAX_ID),
        status: Annotated[
            DeliveryStatus | None, Query(description="Only deliveries in this status.")
        ] = None,
        limit: int = Query(
            DELIVERY_PAGE, ge=1, le=MAX_DELIVERY_PAGE, description="At most this many."
        ),
        after_device_id: int = Query(
            0,
            ge=0,
            le=MAX_ID,
            description="Only deliveries to devices with a greater id (the previous page's "
            "`next_after_device_id`).",
        ),
        account: Account = auth,
    ) -> DeliveryList:
        """One delivery per device, by device id: transport, status, attempts, last reason and
        timestamps."""
        page = await queries.deliveries(
            account.id,
            notification_id,
            status=status,
            after_device_id=after_device_id,
            limit=limit,
        )
        return DeliveryList(
            deliveries=[
                DeliveryOut(
                    device_id=r.device_id,
                    transport=r.transport,
                    status=r.status,
                    attempts=r.attempts,
                    reason=r.reason,
                    created_at=iso_ms(r.created_ms),
                    sent_at=_maybe_iso(r.sent_ms),
                    delivered_at=_maybe_iso(r.delivered_ms),
                    updated_at=iso_ms(r.updated_ms),
                )
                for r in page.deliveries
            ],
            next_after_device_id=page.next_after_device_id,
        )

    @router.get("/delivery-counts", response_model=DeliveryCounts)
    async def account_delivery_counts(account: Account = auth) -> DeliveryCounts:
        """Deliveries of all the account's notifications, counted by status."""
        return _counts(None, await queries.delivery_counts(account.id))

    @router.get("/apps/{app_id}/delivery-counts", response_model=DeliveryCounts)
    async def app_delivery_counts(
        app_id: str = Path(
            min_length=1, max_length=64, description="The app's appID (its Instapush app id)."
        ),
        account: Account = auth,
    ) -> DeliveryCounts:
        """Deliveries of one app's notifications, counted by status. An app of another
        account is not found."""
        return _counts(app_id, await queries.delivery_counts(account.id, app_id))

    return router
