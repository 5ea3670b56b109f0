"""The web dashboard under ``/dashboard``: server-rendered pages (Jinja2) with htmx, served
from the package (no CDN), on the API's port. Pages only show and change data through the
services, always for the signed-in account. ``dashboard_routes`` gives every route."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from pushgate.dashboard import (
    apps,
    events,
    keys,
    live,
    overview,
    send,
    sendings,
    sign_in,
    subscribers,
    try_page,
)
from pushgate.dashboard.web import HERE, PREFIX, Dashboard
from pushgate.runtime import Runtime


def dashboard_routes(rt: Runtime) -> list[BaseRoute]:
    dash = Dashboard(rt)
    routes: list[BaseRoute] = [
        Mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    ]
    for module in (
        sign_in,
        overview,
        apps,
        keys,
        events,
        subscribers,
        send,
        sendings,
        try_page,
        live,
    ):
        routes.extend(module.routes(dash))
    return routes
