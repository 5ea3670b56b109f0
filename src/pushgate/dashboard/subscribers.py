"""Subscribers and their devices: search an app's subscribers by any identifier, a
subscriber's profile, attributes and devices with each device's latest deliveries; disable
or enable a device; erase a subscriber. Everything through the services, by account."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response
from starlette.routing import Route

from pushgate.dashboard.web import PREFIX, Dashboard, Page, redirect
from pushgate.domain.errors import InvalidInput
from pushgate.services.devices import Device
from pushgate.services.overview import DeliveryLine

PAGE = 50
DISABLED_BY_HAND = "disabled in the dashboard"


@dataclass(frozen=True, slots=True)
class DeviceWithDeliveries:
    device: Device
    deliveries: list[DeliveryLine]


def routes(dash: Dashboard) -> list[Route]:
    rt = dash.rt

    async def search(page: Page) -> Response:
        apps = [item.app for item in await rt.apps.list(page.account_id)]
        params = page.request.query_params
        app_key = params.get("app") or (apps[0].app_key if apps else "")
        q = (params.get("q") or "").strip()
        after_text = params.get("after") or "0"
        after = int(after_text) if after_text.isdigit() and len(after_text) < 19 else 0
        found = []
        next_after = None
        if app_key:
            if q:
                found = await rt.subscribers.lookup(page.account_id, app_key, q)
            else:
                found = await rt.subscribers.search(
                    page.account_id, app_key, after=after, limit=PAGE
                )
                next_after = found[-1].id if len(found) == PAGE else None
        return dash.show(
            page,
            "subscribers.html",
            apps=apps,
            app_key=app_key,
            q=q,
            subscribers=found,
            next_after=next_after,
        )

    async def show(page: Page) -> Response:
        subscriber_id = page.id("subscriber_id")
        view = await rt.subscribers.get(page.account_id, subscriber_id)
        devices = [
            DeviceWithDeliveries(
                device, await dash.overview.device_deliveries(page.account_id, device.id)
            )
            for device in await rt.devices.of_subscriber(page.account_id, subscriber_id)
        ]
        return dash.show(page, "subscriber.html", s=view, devices=devices)

    async def set_device(page: Page, enabled: bool) -> Response:
        device = await rt.devices.set_enabled(
            page.account_id, page.id("device_id"), enabled, DISABLED_BY_HAND
        )
        return redirect(f"/subscribers/{device.subscriber_id}#device-{device.id}")

    async def disable(page: Page) -> Response:
        return await set_device(page, False)

    async def enable(page: Page) -> Response:
        return await set_device(page, True)

    async def delete(page: Page) -> Response:
        subscriber_id = page.id("subscriber_id")
        if page.text("confirm") != "yes":
            raise InvalidInput("Tick the box to confirm the erasure")
        view = await rt.subscribers.get(page.account_id, subscriber_id)
        await rt.subscribers.delete(page.account_id, subscriber_id)
        return redirect(f"/subscribers?app={view.app_key or ''}")

    return [
        Route(f"{PREFIX}/subscribers", dash.page(search), methods=["GET"]),
        Route(f"{PREFIX}/subscribers/{{subscriber_id:int}}", dash.page(show), methods=["GET"]),
        Route(
            f"{PREFIX}/subscribers/{{subscriber_id:int}}/delete",
            dash.page(delete),
            methods=["POST"],
        ),
        Route(f"{PREFIX}/devices/{{device_id:int}}/disable", dash.page(disable), methods=["POST"]),
        Route(f"{PREFIX}/devices/{{device_id:int}}/enable", dash.page(enable), methods=["POST"]),
    ]
