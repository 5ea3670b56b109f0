"""Apps: list and create, rename, the secret revealed on demand, provider credentials
(uploaded through ``CredentialService``: its checks, its messages), the VAPID public key, and
the app's campaigns with their statistics (``StatsService``).

A credential the service refuses is shown again with the message next to the field it names
(or above the form when it names none)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pushgate.dashboard.charts import timeline_chart
from pushgate.dashboard.web import PREFIX, Dashboard, Page, redirect
from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.services.apps import AppChanges
from pushgate.services.stats import STATUSES

# The fields of each upload form, in the order their names are looked for in a message.
FIELDS = {
    "ios": ("private_key", "key_id", "team_id", "topic", "environment"),
    "android": ("service_account",),
    "huawei": ("client_secret", "app_id"),
}
MAX_FILE_BYTES = 64 * 1024


def field_of(platform: str, message: str) -> str:
    """The form field a refusal's message is about (``form``: none of them)."""
    for name in FIELDS.get(platform, ()):
        if name in message:
            return name
    return "form"


async def _file_text(page: Page, name: str) -> str | None:
    upload = page.file(name)
    if upload is None:
        return None
    raw = await upload.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidInput(f"{name}: the file is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name}: the file is not text") from exc


async def _credential_body(page: Page, platform: str) -> dict[str, Any]:
    """What the form gives, as the credential service takes it."""
    if platform == "ios":
        return {
            "private_key": await _file_text(page, "private_key") or "",
            **{name: page.text(name) for name in ("key_id", "team_id", "topic", "environment")},
        }
    if platform == "android":
        text = await _file_text(page, "service_account")
        if text is None:
            raise InvalidInput("service_account: choose the service account's JSON key file")
        try:
            return {"service_account": orjson.loads(text)}
        except orjson.JSONDecodeError as exc:
            raise InvalidInput("service_account: the file is not JSON") from exc
    return {"app_id": page.text("app_id"), "client_secret": page.text("client_secret")}


