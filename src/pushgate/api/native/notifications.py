"""Native API: an account's latest notifications and one notification's deliveries."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from pushgate.api.native.deps import AccountDependency
from pushgate.channel.messages import iso_ms
from pushgate.domain.errors import MAX_ID
from pushgate.services.accounts import Account
from pushgate.services.notifications import NotificationQueries


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
    status: str
    attempts: int
    reason: str | None
    created_at: str
    sent_at: str | None
    delivered_at: str | None
    updated_at: str


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


def _maybe_iso(ms: int | None) -> str | None:
    return iso_ms(ms) if ms is not None else None


def notifications_router(
    queries: NotificationQueries, current_account: AccountDependency
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])
    auth = Depends(current_account)

    @router.get("", response_model=NotificationList)
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

    @router.get("/{notification_id}/deliveries", response_model=DeliveryList)
    async def list_deliveries(
        notification_id: int = Path(ge=1, le=MAX_ID), account: Account = auth
    ) -> DeliveryList:
        """One delivery per device: status, attempts, last reason and timestamps."""
        records = await queries.deliveries(account.id, notification_id)
        return DeliveryList(
            deliveries=[
                DeliveryOut(
                    device_id=r.device_id,
                    status=r.status,
                    attempts=r.attempts,
                    reason=r.reason,
                    created_at=iso_ms(r.created_ms),
                    sent_at=_maybe_iso(r.sent_ms),
                    delivered_at=_maybe_iso(r.delivered_ms),
                    updated_at=iso_ms(r.updated_ms),
                )
                for r in records
            ]
        )

    return router
