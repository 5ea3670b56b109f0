"""Native API: send a notification with everything a provider can show.

    POST /api/v1/notifications   {"app_id", "message", "title"?, "data"?, "image_url"?,
                                  "deep_link"?, "sound"?, "badge"?, "collapse_key"?,
                                  "priority"?, "ttl_seconds"?}

It reaches the app's devices that its ``audience`` selects (without one: every enabled device
of the app, and the account's personal channel devices), each through its platform's transport
with the app's provider credentials, in the device's language when ``translations`` are
given; answers 201 with the notification id once it is durable. ``send_at`` holds it until
then; an ``Idempotency-Key`` header makes a retried request answer the first id and send
nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushgate.api.native.audience import AudienceIn, CampaignIn, TranslationsIn
from pushgate.api.native.deps import AccountDependency
from pushgate.domain.audience import Audience
from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.domain.push_options import PushOptions
from pushgate.domain.templates import MAX_MESSAGE_CHARS
from pushgate.services.accounts import Account
from pushgate.services.apps import App, AppService
from pushgate.services.send import MAX_DATA_BYTES, SendCommand, SendService, fingerprint
from pushgate.services.sendings import SendingService
from pushgate.services.subscribers import SubscriberService
from pushgate.web.body import no_nul, no_nul_inside
from pushgate.web.route import GuardedRoute


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_id: str = Field(
        min_length=1, max_length=64, description="The app whose provider credentials are used."
    )
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, description="The body.")
    title: str | None = Field(None, min_length=1, max_length=200)
    data: dict[str, Any] | None = Field(
        None,
        description=f"Key/value data for the app (at most {MAX_DATA_BYTES} bytes as JSON). "
        "Providers that only take strings (FCM) get non-string values as JSON text.",
    )
    image_url: str | None = Field(None, description="An https:// image shown with it.")
    deep_link: str | None = Field(None, description="URL or app route opened on tap.")
    sound: str | None = Field(None, description='A sound file name, or "default".')
    badge: int | None = Field(None, strict=True, description="The app icon's badge count.")
    collapse_key: str | None = Field(
        None, description="A newer notification with the same key replaces an undelivered one."
    )
    priority: Literal["high", "normal"] = "high"
    ttl_seconds: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=28 * 86_400,
        description="How long providers and devices keep it; default: the server's setting.",
    )

    audience: AudienceIn | None = Field(
        None,
        description="Which of the app's devices get it; without it: every enabled device of "
        "the app and the account's personal channel devices.",
    )
    translations: TranslationsIn | None = Field(
        None, description="The title and message in other languages, chosen per device."
    )
    campaign: CampaignIn | None = Field(
        None, description="The campaign its statistics count towards."
    )
    send_at: datetime | None = Field(
        None,
        description="When to send it (ISO 8601 with an offset, e.g. `2026-12-24T18:00:00Z`); "
        "default: now. Its TTL counts from then.",
    )
    local_time: bool = Field(
        False,
        description="Send at `send_at`'s wall time in each device's own timezone (the device's, "
        "else its subscriber's); devices without one use `send_at`'s offset. It answers the "
        "`sending_id` (see /api/v1/sendings) instead of a notification id.",
    )

    _no_nul = field_validator(
        "message", "title", "image_url", "deep_link", "sound", "collapse_key"
    )(no_nul)
    _no_nul_data = field_validator("data")(no_nul_inside)


class SendOut(BaseModel):
    id: int | None = Field(None, description="The notification's id (not for a local-time send).")
    sending_id: int | None = Field(
        None, description="A local-time send: the sending that holds it until each offset's time."
    )


async def resolve_audience(
    given: AudienceIn, app: App, subscribers: SubscriberService
) -> tuple[Audience, int, int]:
    """The core's ``Audience`` of a request's audience (its subscribers' identifiers looked
    up in the app), with how many identifiers named nobody and how many opted out."""
    ids = None
    no_user = opted_out = 0
    if given.subscribers is not None:
        targets = await subscribers.targets(
            app, given.identifiers(), optin_required=given.optin_required
        )
        ids, no_user, opted_out = targets.subscriber_ids, targets.no_user, targets.opted_out
    return given.to_audience(ids), no_user, opted_out


async def send_command(
    body: SendIn, app: App, subscribers: SubscriberService, idempotency_key: str | None
) -> SendCommand:
    """The ``SendCommand`` of a request body (``pushgate send`` reads its options into one)."""
    options = PushOptions(
        image_url=body.image_url,
        deep_link=body.deep_link,
        sound=body.sound,
        badge=body.badge,
        collapse_key=body.collapse_key,
        priority=body.priority,
    )
    audience = None
    no_user = opted_out = 0
    if body.audience is not None:
        audience, no_user, opted_out = await resolve_audience(body.audience, app, subscribers)
    due_ms = offset_minutes = None
    if body.send_at is not None:
        offset = body.send_at.utcoffset()
        if offset is None:
            raise InvalidInput("send_at needs an offset, e.g. 2026-12-24T18:00:00Z")
        due_ms = int(body.send_at.timestamp() * 1000)
        offset_minutes = int(offset.total_seconds() // 60)
    if body.local_time and due_ms is None:
        raise InvalidInput(
            "local_time needs send_at: the wall time, e.g. 2026-12-24T09:00:00+01:00"
        )
    if body.local_time and idempotency_key is not None:
        raise InvalidInput("a local_time send takes no Idempotency-Key")
    return SendCommand(
        app=app,
        title=body.title,
        message=body.message,
        data=body.data or {},
        options=options,
        audience=audience,
        translations=None if body.translations is None else body.translations.to_translations(),
        ttl_seconds=body.ttl_seconds,
        campaign=None if body.campaign is None else body.campaign.to_campaign(),
        due_ms=due_ms,
        offset_minutes=offset_minutes,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint(body.model_dump(mode="json")),
        no_user=no_user,
        opted_out=opted_out,
    )


def send_router(
    apps: AppService,
    send: SendService,
    subscribers: SubscriberService,
    current_account: AccountDependency,
    accepted: Callable[[int], None],
    sendings: SendingService,
) -> APIRouter:
    """``accepted(notification_id)`` is called for each notification it accepted."""
    router = APIRouter(prefix="/api/v1", tags=["notifications"], route_class=GuardedRoute)
    auth = Depends(current_account)

    @router.post(
        "/notifications", response_model=SendOut, status_code=201, response_model_exclude_none=True
    )
    async def send_notification(
        body: SendIn,
        idempotency_key: Annotated[
            str | None,
            Header(
                max_length=200,
                description="Any unique string of yours: a retried request with the same key "
                "answers the first request's id and sends nothing again.",
            ),
        ] = None,
        account: Account = auth,
    ) -> SendOut:
        """Send a notification to the app's devices its audience selects."""
        app = await apps.of_account(account.id, body.app_id)
        if app is None:
            raise NotFound(f"No app {body.app_id} in this account")
        try:
            command = await send_command(body, app, subscribers, idempotency_key)
        except InvalidInput as exc:
            raise InvalidInput(f"Invalid request: {exc.message}") from exc
        if body.local_time:
            sending_id = await sendings.at_local_time(command, await send.campaign_id(command))
            return SendOut(id=None, sending_id=sending_id)
        notification_id = await send.send(command)
        accepted(notification_id)
        return SendOut(id=notification_id)

    return router
