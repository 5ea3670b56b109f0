"""Platform overrides, silent pushes, deep links and carousels in PushOptions, and how each
transport's payload carries them (docs/insider.md has the table)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pushgate.channel.messages import content_message
from pushgate.domain.errors import InvalidInput
from pushgate.domain.push_options import PlatformOptions, PushOptions
from pushgate.domain.rich_push import RichItem, RichPush
from pushgate.transports import apns, fcm, hms, webpush
from pushgate.transports.base import Content

NOW = 1_700_000_000_000
RICH = RichPush(
    "carousel",
    (
        RichItem(1, "https://img.example/1.jpg", "One", "First", {"shoe": "value1"}),
        RichItem(
            2,
            "https://img.example/2.jpg",
            "Two",
            "Second",
            {"ins_dl_internal": "https://x.example/2"},
        ),
    ),
)


def content(**options: Any) -> Content:
    return Content(
        notification_id=7,
        account_id=1,
        app_key="app",
        event=None,
        title="Hello",
        message="World",
        data_json='{"order": "A-1"}',
        created_ms=NOW,
        expires_ms=NOW + 600_000,
        options=PushOptions(**options),
    )


def test_options_round_trip_and_platform_overrides() -> None:
    options = PushOptions(
        sound="default",
        links={"ins_dl_internal": "https://x.example"},
        rich=RICH,
        ios=PlatformOptions(sound="ios.caf", thread_id="13", silent=True),
        android=PlatformOptions(channel_id="2"),
    )
    text = options.to_json()
    assert text is not None and PushOptions.from_json(text) == options
    assert options.for_platform("ios").sound == "ios.caf"
    assert options.for_platform("ios").silent and not options.for_platform("android").silent
    assert options.for_platform("huawei").channel_id == "2"
    assert options.for_platform("web").sound == "default"
    assert PushOptions().to_json() is None
    with pytest.raises(InvalidInput):
        PushOptions(links={"aps": "x"})
    with pytest.raises(InvalidInput):
        RichPush("banner", RICH.items)  # type: ignore[arg-type]


def test_apns_gets_thread_links_carousel_and_silent_background() -> None:
    shown = apns.payload(content(ios=PlatformOptions(thread_id="13", badge=2), rich=RICH,
                                 links={"ins_dl_internal": "https://x.example"}))  # fmt: skip
    assert shown["aps"]["thread-id"] == "13" and shown["aps"]["mutable-content"] == 1
    assert shown["aps"]["alert"] == {"title": "Hello", "body": "World"}
    assert shown["ins_dl_internal"] == "https://x.example"
    assert shown["pushgate_rich"]["items"][1]["deep_links"] == {
        "ins_dl_internal": "https://x.example/2"
    }
    silent = content(ios=PlatformOptions(silent=True))
    assert apns.is_background(silent)
    assert "alert" not in apns.payload(silent)["aps"]
    awake = apns.payload(content(content_available=True))["aps"]
    assert awake["content-available"] == 1 and "alert" in awake


def test_fcm_gets_channel_data_links_and_a_data_message_when_silent() -> None:
    android = PlatformOptions(channel_id="4", links={"ins_dl_external": "https://e.example"})
    message = fcm.payload(content(android=android, rich=RICH), NOW)
    assert message["android"]["notification"]["channel_id"] == "4"
    assert message["data"]["ins_dl_external"] == "https://e.example"
    assert orjson.loads(message["data"]["pushgate_rich"])["type"] == "carousel"
    assert message["apns"]["payload"]["aps"]["mutable-content"] == 1
    quiet = fcm.payload(content(silent=True, sound="x"), NOW)
    assert "notification" not in quiet and "notification" not in quiet["android"]
    assert quiet["apns"]["headers"]["apns-push-type"] == "background"


def test_hms_gets_channel_and_data_and_a_data_message_when_silent() -> None:
    message = hms.payload(content(channel_id="9", rich=RICH), NOW)
    assert message["android"]["notification"]["channel_id"] == "9"
    assert orjson.loads(message["data"])["pushgate_rich"]["type"] == "carousel"
    assert "notification" not in hms.payload(content(silent=True), NOW)["android"]


def test_web_and_channel_get_the_first_items_image_and_link() -> None:
    shown = webpush.payload(content(rich=RICH, icon_url="https://img.example/icon.png"))
    assert shown["image"] == "https://img.example/1.jpg"
    assert shown["icon"] == "https://img.example/icon.png"
    # The first item's first https link (its first value "value1" is not one).
    assert "url" not in shown
    second_first = RichPush("slider", (RICH.items[1], RICH.items[0]))
    assert webpush.payload(content(rich=second_first))["url"] == "https://x.example/2"
    message = orjson.loads(content_message(content(rich=second_first)))
    assert message["image_url"] == "https://img.example/2.jpg"
    assert message["link"] == "https://x.example/2"
    plain = orjson.loads(content_message(content()))
    assert "image_url" not in plain and "link" not in plain
