"""Native API: sendings due later (Push.express one-time sendings, and native sends at the
same local time in each timezone).

GET  /api/v1/sendings[?state=]        the account's sendings, newest first
GET  /api/v1/sendings/{id}            one sending, its pushes, its state and its statistics
POST /api/v1/sendings/{id}/cancel     cancel a sending that has not started
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from pushgate.api.native.deps import AccountDependency
from pushgate.api.native.stats import StatsOut, stats_out
from pushgate.domain.errors import MAX_ID
from pushgate.domain.schedules import format_offset, wall_of
from pushgate.services.accounts import Account
from pushgate.services.sendings import SendingService, SendingView
from pushgate.services.stats import Counts
from pushgate.web.route import GuardedRoute

SendingId = Annotated[int, Path(ge=1, le=MAX_ID)]
State = Literal["waiting", "running", "done", "cancelled"]


class CountsOut(StatsOut):
    notifications: int = Field(description="Notifications made: one per app, push and offset.")


class SendingOut(BaseModel):
    id: int
    name: str
    source: str = Field(description="Which API made it: push-express or native.")
    wall_time: str = Field(description="The date and time it is due at, as a wall clock shows.")
    offset: str = Field(
        description="The offset it is due at; for a local-time sending, the offset of devices "
        "without a timezone."
    )
    local_time: bool = Field(description="Due at the wall time in each device's own timezone.")
    state: State
    pushes: list[int]
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    counts: CountsOut | None = None


class SendingList(BaseModel):
    sendings: list[SendingOut]


def _counts(counts: Counts) -> CountsOut:
    return CountsOut(**stats_out(counts).model_dump(), notifications=counts.notifications)


def sending_out(view: SendingView) -> SendingOut:
    return SendingOut(
        id=view.id,
        name=view.name,
        source=view.source,
        wall_time=wall_of(view.wall_ms).strftime("%Y-%m-%dT%H:%M:%S"),
        offset=format_offset(view.offset_minutes),
        local_time=view.local_time,
        state=view.state,
        pushes=list(view.push_ids),
        created_ms=view.created_ms,
        started_ms=view.started_ms,
        finished_ms=view.finished_ms,
        counts=None if view.counts is None else _counts(view.counts),
    )


def sendings_router(sendings: SendingService, current_account: AccountDependency) -> APIRouter:
    router = APIRouter(prefix="/api/v1/sendings", tags=["sendings"], route_class=GuardedRoute)
    auth = Depends(current_account)

    @router.get("", response_model=SendingList)
    async def list_sendings(
        state: State | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        account: Account = auth,
    ) -> SendingList:
        """The account's sendings, newest first."""
        listed = await sendings.list(account.id, state=state, limit=limit)
        return SendingList(sendings=[sending_out(v) for v in listed])

    @router.get("/{sending_id}", response_model=SendingOut)
    async def show_sending(sending_id: SendingId, account: Account = auth) -> SendingOut:
        """One sending with its statistics (from its deliveries)."""
        return sending_out(await sendings.get(account.id, sending_id, counts=True))

    @router.post("/{sending_id}/cancel", response_model=SendingOut)
    async def cancel_sending(sending_id: SendingId, account: Account = auth) -> SendingOut:
        """Cancel a sending that has not started: it sends nothing (409 once it started)."""
        return sending_out(await sendings.cancel(account.id, sending_id))

    return router
