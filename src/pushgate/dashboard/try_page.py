"""The try page of an app (``/dashboard/apps/APP_ID/try``): it subscribes the current browser
as a channel device of the app, with the browser SDK's channel client (``/sdk/pushgate.js``),
and shows what arrives (and, when allowed, as browser notifications).

Each subscription registers a new channel device of the app (named "Dashboard try page",
its own anonymous subscriber), through ``DeviceService`` like any registration; its token
goes to this page only."""

from __future__ import annotations

import orjson
from starlette.responses import Response
from starlette.routing import Route

from pushgate.dashboard.web import PREFIX, Dashboard, Page
from pushgate.services.devices import DeviceRegistration

DEVICE_NAME = "Dashboard try page"


def routes(dash: Dashboard) -> list[Route]:
    rt = dash.rt

    async def try_page(page: Page) -> Response:
        found = await rt.apps.get(page.account_id, page.request.path_params["app_key"])
        return dash.show(page, "try.html", app=found.app)

    async def subscribe(page: Page) -> Response:
        app_key = page.request.path_params["app_key"]
        await rt.apps.get(page.account_id, app_key)  # NotFound for another account's app
        registered = await rt.devices.register(
            page.account_id, DeviceRegistration("channel", app_key, name=DEVICE_NAME)
        )
        body = {"device_id": registered.device.id, "device_token": registered.device_token}
        return Response(orjson.dumps(body), media_type="application/json")

    base = f"{PREFIX}/apps/{{app_key}}/try"
    return [
        Route(base, dash.page(try_page), methods=["GET"]),
        Route(base + "/device", dash.page(subscribe), methods=["POST"]),
    ]
