"""The JSON messages the device channel sends (see docs/channel.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson


def iso_ms(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


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


def ready_message(device_id: int, backlog: int) -> bytes:
    return orjson.dumps({"type": "ready", "device_id": device_id, "backlog": backlog})


def batch_message(payloads: list[bytes]) -> bytes:
    """Several notifications in one WebSocket frame (for clients that asked with batch=1)."""
    return b'{"type":"batch","notifications":[' + b",".join(payloads) + b"]}"
