"""What Pushgate knows of a notified subscriber and the device it used, by attribute name
(Insider's ``report_attributes``: ``INSIDER.email``, ``INSIDER.platform``...).

A name (its ``INSIDER.`` prefix dropped, case ignored) is read from, in this order:

- the subscriber's identifiers (``email``, ``phone_number``, ``uuid``, ``external_id``,
  ``user_id``, custom keys) and profile: ``language``, ``country``, ``timezone``,
  ``<kind>_optin`` (push, email, sms, location), ``insider_id`` (Pushgate's subscriber id);
- the device the notification went to: ``platform``, ``model``, ``os_version``,
  ``app_version``, ``device_language``, ``device_token``;
- the subscriber's attributes ``d_<name>``, then ``c_<name>``.

Anything else is null. ``device_token`` is the provider token of that device only (an iOS,
Android or Huawei device of the same app, the token the app registered itself); for web
subscriptions and channel devices it is null, as their addresses are capabilities.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from pushgate.crypto import SecretBox
from pushgate.domain.subscribers import (
    OPTINS,
    STANDARD,
    AttributeRow,
    attribute_value,
    identifier_name,
)
from pushgate.storage.database import Database
from pushgate.storage.models import (
    devices,
    subscriber_attributes,
    subscriber_identifiers,
    subscribers,
)

TOKEN_PLATFORMS = ("ios", "android", "huawei")
_PROFILE = ("language", "country", "timezone")
_DEVICE_FIELDS = {
    "platform": "platform",
    "model": "model",
    "os_version": "os_version",
    "app_version": "app_version",
    "device_language": "language",
}


class SubscriberReports:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    async def report(
        self, targets: Sequence[tuple[int, int | None]], names: Sequence[str]
    ) -> list[dict[str, Any]]:
        """For each (subscriber id, device id): each of ``names`` (as given) with its value,
        or null. A fixed number of queries, however many targets."""
        if not names or not targets:
            return [{} for _ in targets]
        ids = list({subscriber_id for subscriber_id, _ in targets})
        device_ids = [device_id for _, device_id in targets if device_id is not None]
        async with self._db.read.connect() as conn:
            people = {
                row.id: row
                for row in await conn.execute(select(subscribers).where(subscribers.c.id.in_(ids)))
            }
            custom: dict[int, dict[str, str]] = defaultdict(dict)
            for row in await conn.execute(
                select(subscriber_identifiers).where(
                    subscriber_identifiers.c.subscriber_id.in_(ids)
                )
            ):
                custom[row.subscriber_id][row.name] = row.value
            rows: dict[int, dict[str, list[AttributeRow]]] = defaultdict(lambda: defaultdict(list))
            for row in await conn.execute(
                select(subscriber_attributes).where(subscriber_attributes.c.subscriber_id.in_(ids))
            ):
                rows[row.subscriber_id][row.name].append(
                    AttributeRow(row.position, row.kind, row.text_value, row.num_value)
                )
            found = {}
            if device_ids:
                found = {
                    row.id: row
                    for row in await conn.execute(
                        select(devices).where(devices.c.id.in_(device_ids))
                    )
                }
        reports = []
        for subscriber_id, device_id in targets:
            person = people.get(subscriber_id)
            if person is None:
                reports.append(dict.fromkeys(names))
                continue
            identifiers = {
                name: getattr(person, name) for name in STANDARD if getattr(person, name)
            }
            identifiers.update(custom.get(subscriber_id, {}))
            attributes = rows.get(subscriber_id, {})
            device = None if device_id is None else found.get(device_id)
            reports.append(
                {
                    name: self._value(
                        identifier_name(name), person, identifiers, attributes, device
                    )
                    for name in names
                }
            )
        return reports

    def _value(
        self,
        key: str,
        person: Any,
        identifiers: dict[str, str],
        attributes: dict[str, list[AttributeRow]],
        device: Any,
    ) -> Any:
        if key in identifiers:
            return identifiers[key]
        name = key.lower()
        if name in identifiers:
            return identifiers[name]
        if name == "insider_id":
            return str(person.id)
        if name in _PROFILE:
            return getattr(person, name)
        if name.endswith("_optin") and name[: -len("_optin")] in OPTINS:
            return getattr(person, f"optin_{name[: -len('_optin')]}")
        if device is not None:
            if name in _DEVICE_FIELDS:
                return getattr(device, _DEVICE_FIELDS[name])
            if name == "device_token":
                if device.platform in TOKEN_PLATFORMS and device.push_token_enc is not None:
                    return self._box.decrypt(device.push_token_enc)
                return None
        for prefix in ("d_", "c_"):
            if prefix + name in attributes:
                return attribute_value(attributes[prefix + name])
        return None
