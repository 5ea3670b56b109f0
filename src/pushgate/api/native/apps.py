"""Native API: the account's apps.

POST   /api/v1/apps                 {"title"}: 201 with the app's id and secret
GET    /api/v1/apps                 the apps (without secrets)
GET    /api/v1/apps/{app_id}        one app, with its secret
PATCH  /api/v1/apps/{app_id}        {"title", "frequency_cap", "default_icon_url"}
DELETE /api/v1/apps/{app_id}        the app and everything of it
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushgate.api.native.deps import AccountDependency
from pushgate.services.accounts import Account
from pushgate.services.apps import AppChanges, AppService
from pushgate.web.body import no_nul
from pushgate.web.route import GuardedRoute

AppId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The app's id (Instapush's appID).",
    ),
]


class AppIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)

    _no_nul = field_validator("title")(no_nul)


class AppUpdate(BaseModel):
    """What is given changes; `frequency_cap: null` removes the cap."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=200)
    frequency_cap: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="At most this many notifications per subscriber per day; more are "
        "`capped` (no cap by default).",
    )
    default_icon_url: str | None = Field(
        None, max_length=2048, description="An https:// icon for web pushes that name none."
    )

    _no_nul = field_validator("title", "default_icon_url")(no_nul)


class AppOut(BaseModel):
    id: str = Field(description="The app's id (Instapush's appID).")
    number: int = Field(
        description="The app's number: how Push.express filters and app groups name it."
    )
    title: str


class AppSettingsOut(AppOut):
    frequency_cap: int | None = Field(
        None, description="At most this many notifications per subscriber per day."
    )
    default_icon_url: str | None = None


class AppWithSecretOut(AppSettingsOut):
    secret: str = Field(description="The app's secret (Instapush's appSecret).")


class AppList(BaseModel):
    apps: list[AppOut]


def apps_router(apps: AppService, current_account: AccountDependency) -> APIRouter:
    router = APIRouter(prefix="/api/v1/apps", tags=["apps"], route_class=GuardedRoute)
    auth = Depends(current_account)

    @router.post("", response_model=AppWithSecretOut, status_code=201)
    async def create_app(body: AppIn, account: Account = auth) -> AppWithSecretOut:
        """A new app of the account, with its id and secret (and a VAPID key pair for Web
        Push)."""
        created = await apps.create(account.id, body.title)
        return AppWithSecretOut(
            id=created.app.app_key,
            number=created.app.id,
            title=created.app.title,
            secret=created.secret,
        )

    @router.get("", response_model=AppList)
    async def list_apps(account: Account = auth) -> AppList:
        """The account's apps, oldest first."""
        listed = await apps.list(account.id)
        return AppList(
            apps=[AppOut(id=a.app.app_key, number=a.app.id, title=a.app.title) for a in listed]
        )

    @router.get("/{app_id}", response_model=AppWithSecretOut)
    async def show_app(app_id: AppId, account: Account = auth) -> AppWithSecretOut:
        """One app, with its secret."""
        found = await apps.get(account.id, app_id)
        settings = await apps.settings(account.id, app_id)
        return AppWithSecretOut(
            id=found.app.app_key,
            number=found.app.id,
            title=found.app.title,
            secret=found.secret,
            frequency_cap=settings.frequency_cap,
            default_icon_url=settings.default_icon_url,
        )

    @router.patch("/{app_id}", response_model=AppSettingsOut)
    async def update_app(app_id: AppId, body: AppUpdate, account: Account = auth) -> AppSettingsOut:
        """Rename the app or change its settings."""
        given = body.model_fields_set
        await apps.update(
            account.id,
            app_id,
            AppChanges(
                title=body.title,
                set_frequency_cap="frequency_cap" in given,
                frequency_cap=body.frequency_cap,
                set_default_icon_url="default_icon_url" in given,
                default_icon_url=body.default_icon_url,
            ),
        )
        shown = await show_app(app_id, account)
        return AppSettingsOut.model_validate(shown.model_dump(exclude={"secret"}))

    @router.delete("/{app_id}", status_code=204, response_class=Response)
    async def delete_app(app_id: AppId, account: Account = auth) -> Response:
        """Delete the app with its devices, subscribers, notifications and their deliveries,
        events, campaigns, credentials and API keys. This cannot be undone."""
        await apps.delete(account.id, app_id)
        return Response(status_code=204)

    return router
