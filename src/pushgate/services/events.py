"""Instapush events: a title, its trackers and a message template, unique per app."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from pushgate.cache import TTLCache
from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.domain.templates import Template, parse_template, validate_trackers
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import events

MAX_TITLE_CHARS = 200


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    app_id: int
    title: str
    trackers: tuple[str, ...]
    message: str
    template: Template


def _event_from_row(row_id: int, app_id: int, title: str, trackers: str, message: str) -> Event:
    names = tuple(orjson.loads(trackers))
    return Event(row_id, app_id, title, names, message, parse_template(message, names))


class EventService:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: TTLCache[tuple[int, str], Event] = TTLCache(ttl_seconds=30)

    async def create(self, app_id: int, title: str, trackers: Sequence[str], message: str) -> Event:
        if not title.strip() or len(title) > MAX_TITLE_CHARS:
            raise InvalidInput(f"title must be 1-{MAX_TITLE_CHARS} characters")
        names = validate_trackers(trackers)
        template = parse_template(message, names)
        try:
            async with self._db.writing() as conn:
                result = await conn.execute(
                    insert(events).returning(events.c.id),
                    {
                        "app_id": app_id,
                        "title": title,
                        "trackers": orjson.dumps(list(names)).decode(),
                        "message": message,
                        "created_ms": now_ms(),
                    },
                )
                event_id = int(result.scalar_one())
        except IntegrityError as exc:
            raise Conflict(f"An event titled {title!r} already exists in this app") from exc
        event = Event(event_id, app_id, title, names, message, template)
        self._cache.put((app_id, title), event)
        return event

    async def list(self, app_id: int) -> list[Event]:
        async with self._db.read.connect() as conn:
            rows = (
                await conn.execute(
                    select(events).where(events.c.app_id == app_id).order_by(events.c.id)
                )
            ).all()
        return [
            _event_from_row(row.id, row.app_id, row.title, row.trackers, row.message)
            for row in rows
        ]

    async def get(self, app_id: int, title: str) -> Event | None:
        cached = self._cache.get((app_id, title))
        if cached is not None:
            return cached
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(events).where(events.c.app_id == app_id, events.c.title == title)
                )
            ).first()
        if row is None:
            return None
        event = _event_from_row(row.id, row.app_id, row.title, row.trackers, row.message)
        self._cache.put((app_id, title), event)
        return event

    async def delete(self, app_id: int, title: str) -> None:
        """Remove the app's event: posts naming it are refused from then on."""
        async with self._db.writing() as conn:
            result = await conn.execute(
                delete(events).where(events.c.app_id == app_id, events.c.title == title)
            )
        self._cache.discard((app_id, title))
        if not result.rowcount:
            raise NotFound(f"No event {title!r} in this app")
