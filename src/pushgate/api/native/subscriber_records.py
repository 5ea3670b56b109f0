"""A subscriber as the native API answers it (``GET /api/v1/subscribers/{id}``), as a plain
dict: the API's answers and the command line's ``--json`` are made by the same function.

This module imports no web framework, so ``pushgate subscribers`` can use it.
"""

from __future__ import annotations

from typing import Any

from pushgate.services.subscribers import SubscriberView
from pushgate.web.timestamps import iso_ms


def subscriber_record(view: SubscriberView) -> dict[str, Any]:
    """The fields of ``SubscriberOut``, in its order; times as ISO 8601 UTC."""
    return {
        "id": view.id,
        "app_id": view.app_key,
        "identifiers": view.identifiers,
        "language": view.language,
        "country": view.country,
        "timezone": view.timezone,
        "optins": view.optins,
        "attributes": view.attributes,
        "tags": view.tags,
        "events": [
            {
                "name": e["name"],
                "count": e["count"],
                "first_at": iso_ms(e["first_ms"]),
                "last_at": iso_ms(e["last_ms"]),
            }
            for e in view.events
        ],
        "last_active_at": iso_ms(view.last_active_ms) if view.last_active_ms else None,
        "created_at": iso_ms(view.created_ms),
        "updated_at": iso_ms(view.updated_ms) if view.updated_ms else None,
        "device_ids": view.device_ids,
    }
