"""Sendings due later and the pushes they send: created, shown, changed and cancelled here;
run by ``services/scheduler.py``.

A sending is stored with its due wall time and a ``sending`` job in the same transaction,
due at its first moment (the wall time at its offset; for a local-time sending, the wall
time at +14:00, the first offset to reach it). Its pushes can be replaced, and it can be
cancelled, until it starts; what it sends is decided when it runs: the apps its groups hold
then, the devices that match then, each in its language then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.audience import Audience
from pushgate.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from pushgate.domain.push_options import DEFAULT_OPTIONS, PushOptions
from pushgate.domain.schedules import (
    MAX_OFFSET,
    NO_OFFSET_RUN,
    AppSelection,
    SendingState,
    moment_ms,
)
from pushgate.domain.translations import Translation, Translations
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.groups import account_apps, groups_of_account
from pushgate.services.send import MAX_DELAY_MS, SendCommand, data_json
from pushgate.services.stats import Counts, StatsService
from pushgate.storage.database import Database, insert_returning_id, now_ms
from pushgate.storage.models import push_translations, pushes, sendings

SENDING_QUEUE = "sending"
MAX_PUSHES_PER_SENDING = 100
# A sending due this recently (the current minute of a time given to the minute) runs at once.
LATE_MS = 60_000
MAX_NAME = 200


def sending_payload(sending_id: int) -> bytes:
    return str(sending_id).encode()


def first_moment_ms(wall_ms: int, offset_minutes: int, local_time: bool) -> int:
    """When a sending first has something to do."""
    return moment_ms(wall_ms, MAX_OFFSET if local_time else offset_minutes)


@dataclass(frozen=True, slots=True)
class PushContent:
    """What a push sends: its default text and options, and its translations."""

    message: str
    title: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    options: PushOptions = DEFAULT_OPTIONS
    ttl_seconds: int | None = None
    translations: Translations | None = None
    campaign_id: int | None = None

    @classmethod
    def of_translations(cls, translations: Translations) -> PushContent:
        """A push that is only translations: the default language's is its own text."""
        default = translations.choose(translations.default_language)
        return cls(
            message=default.message,
            title=default.title,
            options=PushOptions(
                image_url=default.image_url, icon_url=default.icon_url, deep_link=default.link
            ),
            translations=translations,
        )


@dataclass(frozen=True, slots=True)
class NewSending:
    name: str
    # The wall time, as milliseconds read at offset 0 (domain/schedules.wall_ms).
    wall_ms: int
    # The sending's offset; for a local-time sending, the fallback offset.
    offset_minutes: int
    local_time: bool
    apps: AppSelection
    audience: Audience = Audience()
    # The request's filters as given (shown back by the face that took them).
    filters: Mapping[str, Any] | None = None
    source: str = "native"


@dataclass(frozen=True, slots=True)
class PushTranslationView:
    id: int
    translation: Translation


@dataclass(frozen=True, slots=True)
class PushView:
    id: int
    sending_id: int | None
    title: str | None
    message: str
    default_language: str | None
    translations: tuple[PushTranslationView, ...]
    created_ms: int


@dataclass(frozen=True, slots=True)
class SendingView:
    id: int
    name: str
    source: str
    wall_ms: int
    offset_minutes: int
    local_time: bool
    apps: AppSelection
    audience: Audience
    filters: Mapping[str, Any] | None
    state: SendingState
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    push_ids: tuple[int, ...]
    counts: Counts | None = None


def _name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or "\x00" in name:
        raise InvalidInput(f"name is required: 1 to {MAX_NAME} characters")
    return name


