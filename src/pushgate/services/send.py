"""The send use case: one ``SendCommand`` becomes a stored notification, fanned out later.

Every face translates its request into a ``SendCommand`` (Instapush's ``post`` through
``post_event``) and calls ``send``: the notification is stored with its fan-out job in one
transaction, and ``send`` returns its id once that committed (nothing accepted is lost).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from pushgate.cache import TTLCache
from pushgate.domain.audience import Audience
from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.domain.push_options import DEFAULT_OPTIONS, PushOptions
from pushgate.domain.translations import Translations
from pushgate.services.apps import App
from pushgate.services.events import EventService
from pushgate.services.pipeline import (
    DeliveryPipeline,
    DuplicateRequest,
    Idempotency,
    NewNotification,
)
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import campaigns, idempotency_keys

MAX_DATA_BYTES = 4096
MAX_KEY_CHARS = 200
MAX_DELAY_MS = 366 * 86_400_000
# A campaign's id, once read or made, is kept this long (it never changes while its app
# lives): an Insider send names its campaign in every request.
CAMPAIGN_SECONDS = 60.0


def data_json(data: Mapping[str, Any], what: str = "data") -> str:
    """A notification's data as stored and sent: JSON of at most ``MAX_DATA_BYTES``."""
    text = orjson.dumps(dict(data)).decode()
    if len(text.encode()) > MAX_DATA_BYTES:
        raise InvalidInput(
            f"Invalid request: {what} is larger than {MAX_DATA_BYTES} bytes as JSON "
            f"({len(text.encode())} bytes)"
        )
    return text


@dataclass(frozen=True, slots=True)
class Campaign:
    """The campaign a notification counts towards: the caller's id for it (per app), and a
    name."""

    external_id: str | None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SendCommand:
    app: App
    message: str
    title: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    options: PushOptions = DEFAULT_OPTIONS
    # None: every device of the app and the account's personal channel devices.
    audience: Audience | None = None
    translations: Translations | None = None
    ttl_seconds: int | None = None
    campaign: Campaign | None = None
    due_ms: int | None = None
    # The offset (minutes east of UTC) ``due_ms`` was given at, when it matters (a send at
    # the same local time in each timezone).
    offset_minutes: int | None = None
    idempotency_key: str | None = None
    event: str | None = None
    # What the idempotency key must match: the request as the face read it.
    fingerprint: str | None = None
    # Targets that get no delivery: identifiers that named nobody, subscribers opted out.
    no_user: int = 0
    opted_out: int = 0


def _check_due(command: SendCommand) -> None:
    if command.due_ms is not None and command.due_ms - now_ms() > MAX_DELAY_MS:
        raise InvalidInput("a send can be scheduled at most a year ahead")