def routes(dash: Dashboard) -> list[Route]:
    rt = dash.rt

    async def app_page(page: Page, app_key: str, status: int = 200, **extra: Any) -> Response:
        found = await rt.apps.get(page.account_id, app_key)
        try:
            vapid: str | None = await rt.credentials.vapid_public_key(app_key)
        except NotFound:
            vapid = None
        return dash.show(
            page,
            "app.html",
            status,
            app=found.app,
            vapid=vapid,
            credentials=await rt.credentials.list(page.account_id, app_key),
            settings=await rt.apps.settings(page.account_id, app_key),
            errors=extra.pop("errors", {}),
            form=extra.pop("form", {}),
            **extra,
        )

    async def list_apps(page: Page) -> Response:
        apps = [item.app for item in await rt.apps.list(page.account_id)]
        return dash.show(page, "apps.html", apps=apps, error=None)

    async def create_app(page: Page) -> Response:
        try:
            created = await rt.apps.create(page.account_id, page.text("title"))
        except InvalidInput as exc:
            apps = [item.app for item in await rt.apps.list(page.account_id)]
            return dash.show(page, "apps.html", 400, apps=apps, error=exc.message)
        return redirect(f"/apps/{created.app.app_key}")

    async def show_app(page: Page) -> Response:
        return await app_page(page, page.request.path_params["app_key"])

    async def rename(page: Page) -> Response:
        app_key = page.request.path_params["app_key"]
        try:
            await rt.apps.update(page.account_id, app_key, AppChanges(title=page.text("title")))
        except InvalidInput as exc:
            return await app_page(page, app_key, 400, errors={"rename": {"title": exc.message}})
        return redirect(f"/apps/{app_key}")

    async def change_settings(page: Page) -> Response:
        """The app's frequency cap and default web push icon (empty: none)."""
        app_key = page.request.path_params["app_key"]
        await rt.apps.get(page.account_id, app_key)  # NotFound before reading anything else
        cap_text, icon = page.text("frequency_cap"), page.text("default_icon_url") or None
        form = {"frequency_cap": cap_text, "default_icon_url": icon or ""}
        try:
            if cap_text and not cap_text.isdigit():
                raise InvalidInput(
                    "frequency_cap must be a whole number of notifications, or empty"
                )
            await rt.apps.update(
                page.account_id,
                app_key,
                AppChanges(
                    set_frequency_cap=True,
                    frequency_cap=int(cap_text) if cap_text else None,
                    set_default_icon_url=True,
                    default_icon_url=icon,
                ),
            )
        except InvalidInput as exc:
            field = "default_icon_url" if "icon" in exc.message else "frequency_cap"
            errors = {"settings": {field: exc.message}}
            return await app_page(page, app_key, 400, errors=errors, form=form)
        return await app_page(page, app_key, saved="Settings saved.")

    async def secret(page: Page) -> Response:
        found = await rt.apps.get(page.account_id, page.request.path_params["app_key"])
        body = dash.env.get_template("secret.html").render(secret=found.secret)
        return HTMLResponse(body)

    async def upload(page: Page) -> Response:
        app_key = page.request.path_params["app_key"]
        platform = page.request.path_params["platform"]
        if platform not in FIELDS:
            raise NotFound(f"No credential form for {platform}")
        await rt.apps.get(page.account_id, app_key)  # NotFound before reading anything else
        form = {k: v for k, v in (page.form or {}).items() if isinstance(v, str) and k != "csrf"}
        form.pop("client_secret", None)
        try:
            body = await _credential_body(page, platform)
            await rt.credentials.put(page.account_id, app_key, platform, body)
        except InvalidInput as exc:
            errors = {platform: {field_of(platform, exc.message): exc.message}}
            return await app_page(page, app_key, 400, errors=errors, form=form)
        return await app_page(page, app_key, saved=f"{platform} credentials saved.")

    async def campaigns(page: Page) -> Response:
        app_key = page.request.path_params["app_key"]
        found = await rt.apps.get(page.account_id, app_key)
        return dash.show(
            page,
            "campaigns.html",
            app=found.app,
            campaigns=await rt.stats.campaigns(page.account_id, app_key),
            statuses=STATUSES,
        )

    async def campaign(page: Page) -> Response:
        app_key = page.request.path_params["app_key"]
        campaign_id = int(page.request.path_params["campaign_id"])
        found = await rt.apps.get(page.account_id, app_key)
        view = await rt.stats.campaign_by_id(page.account_id, app_key, campaign_id)
        return dash.show(
            page,
            "campaign.html",
            app=found.app,
            campaign=view,
            chart=timeline_chart(await rt.stats.timeline(campaign_id)),
            statuses=STATUSES,
        )

    async def generate_vapid(page: Page) -> Response:
        app_key = page.request.path_params["app_key"]
        await rt.credentials.generate_vapid(page.account_id, app_key, None)
        return redirect(f"/apps/{app_key}")

    base = f"{PREFIX}/apps"
    return [
        Route(base, dash.page(list_apps), methods=["GET"]),
        Route(base, dash.page(create_app), methods=["POST"]),
        Route(base + "/{app_key}", dash.page(show_app), methods=["GET"]),
        Route(base + "/{app_key}/rename", dash.page(rename), methods=["POST"]),
        Route(base + "/{app_key}/secret", dash.page(secret), methods=["POST"]),
        Route(base + "/{app_key}/settings", dash.page(change_settings), methods=["POST"]),
        Route(base + "/{app_key}/campaigns", dash.page(campaigns), methods=["GET"]),
        Route(
            base + "/{app_key}/campaigns/{campaign_id:int}", dash.page(campaign), methods=["GET"]
        ),
        Route(
            base + "/{app_key}/credentials/web/generate",
            dash.page(generate_vapid),
            methods=["POST"],
        ),
        Route(base + "/{app_key}/credentials/{platform}", dash.page(upload), methods=["POST"]),
    ]
