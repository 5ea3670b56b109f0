"""Sending from the dashboard, and what became of it: the Send page's form read as the
native API's send request (``dashboard/compose.py`` -> ``api.native.send.SendIn``: the same
checks, the same ``SendCommand``), with a live count of the devices its audience matches
(``AudienceCount``: one COUNT query) and previews of it on iOS, Android and the web in each
of its languages; sent now, at a time, or at the same local time in each timezone (a sending,
``SendingService.at_local_time``). Below: the account's latest notifications with their
deliveries by status, and one notification's statistics and deliveries."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pushgate.api.native.audience import AudienceIn
from pushgate.api.native.send import SendIn, resolve_audience, send_command
from pushgate.dashboard.compose import (
    OFFSETS,
    OPERATORS,
    PLATFORMS,
    TRANSLATION_ROWS,
    audience_body,
    blank_form,
    form_values,
    group_of,
    previews,
    send_body,
    validation_errors,
)
from pushgate.dashboard.web import PREFIX, Dashboard, Page, redirect
from pushgate.domain.audience import Audience
from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.services.apps import App
from pushgate.services.audience_count import AudienceCount

LATEST = 50
DELIVERIES = 200
# Without an audience a send reaches the app's devices and the account's personal ones.
DEFAULT_AUDIENCE = Audience(personal=True)


def routes(dash: Dashboard) -> list[Route]:
    rt = dash.rt
    accepted = rt.metrics.accepted("dashboard")
    counter = AudienceCount(rt.db, rt.settings.unengaged_after_days)

    async def show_form(page: Page, status: int = 200, **extra: Any) -> Response:
        return dash.show(
            page,
            "send.html",
            status,
            apps=[item.app for item in await rt.apps.list(page.account_id)],
            form=extra.get("form") or blank_form(),
            errors=extra.get("errors", {}),
            latest=await rt.notifications.latest(page.account_id, LATEST),
            platforms=PLATFORMS,
            operators=OPERATORS,
            offsets=OFFSETS,
            rows=range(TRANSLATION_ROWS),
        )

    async def app_of(page: Page, app_key: str) -> App:
        app = await rt.apps.of_account(page.account_id, app_key)
        if app is None:
            raise NotFound(f"No app {app_key} in this account")
        return app

    async def send_page(page: Page) -> Response:
        return await show_form(page)

    async def send(page: Page) -> Response:
        form = form_values(page)
        try:
            given = send_body(form)
        except InvalidInput as exc:
            return await show_form(
                page, 400, form=form, errors={group_of(exc.message): exc.message}
            )
        try:
            body = SendIn.model_validate(given)
        except ValidationError as exc:
            return await show_form(page, 400, form=form, errors=validation_errors(exc))
        app = await app_of(page, body.app_id)
        try:
            command = await send_command(body, app, rt.subscribers, None)
            if body.local_time:
                campaign_id = await rt.send.campaign_id(command)
                sending_id = await rt.sendings.at_local_time(command, campaign_id)
                return redirect(f"/sendings/{sending_id}")
            notification_id = await rt.send.send(command)
        except InvalidInput as exc:
            errors = {group_of(exc.message): exc.message}
            return await show_form(page, 400, form=form, errors=errors)
        accepted(notification_id)
        return redirect(f"/notifications/{notification_id}")

    async def count(page: Page) -> Response:
        """How many devices the form's audience matches now (an htmx fragment)."""
        form = form_values(page)
        if not form["app_id"]:
            return HTMLResponse(dash.env.get_template("audience_count.html").render())
        app = await app_of(page, form["app_id"])
        context: dict[str, Any] = {}
        try:
            given = audience_body(form)
            if given is None:
                audience, no_user = DEFAULT_AUDIENCE, 0
            else:
                try:
                    parsed = AudienceIn.model_validate(given)
                except ValidationError as exc:
                    raise InvalidInput(validation_errors_text(exc)) from None
                audience, no_user, _opted_out = await resolve_audience(parsed, app, rt.subscribers)
            context["count"] = await counter.devices(page.account_id, app.id, audience)
            context["no_user"] = no_user
        except InvalidInput as exc:
            context["error"] = exc.message
        return HTMLResponse(dash.env.get_template("audience_count.html").render(**context))

    async def preview(page: Page) -> Response:
        """The composed notification on iOS, Android and the web, per language (a fragment)."""
        form = form_values(page)
        app = await app_of(page, form["app_id"]) if form["app_id"] else None
        image = urlsplit(form["image_url"]).netloc if form["image_url"] else ""
        body = dash.env.get_template("send_preview.html").render(
            app_title=app.title if app is not None else "Your app",
            previews=previews(form),
            image=image,
            link=form["deep_link"],
        )
        return HTMLResponse(body)

    async def notification(page: Page) -> Response:
        notification_id = page.id("notification_id")
        counts = await rt.stats.notification(page.account_id, notification_id)
        found = await rt.notifications.deliveries(
            page.account_id, notification_id, limit=DELIVERIES
        )
        return dash.show(
            page,
            "notification.html",
            notification_id=notification_id,
            counts=counts,
            deliveries=found.deliveries,
            more=found.next_after_device_id is not None,
        )

    return [
        Route(f"{PREFIX}/send", dash.page(send_page), methods=["GET"]),
        Route(f"{PREFIX}/send", dash.page(send), methods=["POST"]),
        Route(f"{PREFIX}/send/count", dash.page(count), methods=["POST"]),
        Route(f"{PREFIX}/send/preview", dash.page(preview), methods=["POST"]),
        Route(
            f"{PREFIX}/notifications/{{notification_id:int}}",
            dash.page(notification),
            methods=["GET"],
        ),
    ]


def validation_errors_text(exc: ValidationError) -> str:
    """An audience's refusal in one line, each part named as the API names it."""
    return "; ".join(
        f"audience.{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors()
    )
