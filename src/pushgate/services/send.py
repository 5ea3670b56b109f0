"""The send use case: turn an accepted request into a stored, fanned-out notification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.domain.push_options import PushOptions
from pushgate.services.apps import App
from pushgate.services.events import EventService
from pushgate.services.pipeline import DeliveryPipeline, NewNotification

MAX_DATA_BYTES = 4096


def data_json(data: Mapping[str, Any], what: str = "data") -> str:
    """A notification's data as stored and sent: JSON of at most ``MAX_DATA_BYTES``."""
    text = orjson.dumps(dict(data)).decode()
    if len(text.encode()) > MAX_DATA_BYTES:
        raise InvalidInput(
            f"Invalid request: {what} is larger than {MAX_DATA_BYTES} bytes as JSON "
            f"({len(text.encode())} bytes)"
        )
    return text


class SendService:
    def __init__(self, events: EventService, pipeline: DeliveryPipeline, ttl_seconds: int) -> None:
        self._events = events
        self._pipeline = pipeline
        self._ttl = ttl_seconds

    async def post_event(self, app: App, event_title: str, trackers: Mapping[str, str]) -> int:
        """Render the app's event with these tracker values and send it to every enabled
        device of the app's account. The event's trackers are the notification's data (other
        values are not kept). Returns the notification id once it is durable."""
        event = await self._events.get(app.id, event_title)
        if event is None:
            raise NotFound(f"Event not found: {event_title!r}")
        message = event.template.render(trackers)
        declared = {name: trackers[name] for name in event.trackers if name in trackers}
        data = data_json(declared, "the event's tracker values")
        return await self._pipeline.submit(
            NewNotification(
                account_id=app.account_id,
                app_id=app.id,
                event=event.title,
                title=event.title,
                message=message,
                data_json=data,
                ttl_seconds=self._ttl,
            )
        )

    async def send_message(
        self,
        app: App,
        *,
        title: str | None,
        message: str,
        data: Mapping[str, Any],
        options: PushOptions,
        ttl_seconds: int | None,
    ) -> int:
        """Send a message as given (no event template) to every enabled device of the app's
        account. Returns the notification id once it is durable."""
        encoded = data_json(data)
        return await self._pipeline.submit(
            NewNotification(
                account_id=app.account_id,
                app_id=app.id,
                event=None,
                title=title,
                message=message,
                data_json=encoded,
                ttl_seconds=self._ttl if ttl_seconds is None else ttl_seconds,
                options=options,
            )
        )