class SendingService:
    def __init__(
        self, db: Database, jobs: EmbeddedQueue, stats: StatsService, ttl_seconds: int
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._stats = stats
        self._ttl = ttl_seconds

    # -- pushes ----------------------------------------------------------------------------

    async def create_push(
        self,
        account_id: int,
        content: PushContent,
        conn: AsyncConnection | None = None,
        *,
        sending_id: int | None = None,
    ) -> PushView:
        """Store a push (bound to ``sending_id``, if given) with its translations."""
        if conn is None:
            async with self._db.writing() as own:
                return await self.create_push(account_id, content, own, sending_id=sending_id)
        now = now_ms()
        default = None if content.translations is None else content.translations.default_language
        push_id = await insert_returning_id(
            conn,
            pushes,
            {
                "account_id": account_id,
                "sending_id": sending_id,
                "title": content.title,
                "message": content.message,
                "data": data_json(content.data),
                "options": content.options.to_json(),
                "ttl_seconds": content.ttl_seconds,
                "campaign_id": content.campaign_id,
                "default_language": default,
                "created_ms": now,
            },
        )
        views: list[PushTranslationView] = []
        for item in () if content.translations is None else content.translations.items:
            translation_id = await insert_returning_id(
                conn,
                push_translations,
                {
                    "push_id": push_id,
                    "language": item.language,
                    "title": item.title,
                    "message": item.message,
                    "image_url": item.image_url,
                    "icon_url": item.icon_url,
                    "link": item.link,
                },
            )
            views.append(PushTranslationView(translation_id, item))
        return PushView(
            push_id, sending_id, content.title, content.message, default, tuple(views), now
        )

    async def get_push(self, account_id: int, push_id: int) -> PushView:
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(pushes).where(pushes.c.id == push_id, pushes.c.account_id == account_id)
                )
            ).first()
            if row is None:
                raise NotFound(f"push {push_id} does not exist")
            items = await translations_of(conn, [push_id])
        return PushView(
            int(row.id),
            row.sending_id,
            row.title,
            row.message,
            row.default_language,
            tuple(items.get(push_id, ())),
            int(row.created_ms),
        )

    async def delete_push(self, account_id: int, push_id: int) -> None:
        """Delete a push that no sending holds."""
        async with self._db.writing() as conn:
            row = (
                await conn.execute(
                    select(pushes.c.sending_id).where(
                        pushes.c.id == push_id, pushes.c.account_id == account_id
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"push {push_id} does not exist")
            if row.sending_id is not None:
                raise InvalidInput(
                    f"push {push_id} is bound to sending {row.sending_id}: replace that "
                    "sending's pushes first"
                )
            await conn.execute(
                delete(push_translations).where(push_translations.c.push_id == push_id)
            )
            await conn.execute(delete(pushes).where(pushes.c.id == push_id))

    # -- sendings --------------------------------------------------------------------------

    async def check_apps(self, account_id: int, selection: AppSelection) -> list[int]:
        """The apps the selection reaches now. ``Forbidden`` for an app or app group that is
        not the account's; ``InvalidInput`` when it reaches none."""
        async with self._db.read.connect() as conn:
            theirs = await account_apps(conn, account_id)
            foreign = sorted(selection.named_apps() - set(theirs))
            if foreign:
                raise Forbidden(
                    f"this key may not use app {', '.join(map(str, foreign))}: not an app of "
                    "this account"
                )
            wanted = selection.named_groups()
            found = await groups_of_account(conn, account_id, "apps", wanted)
            missing = sorted(wanted - set(found))
            if missing:
                raise Forbidden(
                    f"this key may not use app group {', '.join(map(str, missing))}: not an app "
                    "group of this account"
                )
            apps = selection.resolve(
                theirs,
                {group: [int(m) for m in members] for group, members in found.items()},
            )
        if not apps:
            raise InvalidInput("the filters leave no app to send to")
        return apps

    async def audience_groups(self, account_id: int, group_ids: Sequence[int]) -> list[str]:
        """The tags of these audience groups of the account (``NotFound`` for another)."""
        async with self._db.read.connect() as conn:
            found = await groups_of_account(conn, account_id, "audiences", group_ids)
        missing = sorted(set(group_ids) - set(found))
        if missing:
            raise InvalidInput(f"audience group {', '.join(map(str, missing))} does not exist")
        return sorted({tag for members in found.values() for tag in members})

    async def create(
        self,
        account_id: int,
        sending: NewSending,
        contents: Sequence[PushContent] = (),
    ) -> tuple[int, list[PushView]]:
        """Store a sending (with new pushes of these contents bound to it) and its job; its
        id and the pushes."""
        _name(sending.name)
        await self.check_apps(account_id, sending.apps)
        now = now_ms()
        first = first_moment_ms(sending.wall_ms, sending.offset_minutes, sending.local_time)
        last = moment_ms(sending.wall_ms, sending.offset_minutes)
        if not sending.local_time and last < now - LATE_MS:
            raise InvalidInput("the sending's date and time have passed")
        if first - now > MAX_DELAY_MS:
            raise InvalidInput("a sending can be scheduled at most a year ahead")
        async with self._db.writing() as conn:
            sending_id = await insert_returning_id(
                conn,
                sendings,
                {
                    "account_id": account_id,
                    "name": sending.name,
                    "source": sending.source,
                    "wall_ms": sending.wall_ms,
                    "offset_minutes": sending.offset_minutes,
                    "local_time": sending.local_time,
                    "apps": orjson.dumps(sending.apps.to_json()).decode(),
                    "audience": sending.audience.to_json(),
                    "filters": (
                        None if sending.filters is None else orjson.dumps(sending.filters).decode()
                    ),
                    "state": "waiting",
                    "cursor": NO_OFFSET_RUN,
                    "created_ms": now,
                },
            )
            views = [
                await self.create_push(account_id, c, conn, sending_id=sending_id) for c in contents
            ]
            await self._jobs.enqueue(
                SENDING_QUEUE,
                [sending_payload(sending_id)],
                delay_seconds=max(0, first - now) / 1000,
                conn=conn,
            )
        self._jobs.wake(SENDING_QUEUE)
        return sending_id, views

    async def at_local_time(self, command: SendCommand, campaign_id: int | None) -> int:
        """A native send held for the same wall time in each device's timezone: its
        ``due_ms`` read at ``offset_minutes`` gives the wall time, and that offset is the one
        of devices without a timezone. The sending's id."""
        if command.due_ms is None or command.offset_minutes is None:
            raise InvalidInput("local_time needs send_at: the wall time, with an offset")
        sending_id, _ = await self.create(
            command.app.account_id,
            NewSending(
                name=f"{command.app.title}: {command.title or command.message}"[:MAX_NAME],
                wall_ms=command.due_ms + command.offset_minutes * 60_000,
                offset_minutes=command.offset_minutes,
                local_time=True,
                apps=AppSelection(include=(command.app.id,)),
                audience=command.audience or Audience(),
            ),
            [
                PushContent(
                    message=command.message,
                    title=command.title,
                    data=command.data,
                    options=command.options,
                    ttl_seconds=command.ttl_seconds,
                    translations=command.translations,
                    campaign_id=campaign_id,
                )
            ],
        )
        return sending_id

    async def _owned_sending(self, conn: AsyncConnection, account_id: int, sending_id: int) -> Any:
        row = (
            await conn.execute(
                select(sendings).where(
                    sendings.c.id == sending_id, sendings.c.account_id == account_id
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"sending {sending_id} does not exist")
        return row

    async def bind_pushes(
        self, account_id: int, sending_id: int, push_ids: Sequence[int]
    ) -> tuple[int, ...]:
        """Replace the pushes of a sending that has not started."""
        wanted = list(dict.fromkeys(push_ids))
        if len(wanted) > MAX_PUSHES_PER_SENDING:
            raise InvalidInput(f"a sending has at most {MAX_PUSHES_PER_SENDING} pushes")
        async with self._db.writing() as conn:
            row = await self._owned_sending(conn, account_id, sending_id)
            if row.state != "waiting":
                raise Conflict(
                    f"sending {sending_id} is {row.state}: its pushes can change only before it "
                    "starts"
                )
            found = {
                int(r.id): r.sending_id
                for r in await conn.execute(
                    select(pushes.c.id, pushes.c.sending_id).where(
                        pushes.c.account_id == account_id, pushes.c.id.in_(wanted)
                    )
                )
            }
            missing = [p for p in wanted if p not in found]
            if missing:
                raise InvalidInput(f"push {', '.join(map(str, missing))} does not exist")
            taken = [p for p in wanted if found[p] not in (None, sending_id)]
            if taken:
                raise InvalidInput(
                    f"push {taken[0]} is bound to another sending ({found[taken[0]]})"
                )
            # The state is read again under the write: a run that started meanwhile wins.
            moved = await conn.execute(
                update(sendings)
                .where(sendings.c.id == sending_id, sendings.c.state == "waiting")
                .values(state="waiting")
            )
            if moved.rowcount != 1:
                raise Conflict(f"sending {sending_id} has started: its pushes cannot change")
            await conn.execute(
                update(pushes).where(pushes.c.sending_id == sending_id).values(sending_id=None)
            )
            if wanted:
                await conn.execute(
                    update(pushes).where(pushes.c.id.in_(wanted)).values(sending_id=sending_id)
                )
        return tuple(wanted)

    async def cancel(self, account_id: int, sending_id: int) -> SendingView:
        """Cancel a sending that has not started: it will send nothing."""
        async with self._db.writing() as conn:
            row = await self._owned_sending(conn, account_id, sending_id)
            done = await conn.execute(
                update(sendings)
                .where(sendings.c.id == sending_id, sendings.c.state == "waiting")
                .values(state="cancelled", finished_ms=now_ms())
            )
            if done.rowcount != 1:
                raise Conflict(
                    f"sending {sending_id} is {row.state}: only a waiting sending can be cancelled"
                )
        return await self.get(account_id, sending_id)

    async def get(self, account_id: int, sending_id: int, *, counts: bool = False) -> SendingView:
        async with self._db.read.connect() as conn:
            row = await self._owned_sending(conn, account_id, sending_id)
            bound = await pushes_of(conn, [sending_id])
        view = _view(row, bound.get(sending_id, ()))
        if counts:
            view = replace(view, counts=await self._stats.sending(account_id, sending_id))
        return view

    async def list(
        self, account_id: int, *, state: str | None = None, limit: int = 100
    ) -> list[SendingView]:
        """The account's sendings, newest first."""
        query = select(sendings).where(sendings.c.account_id == account_id)
        if state is not None:
            query = query.where(sendings.c.state == state)
        async with self._db.read.connect() as conn:
            rows = (await conn.execute(query.order_by(sendings.c.id.desc()).limit(limit))).all()
            bound = await pushes_of(conn, [int(r.id) for r in rows])
        return [_view(row, bound.get(int(row.id), ())) for row in rows]

    async def push_counts(self, account_id: int, push_id: int) -> Counts:
        await self.get_push(account_id, push_id)
        return await self._stats.push(account_id, push_id)


def _view(row: Any, push_ids: Sequence[int]) -> SendingView:
    return SendingView(
        id=int(row.id),
        name=row.name,
        source=row.source,
        wall_ms=int(row.wall_ms),
        offset_minutes=int(row.offset_minutes),
        local_time=bool(row.local_time),
        apps=AppSelection.from_json(orjson.loads(row.apps)),
        audience=Audience.from_json(row.audience) if row.audience else Audience(),
        filters=None if row.filters is None else orjson.loads(row.filters),
        state=row.state,
        created_ms=int(row.created_ms),
        started_ms=row.started_ms,
        finished_ms=row.finished_ms,
        push_ids=tuple(push_ids),
    )


async def pushes_of(
    conn: AsyncConnection, sending_ids: Sequence[int]
) -> dict[int, tuple[int, ...]]:
    if not sending_ids:
        return {}
    rows = await conn.execute(
        select(pushes.c.sending_id, pushes.c.id)
        .where(pushes.c.sending_id.in_(list(sending_ids)))
        .order_by(pushes.c.id)
    )
    found: dict[int, list[int]] = {}
    for sending_id, push_id in rows:
        found.setdefault(int(sending_id), []).append(int(push_id))
    return {key: tuple(value) for key, value in found.items()}


async def translations_of(
    conn: AsyncConnection, push_ids: Sequence[int]
) -> dict[int, list[PushTranslationView]]:
    if not push_ids:
        return {}
    t = push_translations.c
    rows = await conn.execute(
        select(t.id, t.push_id, t.language, t.title, t.message, t.image_url, t.icon_url, t.link)
        .where(and_(t.push_id.in_(list(push_ids))))
        .order_by(t.id)
    )
    found: dict[int, list[PushTranslationView]] = {}
    for row in rows:
        found.setdefault(int(row.push_id), []).append(
            PushTranslationView(
                int(row.id),
                Translation(
                    row.language, row.title, row.message, row.image_url, row.icon_url, row.link
                ),
            )
        )
    return found