def fingerprint(request: Any) -> str:
    """A digest of a request, stored with its idempotency key."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


class SendService:
    def __init__(
        self, db: Database, events: EventService, pipeline: DeliveryPipeline, ttl_seconds: int
    ) -> None:
        self._db = db
        self._events = events
        self._pipeline = pipeline
        self._ttl = ttl_seconds
        # (app id, app key, campaign external id) -> campaign id. The app key is part of the
        # key because SQLite may give a deleted app's row id to a new app.
        self._campaigns: TTLCache[tuple[int, str, str], int] = TTLCache(CAMPAIGN_SECONDS)

    async def send(self, command: SendCommand) -> int:
        """Store the notification (its fan-out is due at once, or at ``due_ms``); its id once
        durable. With an idempotency key that was used before, the first send's id, and
        nothing is sent again."""
        app = command.app
        idempotency = None
        if command.idempotency_key is not None:
            key = command.idempotency_key
            if not 0 < len(key) <= MAX_KEY_CHARS or "\x00" in key:
                raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
            idempotency = Idempotency(app.account_id, key, command.fingerprint or "")
            earlier = await self._earlier(idempotency)
            if earlier is not None:
                return earlier
        _check_due(command)
        campaign_id = None if command.campaign is None else await self._campaign(app, command)
        notification = self._notification(command, campaign_id, idempotency)
        try:
            return await self._pipeline.submit(notification)
        except DuplicateRequest:
            assert idempotency is not None
            earlier = await self._earlier(idempotency)
            if earlier is None:  # pragma: no cover - the duplicate committed first
                raise Conflict("A request with this Idempotency-Key is in progress") from None
            return earlier

    async def send_many(self, commands: Sequence[SendCommand]) -> list[int]:
        """Store several notifications (without idempotency keys) in one group commit; their
        ids in order. A campaign is looked up (or made) once for all of them."""
        campaign_ids: dict[tuple[int, Campaign], int] = {}
        for command in commands:
            _check_due(command)
            if command.idempotency_key is not None:
                raise InvalidInput("send_many takes no idempotency keys")
            if command.campaign is not None:
                key = (command.app.id, command.campaign)
                if key not in campaign_ids:
                    campaign_ids[key] = await self._campaign(command.app, command)
        pending = [
            self._notification(
                command,
                None
                if command.campaign is None
                else campaign_ids[(command.app.id, command.campaign)],
                None,
            )
            for command in commands
        ]
        return list(await asyncio.gather(*(self._pipeline.submit(n) for n in pending)))

    def _notification(
        self, command: SendCommand, campaign_id: int | None, idempotency: Idempotency | None
    ) -> NewNotification:
        return NewNotification(
            account_id=command.app.account_id,
            app_id=command.app.id,
            event=command.event,
            title=command.title,
            message=command.message,
            data_json=data_json(command.data),
            ttl_seconds=self._ttl if command.ttl_seconds is None else command.ttl_seconds,
            options=command.options,
            campaign_id=campaign_id,
            audience_json=None if command.audience is None else command.audience.to_json(),
            translations_json=(
                None if command.translations is None else command.translations.to_json()
            ),
            due_ms=command.due_ms,
            idempotency=idempotency,
            no_user=command.no_user,
            opted_out=command.opted_out,
        )

    async def _earlier(self, idempotency: Idempotency) -> int | None:
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(idempotency_keys.c.fingerprint, idempotency_keys.c.response).where(
                        idempotency_keys.c.account_id == idempotency.account_id,
                        idempotency_keys.c.key == idempotency.key,
                    )
                )
            ).first()
        if row is None:
            return None
        if row.fingerprint != idempotency.fingerprint:
            raise Conflict(
                "This Idempotency-Key was used for another request: use a new key for a new request"
            )
        return int(row.response)

    async def open_campaign(self, app: App, name: str | None) -> int:
        """A new campaign of the app whose id for the caller is its number (a web push
        campaign's ``campaign_id``); send with ``Campaign(str(number), name)``."""
        async with self._db.writing() as conn:
            created = await conn.execute(
                insert(campaigns).returning(campaigns.c.id),
                {"app_id": app.id, "external_id": None, "name": name, "created_ms": now_ms()},
            )
            number = int(created.scalar_one())
            await conn.execute(
                update(campaigns).where(campaigns.c.id == number).values(external_id=str(number))
            )
        return number

    async def campaign_id(self, command: SendCommand) -> int | None:
        """The id of the command's campaign (made when new); None without one."""
        return None if command.campaign is None else await self._campaign(command.app, command)

    async def _campaign(self, app: App, command: SendCommand) -> int:
        campaign = command.campaign
        assert campaign is not None
        key = None
        if campaign.external_id is not None:
            key = (app.id, app.app_key, campaign.external_id)
            known = self._campaigns.get(key)
            if known is not None:
                return known
        query = select(campaigns.c.id).where(
            campaigns.c.app_id == app.id, campaigns.c.external_id == campaign.external_id
        )
        for _ in range(2):
            if key is not None:
                async with self._db.read.connect() as conn:
                    found = (await conn.execute(query)).scalar()
                if found is not None:
                    self._campaigns.put(key, int(found))
                    return int(found)
            try:
                async with self._db.writing() as conn:
                    created = await conn.execute(
                        insert(campaigns).returning(campaigns.c.id),
                        {
                            "app_id": app.id,
                            "external_id": campaign.external_id,
                            "name": campaign.name,
                            "created_ms": now_ms(),
                        },
                    )
                    made = int(created.scalar_one())
            except IntegrityError:
                continue  # made meanwhile by a concurrent send: read it
            if key is not None:
                self._campaigns.put(key, made)
            return made
        raise Conflict("the campaign could not be stored; retry")  # pragma: no cover

    async def post_event(self, app: App, event_title: str, trackers: Mapping[str, str]) -> int:
        """Instapush's post: the app's event rendered with these tracker values, to every
        enabled device of the app and the account's personal channel devices. The event's
        trackers are the notification's data (other values are not kept)."""
        event = await self._events.get(app.id, event_title)
        if event is None:
            raise NotFound(f"Event not found: {event_title!r}")
        message = event.template.render(trackers)
        declared = {name: trackers[name] for name in event.trackers if name in trackers}
        data_json(declared, "the event's tracker values")
        return await self.send(
            SendCommand(
                app=app, title=event.title, message=message, data=declared, event=event.title
            )
        )

    async def send_message(
        self,
        app: App,
        *,
        title: str | None,
        message: str,
        data: Mapping[str, Any],
        options: PushOptions,
        ttl_seconds: int | None,
    ) -> int:
        """A message as given (no event template), to the app's devices."""
        return await self.send(
            SendCommand(
                app=app,
                title=title,
                message=message,
                data=data,
                options=options,
                ttl_seconds=ttl_seconds,
            )
        )
