"""Instapush events of an app: list, create (with a preview of the message template), delete.
Templates are parsed by ``domain.templates``, events kept by ``EventService``."""

from __future__ import annotations

from typing import Any

from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pushgate.dashboard.web import PREFIX, Dashboard, Page, redirect
from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.domain.templates import parse_template, validate_trackers
from pushgate.services.apps import App


def trackers_of(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def routes(dash: Dashboard) -> list[Route]:
    rt = dash.rt

    async def app_of(page: Page) -> App:
        app_key = page.request.path_params["app_key"]
        found = await rt.apps.of_account(page.account_id, app_key)
        if found is None:
            raise NotFound(f"No app {app_key} in this account")
        return found

    async def show(page: Page, app: App, status: int = 200, **extra: Any) -> Response:
        return dash.show(
            page,
            "events.html",
            status,
            app=app,
            events=await rt.events.list(app.id),
            error=extra.get("error"),
            form=extra.get("form", {}),
        )

    async def list_events(page: Page) -> Response:
        return await show(page, await app_of(page))

    async def create(page: Page) -> Response:
        app = await app_of(page)
        try:
            await rt.events.create(
                app.id, page.text("title"), trackers_of(page.text("trackers")), page.text("message")
            )
        except (InvalidInput, Conflict) as exc:
            form = {name: page.text(name) for name in ("title", "trackers", "message")}
            return await show(page, app, 400, error=exc.message, form=form)
        return redirect(f"/apps/{app.app_key}/events")

    async def preview(page: Page) -> Response:
        await app_of(page)
        context: dict[str, Any] = {}
        try:
            names = validate_trackers(trackers_of(page.text("trackers")))
            template = parse_template(page.text("message"), names)
            context["text"] = template.render({name: f"[{name}]" for name in names})
        except InvalidInput as exc:
            context["error"] = exc.message
        return HTMLResponse(dash.env.get_template("preview.html").render(**context))

    async def delete(page: Page) -> Response:
        app = await app_of(page)
        await rt.events.delete(app.id, page.text("title"))
        return redirect(f"/apps/{app.app_key}/events")

    base = f"{PREFIX}/apps/{{app_key}}/events"
    return [
        Route(base, dash.page(list_events), methods=["GET"]),
        Route(base, dash.page(create), methods=["POST"]),
        Route(base + "/preview", dash.page(preview), methods=["POST"]),
        Route(base + "/delete", dash.page(delete), methods=["POST"]),
    ]
