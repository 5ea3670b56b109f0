"""Sendings due later (Push.express one-time sendings, native sends at the same local time in
each timezone): the account's sendings, one sending with its pushes, state and statistics,
its pushes replaced or a new one added, and cancelling it before it starts. Every rule (who
owns what, what may change when) is ``SendingService``'s."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from pushgate.dashboard.web import PREFIX, Dashboard, Page, redirect
from pushgate.domain.errors import Conflict, InvalidInput
from pushgate.domain.schedules import STATES, format_offset, wall_of
from pushgate.services.sendings import PushContent, SendingView
from pushgate.services.stats import STATUSES

LISTED = 200
MAX_TITLE = 200


def wall_time(view: SendingView) -> str:
    """The wall time a sending is due at, with its offset (``local``: in each timezone)."""
    when = wall_of(view.wall_ms).strftime("%Y-%m-%d %H:%M")
    offset = format_offset(view.offset_minutes)
    if view.local_time:
        return f"{when} local time (devices without a timezone: {offset})"
    return f"{when} {offset}"


def push_ids_of(text: str) -> list[int]:
    """Push ids typed as ``12, 13 14``."""
    ids = []
    for part in text.replace(",", " ").split():
        if not part.isdigit() or len(part) > 18:
            raise InvalidInput(f"pushes: {part[:40]!r} is not a push id")
        ids.append(int(part))
    return ids


def routes(dash: Dashboard) -> list[Route]:
    sendings = dash.rt.sendings

    async def list_sendings(page: Page) -> Response:
        state = page.request.query_params.get("state") or None
        if state not in (None, *STATES):
            state = None
        listed = await sendings.list(page.account_id, state=state, limit=LISTED)
        return dash.show(
            page,
            "sendings.html",
            sendings=listed,
            state=state,
            states=STATES,
            wall_time=wall_time,
        )

    async def show(page: Page, sending_id: int, status: int = 200, **extra: Any) -> Response:
        view = await sendings.get(page.account_id, sending_id, counts=True)
        pushes = [await sendings.get_push(page.account_id, p) for p in view.push_ids]
        return dash.show(
            page,
            "sending.html",
            status,
            sending=view,
            pushes=pushes,
            when=wall_time(view),
            statuses=STATUSES,
            error=extra.get("error"),
            form=extra.get("form", {}),
        )

    async def show_sending(page: Page) -> Response:
        return await show(page, page.id("sending_id"))

    async def cancel(page: Page) -> Response:
        sending_id = page.id("sending_id")
        try:
            await sendings.cancel(page.account_id, sending_id)
        except Conflict as exc:
            return await show(page, sending_id, 409, error=exc.message)
        return redirect(f"/sendings/{sending_id}")

    async def bind(page: Page) -> Response:
        sending_id = page.id("sending_id")
        await sendings.get(page.account_id, sending_id)  # NotFound before anything else
        try:
            await sendings.bind_pushes(
                page.account_id, sending_id, push_ids_of(page.text("pushes"))
            )
        except (InvalidInput, Conflict) as exc:
            form = {"pushes": page.text("pushes")}
            return await show(page, sending_id, exc.status, error=exc.message, form=form)
        return redirect(f"/sendings/{sending_id}")

    async def add_push(page: Page) -> Response:
        sending_id = page.id("sending_id")
        view = await sendings.get(page.account_id, sending_id)
        title, message = page.text("title") or None, page.text("message")
        form = {"title": title or "", "message": message}
        try:
            if not message:
                raise InvalidInput("message: the new push's message is required")
            if title is not None and len(title) > MAX_TITLE:
                raise InvalidInput(f"title: at most {MAX_TITLE} characters")
            if view.state != "waiting":
                raise Conflict(f"sending {sending_id} is {view.state}: its pushes cannot change")
            push = await sendings.create_push(
                page.account_id, PushContent(message=message, title=title)
            )
            try:
                await sendings.bind_pushes(page.account_id, sending_id, [*view.push_ids, push.id])
            except (InvalidInput, Conflict):
                await sendings.delete_push(page.account_id, push.id)
                raise
        except (InvalidInput, Conflict) as exc:
            return await show(page, sending_id, exc.status, error=exc.message, form=form)
        return redirect(f"/sendings/{sending_id}")

    base = f"{PREFIX}/sendings"
    one = base + "/{sending_id:int}"
    return [
        Route(base, dash.page(list_sendings), methods=["GET"]),
        Route(one, dash.page(show_sending), methods=["GET"]),
        Route(one + "/cancel", dash.page(cancel), methods=["POST"]),
        Route(one + "/pushes", dash.page(bind), methods=["POST"]),
        Route(one + "/pushes/new", dash.page(add_push), methods=["POST"]),
    ]
