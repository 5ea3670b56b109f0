from __future__ import annotations

import orjson

from pushgate.channel.messages import iso_ms, notification_message


def test_iso_ms() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def test_notification_message_embeds_data_object() -> None:
    raw = notification_message(
        notification_id=5,
        app_key="abc",
        event="signups",
        title="signups",
        message="m",
        data_json='{"email":"a"}',
        created_ms=0,
        expires_ms=1000,
    )
    decoded = orjson.loads(raw)
    assert decoded["type"] == "notification"
    assert decoded["id"] == 5
    assert decoded["data"] == {"email": "a"}
    assert decoded["expires_at"] == "1970-01-01T00:00:01.000Z"
