"""The stored form of an audience (``notifications.audience``, ``sendings.audience``): only the
rules given, in field order, conditions as objects; read back to the same audience."""

from __future__ import annotations

import orjson

from pushgate.domain.audience import Audience, Condition, all_of_user, one_user


def test_one_users_audience_is_stored_with_only_its_rules() -> None:
    assert one_user(12345).to_json() == (
        '{"subscribers":[12345],"optin_required":true,"last_active_device_only":true}'
    )
    assert all_of_user(7).to_json() == '{"subscribers":[7],"optin_required":true}'
    assert Audience().to_json() == "{}"


def test_rules_and_conditions_are_stored_in_field_order_and_read_back() -> None:
    audience = Audience(
        platforms=("ios", "web"),
        exclude_countries=("FR",),
        tags=("vip",),
        attributes=(
            Condition("age", "gte", (18,)),
            Condition("plan", "in", ("gold", "silver")),
            Condition("email", "exists", ()),
        ),
        timezones=("Europe/Berlin",),
        engaged_only=True,
        personal=True,
    )
    text = audience.to_json()
    assert list(orjson.loads(text)) == [
        "platforms",
        "exclude_countries",
        "tags",
        "attributes",
        "timezones",
        "engaged_only",
        "personal",
    ]
    assert orjson.loads(text)["attributes"] == [
        {"name": "age", "op": "gte", "values": [18]},
        {"name": "plan", "op": "in", "values": ["gold", "silver"]},
        {"name": "email", "op": "exists", "values": []},
    ]
    assert Audience.from_json(text) == audience
