"""The send use case: turn an accepted request into a stored, fanned-out notification."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from pushgate.domain.errors import NotFound
from pushgate.domain.push_options import PushOptions
from pushgate.services.apps import App
from pushgate.services.events import EventService
from pushgate.services.pipeline import DeliveryPipeline, NewNotification


class SendService:
    def __init__(self, events: EventService, pipeline: DeliveryPipeline, ttl_seconds: int) -> None:
        self._events = events
        self._pipeline = pipeline
        self._ttl = ttl_seconds

    async def post_event(self, app: App, event_title: str, trackers: Mapping[str, str]) -> int:
        """Render the app's event with these tracker values and send it to every enabled
        device of the app's account. Returns the notification id once it is durable."""
        event = await self._events.get(app.id, event_title)
        if event is None:
            raise NotFound(f"Event not found: {event_title!r}")
        message = event.template.render(trackers)
        return await self._pipeline.submit(
            NewNotification(
                account_id=app.account_id,
                app_id=app.id,
                event=event.title,
                title=event.title,
                message=message,
                data_json=orjson.dumps(dict(trackers)).decode(),
                ttl_seconds=self._ttl,
            )
        )

    async def send_message(
        self,
        app: App,
        *,
        title: str | None,
        message: str,
        data_json: str,
        options: PushOptions,
        ttl_seconds: int | None,
    ) -> int:
        """Send a message as given (no event template) to every enabled device of the app's
        account. Returns the notification id once it is durable."""
        return await self._pipeline.submit(
            NewNotification(
                account_id=app.account_id,
                app_id=app.id,
                event=None,
                title=title,
                message=message,
                data_json=data_json,
                ttl_seconds=self._ttl if ttl_seconds is None else ttl_seconds,
                options=options,
            )
        )
