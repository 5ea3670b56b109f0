"""The Send page's form read into the native send request (dashboard/compose.py), and the
browser SDK's identity (browser/__init__.py): pure functions."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from pydantic import ValidationError

from pushgate.api.native.send import SendIn
from pushgate.browser import identity_of, push_host_allowed
from pushgate.config import BROWSER_PUSH_HOSTS
from pushgate.dashboard.compose import (
    FLAGS,
    TEXTS,
    group_of,
    previews,
    send_body,
    validation_errors,
)
from pushgate.domain.errors import InvalidInput


def form(**given: Any) -> dict[str, Any]:
    """A form as ``form_values`` reads it: every text empty, no flag, unless given."""
    values: dict[str, Any] = dict.fromkeys(TEXTS, "")
    values.update(dict.fromkeys(FLAGS, False), platforms=[], when="now")
    values.update(given)
    return values


def test_an_untouched_form_is_a_plain_send() -> None:
    body = send_body(form(app_id="a1", message="Hi", personal=True, priority="high"))
    assert body == {"app_id": "a1", "message": "Hi", "priority": "high"}
    SendIn.model_validate(body)


def test_audience_fields_become_the_native_audience() -> None:
    body = send_body(
        form(
            app_id="a1",
            message="Hi",
            platforms=["web", "ios"],
            countries="nl, DE",
            exclude_tags="churned  trial",
            subscribers="external_id=u-1\n\n email = ann@example.com ",
            attr_name="c_age",
            attr_op="gte",
            attr_values="18",
            optin_required=True,
        )
    )
    assert body["audience"] == {
        "platforms": ["web", "ios"],
        "countries": ["nl", "DE"],
        "exclude_tags": ["churned", "trial"],
        "subscribers": [{"external_id": "u-1"}, {"email": "ann@example.com"}],
        "attributes": [{"name": "c_age", "op": "gte", "values": [18.0]}],
        "optin_required": True,
        "personal": False,
    }
    parsed = SendIn.model_validate(body)
    assert parsed.audience is not None
    assert parsed.audience.to_audience(None).countries == ("NL", "DE")
    # Unchecking "personal" alone narrows it to the app's devices.
    assert send_body(form(app_id="a", message="m"))["audience"] == {"personal": False}
    values = send_body(form(app_id="a", message="m", attr_name="c", attr_values="pro, 3, true"))
    assert values["audience"]["attributes"][0]["values"] == ["pro", 3.0, True]
    with pytest.raises(InvalidInput, match="key=value"):
        send_body(form(app_id="a", message="m", subscribers="just-a-name"))


def test_translations_take_the_text_above_as_the_default_language() -> None:
    given = form(
        app_id="a",
        title="Hello",
        message="Good morning",
        image_url="https://img.example.com/x.png",
        default_language="en",
        t0_language="de",
        t0_message="Guten Morgen",
        t2_language="nl",
        t2_title="Hoi",
        t2_message="Goedemorgen",
    )
    body = send_body(given)
    assert body["translations"] == {
        "default_language": "en",
        "items": [
            {
                "language": "en",
                "title": "Hello",
                "message": "Good morning",
                "image_url": "https://img.example.com/x.png",
                "link": None,
            },
            {"language": "de", "title": None, "message": "Guten Morgen"},
            {"language": "nl", "title": "Hoi", "message": "Goedemorgen"},
        ],
    }
    SendIn.model_validate(body).translations.to_translations()  # type: ignore[union-attr]
    shown = previews(given)
    assert [(p.language, p.title, p.message) for p in shown] == [
        ("en", "Hello", "Good morning"),
        ("de", "", "Guten Morgen"),
        ("nl", "Hoi", "Goedemorgen"),
    ]
    with pytest.raises(InvalidInput, match="default language"):
        send_body({**given, "default_language": ""})


def test_when() -> None:
    at = send_body(form(app_id="a", message="m", when="at", send_date="2027-01-05T09:30"))
    assert (at["send_at"], at["local_time"]) == ("2027-01-05T09:30:00+00:00", False)
    local = send_body(
        form(
            app_id="a",
            message="m",
            when="local",
            send_date="2027-01-05T09:30:15",
            send_offset="-05:30",
        )
    )
    assert (local["send_at"], local["local_time"]) == ("2027-01-05T09:30:15-05:30", True)
    assert "send_at" not in send_body(form(app_id="a", message="m", send_date="2027-01-05T09:30"))
    for wrong in ({"send_date": ""}, {"send_date": "2027-01-05T09:30", "send_offset": "+01:10"}):
        with pytest.raises(InvalidInput, match="send_at") as refused:
            send_body(form(app_id="a", message="m", when="at", **wrong))
        assert group_of(refused.value.message) == "when"


def test_errors_are_shown_next_to_their_field_or_group() -> None:
    assert group_of("audience.countries: unknown country") == "audience"
    assert group_of("Invalid request: translations must include the default language") == (
        "translations"
    )
    assert group_of("message is required") == "message"
    assert group_of("a sending can be scheduled at most a year ahead") == "form"
    with pytest.raises(ValidationError) as refused:
        SendIn.model_validate({"app_id": "a", "audience": {"platforms": ["fax"]}})
    errors = validation_errors(refused.value)
    assert set(errors) == {"message", "audience"}
    assert errors["audience"].startswith("platforms.0:")


def test_identity_is_the_hmac_of_sorted_identifier_lines() -> None:
    ids = {"external_id": "u-1", "email": "ann@example.com"}
    expected = hmac.new(
        b"s3cret", b"email=ann@example.com\nexternal_id=u-1", hashlib.sha256
    ).hexdigest()
    assert identity_of("s3cret", ids) == expected
    assert identity_of("s3cret", dict(reversed(list(ids.items())))) == expected
    assert identity_of("other", ids) != expected


def test_web_subscriptions_from_browsers_only_on_push_services() -> None:
    def on(url: str, hosts: tuple[str, ...] = BROWSER_PUSH_HOSTS) -> bool:
        return push_host_allowed({"endpoint": url}, hosts)

    assert on("https://fcm.googleapis.com/fcm/send/abc")
    assert on("https://updates.push.services.mozilla.com/wpush/v2/abc")
    assert on("https://wns2-par02p.notify.windows.com/w/?token=abc")
    assert on("https://web.push.apple.com/abc")
    assert on("https://FCM.googleapis.com./fcm/send/abc")
    assert not on("https://evil.example/fcm.googleapis.com/abc")
    assert not on("https://fcm.googleapis.com.evil.example/abc")
    assert not on("https://notfcm.googleapis.comx/abc")
    assert on("https://anything.example/abc", ())
    assert push_host_allowed("not a subscription", BROWSER_PUSH_HOSTS)  # refused elsewhere
