"""The JSON messages the device channel sends (see docs/channel.md)."""

from __future__ import annotations

import orjson

from pushgate.transports.base import Content
from pushgate.web.timestamps import iso_ms


def notification_message(
    *,
    notification_id: int,
    app_key: str | None,
    event: str | None,
    title: str | None,
    message: str,
    data_json: str,
    created_ms: int,
    expires_ms: int,
    image_url: str | None = None,
    link: str | None = None,
) -> bytes:
    body = {
        "type": "notification",
        "id": notification_id,
        "app_id": app_key,
        "event": event,
        "title": title,
        "message": message,
        "data": orjson.Fragment(data_json),
        "created_at": iso_ms(created_ms),
        "expires_at": iso_ms(expires_ms),
    }
    # Only when the notification has them (a rich push: its first item's image and link).
    if image_url is not None:
        body["image_url"] = image_url
    if link is not None:
        body["link"] = link
    return orjson.dumps(body)


def content_message(content: Content) -> bytes:
    """The ``notification`` message of ``content`` (in the device's language already)."""
    options = content.options
    rich = options.rich
    return notification_message(
        notification_id=content.notification_id,
        app_key=content.app_key,
        event=content.event,
        title=content.title,
        message=content.message,
        data_json=content.data_json,
        created_ms=content.created_ms,
        expires_ms=content.expires_ms,
        image_url=options.image_url or (rich.fallback_image if rich else None),
        link=options.deep_link or (rich.fallback_link if rich else None),
    )


def ready_message(device_id: int, backlog: int) -> bytes:
    return orjson.dumps({"type": "ready", "device_id": device_id, "backlog": backlog})


def batch_message(payloads: list[bytes]) -> bytes:
    """Several notifications in one WebSocket frame (for clients that asked with batch=1)."""
    return b'{"type":"batch","notifications":[' + b",".join(payloads) + b"]}"
