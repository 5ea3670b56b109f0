"""Native API: many subscribers with their devices in one request.

POST /api/v1/apps/{app_id}/subscribers/import   {"entries": [...]}  (at most 1,000)

Each entry is a line of ``pushgate subscribers import``'s NDJSON: the body of
``PUT /api/v1/apps/{app_id}/subscribers`` (without ``events``) with ``devices``, a list of
bodies of ``POST /api/v1/devices``. The entries are written as the import writes a batch
(``services/subscriber_import.py``): one transaction, the same rules and messages, and a
second request with the same entries changes nothing. The answer counts the subscribers and
devices made, changed and left as they were, and lists the rejected entries (by position, from
0) with the reason; the others are written.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from pushgate.api.native.apps import AppId
from pushgate.api.native.deps import AccountDependency
from pushgate.domain.errors import NotFound
from pushgate.domain.import_entries import SourceRow
from pushgate.services.accounts import Account
from pushgate.services.apps import AppService
from pushgate.services.subscriber_import import Counts, SubscriberImport
from pushgate.web.route import BulkRoute

MAX_ENTRIES = 1000


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_ENTRIES,
        description="Subscribers with their devices: each the body of `PUT "
        "/api/v1/apps/{app_id}/subscribers` (without `events`) with `devices`, a list of "
        "bodies of `POST /api/v1/devices`.",
    )


class CountsOut(BaseModel):
    new: int
    updated: int
    unchanged: int


class RejectedOut(BaseModel):
    entry: int = Field(description="The entry's position in `entries`, from 0.")
    reason: str


class BulkOut(BaseModel):
    entries: int
    subscribers: CountsOut
    devices: CountsOut
    rejected: list[RejectedOut]


def _counts(counts: Counts) -> CountsOut:
    return CountsOut(new=counts.new, updated=counts.updated, unchanged=counts.unchanged)


def bulk_router(
    apps: AppService, importer: SubscriberImport, current_account: AccountDependency
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/apps", tags=["subscribers"], route_class=BulkRoute)
    auth = Depends(current_account)

    @router.post("/{app_id}/subscribers/import", response_model=BulkOut)
    async def import_subscribers(app_id: AppId, body: BulkIn, account: Account = auth) -> BulkOut:
        """Register up to 1,000 subscribers with their devices in one request (a bulk
        registration); rejected entries are listed, the others written."""
        if await apps.of_account(account.id, app_id) is None:
            raise NotFound(f"No app {app_id} in this account")
        report = await importer.run(
            app_id,
            (SourceRow(n + 1, entry) for n, entry in enumerate(body.entries)),
            batch_size=MAX_ENTRIES,
        )
        return BulkOut(
            entries=report.rows,
            subscribers=_counts(report.subscribers),
            devices=_counts(report.devices),
            rejected=[RejectedOut(entry=r.line - 1, reason=r.reason) for r in report.rejected],
        )

    return router
