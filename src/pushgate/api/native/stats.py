"""Native API: statistics of notifications and campaigns, and "opened" reports.

GET  /api/v1/notifications/{id}/stats            one notification's counts
POST /api/v1/notifications/{id}/opened           {"device_ids": [...]}: their users opened it
GET  /api/v1/apps/{app_id}/campaigns             the app's campaigns with their counts
GET  /api/v1/apps/{app_id}/campaigns/{campaign}  one campaign (by your id for it)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from pushgate.api.native.apps import AppId
from pushgate.api.native.deps import AccountDependency
from pushgate.domain.errors import MAX_ID
from pushgate.services.accounts import Account
from pushgate.services.stats import CampaignView, Counts, StatsService
from pushgate.web.route import GuardedRoute
from pushgate.web.timestamps import iso_ms

MAX_OPENED_DEVICES = 1000
DeviceId = Annotated[int, Field(ge=1, le=MAX_ID)]


class StatsOut(BaseModel):
    targeted: int = Field(
        description="Every target of the request(s): deliveries made, plus `no_user` and "
        "`opted_out`."
    )
    queued: int
    sent: int
    delivered: int
    opened: int
    failed: int
    failed_by_reason: dict[str, int] = Field(
        description="Failed deliveries by reason (BadDeviceToken, Unregistered...), most first."
    )
    expired: int
    capped: int = Field(description="Kept back by the app's frequency cap.")
    no_user: int = Field(description="Identifiers that named no subscriber of the app.")
    opted_out: int = Field(description="Subscribers targeted who had withdrawn push opt-in.")


class NotificationStatsOut(StatsOut):
    notification_id: int


class CampaignOut(BaseModel):
    id: str | None = Field(description="Your id of the campaign.")
    name: str | None
    created_at: str
    notifications: int
    stats: StatsOut


class CampaignList(BaseModel):
    campaigns: list[CampaignOut]


class OpenedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_ids: list[DeviceId] = Field(
        min_length=1,
        max_length=MAX_OPENED_DEVICES,
        description="Devices (ids from POST /api/v1/devices) on which the user opened it.",
    )


class OpenedOut(BaseModel):
    opened: int = Field(
        description="Deliveries that became `opened` (not: devices of other accounts, "
        "deliveries already opened, failed or capped)."
    )


def stats_out(counts: Counts) -> StatsOut:
    return StatsOut(
        targeted=counts.targeted,
        failed_by_reason=counts.failed_by_reason,
        no_user=counts.no_user,
        opted_out=counts.opted_out,
        **counts.statuses,
    )


def _campaign_out(view: CampaignView) -> CampaignOut:
    return CampaignOut(
        id=view.external_id,
        name=view.name,
        created_at=iso_ms(view.created_ms),
        notifications=view.counts.notifications,
        stats=stats_out(view.counts),
    )


def stats_router(stats: StatsService, current_account: AccountDependency) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["statistics"], route_class=GuardedRoute)
    auth = Depends(current_account)
    notification_id = Path(ge=1, le=MAX_ID)

    @router.get("/notifications/{notification_id}/stats", response_model=NotificationStatsOut)
    async def notification_stats(
        notification_id: int = notification_id, account: Account = auth
    ) -> NotificationStatsOut:
        """Counted from the notification's delivery records (not estimated)."""
        counts = await stats.notification(account.id, notification_id)
        return NotificationStatsOut(
            notification_id=notification_id, **stats_out(counts).model_dump()
        )

    @router.post("/notifications/{notification_id}/opened", response_model=OpenedOut)
    async def opened(
        body: OpenedIn, notification_id: int = notification_id, account: Account = auth
    ) -> OpenedOut:
        """Report that users opened (tapped) the notification on these devices, e.g. from
        your app's own analytics. Devices of the channel can report it themselves
        (docs/channel.md)."""
        count = await stats.opened(account.id, notification_id, sorted(set(body.device_ids)))
        return OpenedOut(opened=count)

    @router.get("/apps/{app_id}/campaigns", response_model=CampaignList)
    async def list_campaigns(app_id: AppId, account: Account = auth) -> CampaignList:
        """The app's campaigns, oldest first, each with its statistics."""
        views = await stats.campaigns(account.id, app_id)
        return CampaignList(campaigns=[_campaign_out(view) for view in views])

    @router.get("/apps/{app_id}/campaigns/{campaign_id}", response_model=CampaignOut)
    async def campaign(
        app_id: AppId,
        campaign_id: Annotated[
            str, Path(min_length=1, max_length=64, description="Your id of the campaign.")
        ],
        account: Account = auth,
    ) -> CampaignOut:
        """One campaign: every notification sent with its id, counted together."""
        return _campaign_out(await stats.campaign(account.id, app_id, campaign_id))

    return router
