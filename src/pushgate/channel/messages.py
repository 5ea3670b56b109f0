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
) -> bytes:
    return orjson.dumps(
        {
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
    )


def content_message(content: Content) -> bytes:
    """The ``notification`` message of ``content`` (in the device's language already)."""
    return notification_message(
        notification_id=content.notification_id,
        app_key=content.app_key,
        event=content.event,
        title=content.title,
        message=content.message,
        data_json=content.data_json,
        created_ms=content.created_ms,
        expires_ms=content.expires_ms,
    )


def ready_message(device_id: int, backlog: int) -> bytes:
    return orjson.dumps({"type": "ready", "device_id": device_id, "backlog": backlog})


def batch_message(payloads: list[bytes]) -> bytes:
    """Several notifications in one WebSocket frame (for clients that asked with batch=1)."""
    return b'{"type":"batch","notifications":[' + b",".join(payloads) + b"]}"
