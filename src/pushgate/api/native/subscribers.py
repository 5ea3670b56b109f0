"""Native API: an app's subscribers (docs/audience.md).

PUT    /api/v1/apps/{app_id}/subscribers      upsert by identifiers, with profile fields
GET    /api/v1/apps/{app_id}/subscribers      search by an identifier, or list (paged)
GET    /api/v1/subscribers/{subscriber_id}    one subscriber: profile, attributes, devices
DELETE /api/v1/subscribers/{subscriber_id}    erase it with its devices and their deliveries
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from pushgate.api.native.apps import AppId
from pushgate.api.native.deps import AccountDependency
from pushgate.api.native.subscriber_records import subscriber_record
from pushgate.domain.errors import MAX_ID, InvalidInput
from pushgate.domain.subscribers import parse_identifiers, parse_profile
from pushgate.services.accounts import Account
from pushgate.services.subscribers import SubscriberService, SubscriberView
from pushgate.web.route import GuardedRoute

SubscriberId = Annotated[int, Path(ge=1, le=MAX_ID)]


class SubscriberIn(BaseModel):
    """Find the subscriber by its identifiers (create it when none names one) and set what
    is given; what is left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    identifiers: dict[str, str | int] = Field(
        description="`external_id`, `user_id`, `uuid`, `email`, `phone_number` and custom keys "
        "(an `INSIDER.` prefix is accepted): every one given must name the same subscriber.",
        examples=[{"external_id": "u-42", "email": "ann@example.com"}],
    )
    language: str | None = Field(None, description="BCP 47, e.g. `en`, `pt-BR`.")
    country: str | None = Field(None, description="ISO 3166-1 alpha-2, e.g. `NL`.")
    timezone: str | None = Field(None, description="IANA zone name or `+HH:MM`.")
    optins: dict[str, bool] | None = Field(
        None, description="Any of `push`, `email`, `sms`, `location`."
    )
    attributes: dict[str, Any] | None = Field(
        None,
        description="`d_<name>` (default) or `c_<name>` (custom): a string, number, boolean, "
        '`{"date": "2026-05-01T12:00:00Z"}`, or a list of one of these; null removes it.',
        examples=[{"c_plan": "pro", "c_age": 42, "d_wp_browser": "Edg"}],
    )
    tags: list[str] | None = Field(None, description="The tags, replacing the earlier ones.")
    add_tags: list[str] | None = Field(None, description="Tags to add to the earlier ones.")
    events: list[str | dict[str, str]] | None = Field(
        None,
        description='Events to record: names, or `{"name": "reg", "at": "<ISO 8601>"}`.',
    )


class SubscriberOut(BaseModel):
    id: int
    app_id: str | None
    identifiers: dict[str, str]
    language: str | None
    country: str | None
    timezone: str | None
    optins: dict[str, bool | None]
    attributes: dict[str, Any]
    tags: list[str]
    events: list[dict[str, Any]]
    last_active_at: str | None
    created_at: str
    updated_at: str | None
    device_ids: list[int]


class SubscriberList(BaseModel):
    subscribers: list[SubscriberOut]


class ErasedOut(BaseModel):
    deleted_devices: int


def _out(view: SubscriberView) -> SubscriberOut:
    return SubscriberOut(**subscriber_record(view))


def subscribers_router(
    subscribers: SubscriberService, current_account: AccountDependency
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["subscribers"], route_class=GuardedRoute)
    auth = Depends(current_account)

    @router.put(
        "/apps/{app_id}/subscribers",
        response_model=SubscriberOut,
        responses={200: {"description": "Updated."}, 201: {"description": "Created."}},
    )
    async def upsert_subscriber(
        app_id: AppId, body: SubscriberIn, response: Response, account: Account = auth
    ) -> SubscriberOut:
        """Create or update the app's subscriber that the identifiers name."""
        raw = body.model_dump(exclude_none=True)
        try:
            identifiers = parse_identifiers(raw.pop("identifiers"))
            profile = parse_profile(raw)
        except InvalidInput as exc:
            raise InvalidInput(f"Invalid request: {exc.message}") from exc
        view, created = await subscribers.upsert(account.id, app_id, identifiers, profile)
        response.status_code = 201 if created else 200
        return _out(view)

    @router.get("/apps/{app_id}/subscribers", response_model=SubscriberList)
    async def search_subscribers(
        app_id: AppId,
        request: Request,
        after: Annotated[int, Query(ge=0, le=MAX_ID, description="List after this id.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        account: Account = auth,
    ) -> SubscriberList:
        """With identifier query parameters (`?email=ann@example.com`, `?member_no=A-17`):
        the subscriber they name. Without: the app's subscribers in id order, from `after`."""
        given = {
            key: value
            for key, value in request.query_params.items()
            if key not in ("after", "limit")
        }
        try:
            identifiers = parse_identifiers(given, field="query", lenient=True) if given else None
        except InvalidInput as exc:
            raise InvalidInput(f"Invalid request: {exc.message}") from exc
        if given and not identifiers:
            return SubscriberList(subscribers=[])
        found = await subscribers.search(account.id, app_id, identifiers, after=after, limit=limit)
        return SubscriberList(subscribers=[_out(view) for view in found])

    @router.get("/subscribers/{subscriber_id}", response_model=SubscriberOut)
    async def get_subscriber(subscriber_id: SubscriberId, account: Account = auth) -> SubscriberOut:
        """A subscriber: identifiers, profile, attributes, tags, events and devices."""
        return _out(await subscribers.get(account.id, subscriber_id))

    @router.delete("/subscribers/{subscriber_id}", response_model=ErasedOut)
    async def delete_subscriber(subscriber_id: SubscriberId, account: Account = auth) -> ErasedOut:
        """Erase the subscriber with its devices, their deliveries, and everything its profile
        held (a person's erasure request)."""
        return ErasedOut(deleted_devices=await subscribers.delete(account.id, subscriber_id))

    return router
