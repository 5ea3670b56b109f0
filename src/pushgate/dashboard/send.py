"""Sending from the dashboard, and what became of it: a form read as the native API's send
request (``api.native.send.SendIn``: the same checks, the same ``SendCommand``), the
account's latest notifications with their deliveries by status, and one notification's
statistics and deliveries."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import Route

from pushgate.api.native.send import SendIn, send_command
from pushgate.dashboard.web import PREFIX, Dashboard, Page, redirect
from pushgate.domain.errors import InvalidInput, NotFound

FIELDS = ("app_id", "title", "message", "image_url", "deep_link", "priority", "send_at")
LATEST = 50
DELIVERIES = 200


def _errors(exc: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "form"
        found.setdefault(name if name in FIELDS else "form", str(error["msg"]))
    return found


def routes(dash: Dashboard) -> list[Route]:
    rt = dash.rt
    accepted = rt.metrics.accepted("dashboard")

    async def show_form(page: Page, status: int = 200, **extra: Any) -> Response:
        return dash.show(
            page,
            "send.html",
            status,
            apps=[item.app for item in await rt.apps.list(page.account_id)],
            form=extra.get("form", {}),
            errors=extra.get("errors", {}),
            latest=await rt.notifications.latest(page.account_id, LATEST),
        )

    async def send_page(page: Page) -> Response:
        return await show_form(page)

    async def send(page: Page) -> Response:
        form = {name: page.text(name) for name in FIELDS}
        given = {name: value for name, value in form.items() if value}
        try:
            body = SendIn.model_validate(given)
        except ValidationError as exc:
            return await show_form(page, 400, form=form, errors=_errors(exc))
        app = await rt.apps.of_account(page.account_id, body.app_id)
        if app is None:
            raise NotFound(f"No app {body.app_id} in this account")
        try:
            command = await send_command(body, app, rt.subscribers, None)
            notification_id = await rt.send.send(command)
        except InvalidInput as exc:
            return await show_form(page, 400, form=form, errors={"form": exc.message})
        accepted(notification_id)
        return redirect(f"/notifications/{notification_id}")

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
        Route(
            f"{PREFIX}/notifications/{{notification_id:int}}",
            dash.page(notification),
            methods=["GET"],
        ),
    ]
