"""Native API: send a notification with everything a provider can show.

    POST /api/v1/notifications   {"app_id", "message", "title"?, "data"?, "image_url"?,
                                  "deep_link"?, "sound"?, "badge"?, "collapse_key"?,
                                  "priority"?, "ttl_seconds"?}

It reaches every enabled device of the account, each through its platform's transport with the
app's provider credentials; answers 201 with the notification id once it is durable.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushgate.api.body import no_nul, no_nul_inside
from pushgate.api.native.deps import AccountDependency
from pushgate.api.native.route import GuardedRoute
from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.domain.push_options import PushOptions
from pushgate.domain.templates import MAX_MESSAGE_CHARS
from pushgate.services.accounts import Account
from pushgate.services.apps import AppService
from pushgate.services.send import MAX_DATA_BYTES, SendService


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

    _no_nul = field_validator(
        "message", "title", "image_url", "deep_link", "sound", "collapse_key"
    )(no_nul)
    _no_nul_data = field_validator("data")(no_nul_inside)


class SendOut(BaseModel):
    id: int


def send_router(
    apps: AppService, send: SendService, current_account: AccountDependency
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["notifications"], route_class=GuardedRoute)
    auth = Depends(current_account)

    @router.post("/notifications", response_model=SendOut, status_code=201)
    async def send_notification(body: SendIn, account: Account = auth) -> SendOut:
        """Send a notification to every enabled device of the account."""
        app = await apps.of_account(account.id, body.app_id)
        if app is None:
            raise NotFound(f"No app {body.app_id} in this account")
        try:
            options = PushOptions(
                image_url=body.image_url,
                deep_link=body.deep_link,
                sound=body.sound,
                badge=body.badge,
                collapse_key=body.collapse_key,
                priority=body.priority,
            )
        except InvalidInput as exc:
            raise InvalidInput(f"Invalid request: {exc.message}") from exc
        notification_id = await send.send_message(
            app,
            title=body.title,
            message=body.message,
            data=body.data or {},
            options=options,
            ttl_seconds=body.ttl_seconds,
        )
        return SendOut(id=notification_id)

    return router
