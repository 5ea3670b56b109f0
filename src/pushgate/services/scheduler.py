"""The scheduler: runs sendings when they are due, exactly once.

Each step takes a batch of due ``sending`` jobs and, in ONE write transaction, deletes them,
moves their sendings on (``waiting`` -> ``running``/``done``, with a conditional update that
only the first run of a part can make), and stores one notification per app x push (x offset
of a local-time sending) with its ``fanout`` job. The fan-out then makes the deliveries, in
each device's language at that moment. The job and the notifications commit together, so a
crash before the commit leaves the job to run again, and a crash after it leaves nothing to
redo; on PostgreSQL, ``FOR UPDATE SKIP LOCKED`` hands each job to one process, and on SQLite
the write lock does.

A local-time sending runs part by part (domain/schedules.py): each run reads the timezones
its audience has now, sends to the offsets whose moment has come and that have not run, and
queues its next run at the next offset's moment.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from prometheus_client import Histogram
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.audience import Audience
from pushgate.domain.schedules import (
    NO_OFFSET_RUN,
    AppSelection,
    local_run,
    moment_ms,
    offset_groups,
)
from pushgate.domain.translations import Translations
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.delivery_jobs import FANOUT_QUEUE, fanout_payload
from pushgate.services.groups import groups_of_account
from pushgate.services.sendings import SENDING_QUEUE, sending_payload, translations_of
from pushgate.storage.audience_sql import Params, select_timezones
from pushgate.storage.database import Database, now_ms
from pushgate.storage.delivery_writes import DeliveryWrites, NotificationRow
from pushgate.storage.models import apps, pushes, sendings

log = logging.getLogger(__name__)

# Sendings run in one transaction: few, long write transactions let the sendings due in
# one second start together, between the fan-out's (benchmarks/sendings.py).
SENDING_BATCH = 2000


@dataclass(frozen=True, slots=True)
class _Part:
    """One part of a run: this audience (as JSON), due at this moment."""

    audience: str | None
    due_ms: int


@dataclass(frozen=True, slots=True)
class _Run:
    """What a sending does in this step: its parts to send, and where it is after them."""

    row: Any
    app_ids: list[int]
    parts: list[_Part]
    cursor: int
    next_ms: int | None

    def after(self, now: int) -> tuple[str, int, str, int, int | None]:
        """(state before, cursor before, state after, cursor after, finished_ms): the rows
        that share these move in one statement."""
        state = "done" if self.next_ms is None else "running"
        return (
            self.row.state,
            int(self.row.cursor),
            state,
            self.cursor,
            now if state == "done" else None,
        )


async def _move(conn: AsyncConnection, runs: list[_Run], now: int) -> set[int]:
    """Move the sendings on, each only from the state and cursor it was read in (so a part
    is made by one run only); the ids that moved."""
    groups: dict[tuple[str, int, str, int, int | None], list[int]] = defaultdict(list)
    for run in runs:
        groups[run.after(now)].append(int(run.row.id))
    moved: set[int] = set()
    for (state, cursor, new_state, new_cursor, finished), ids in groups.items():
        result = await conn.execute(
            update(sendings)
            .where(sendings.c.id.in_(ids), sendings.c.state == state, sendings.c.cursor == cursor)
            .values(
                state=new_state,
                cursor=new_cursor,
                started_ms=func.coalesce(sendings.c.started_ms, now),
                finished_ms=finished,
            )
            .returning(sendings.c.id)
        )
        moved.update(int(row[0]) for row in result)
    return moved


class Scheduler:
    def __init__(
        self,
        db: Database,
        jobs: EmbeddedQueue,
        ttl_seconds: int,
        start_lag: Histogram | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """``clock``: the time in milliseconds since the epoch (tests give their own)."""
        self._db = db
        self._clock = clock
        self._jobs = jobs
        self._ttl = ttl_seconds
        self._writes = DeliveryWrites(db.write.dialect.name)
        # Seconds from a part's due moment to its run.
        self._lag = start_lag

    async def step(self, limit: int = SENDING_BATCH) -> int:
        """Run up to ``limit`` due sendings (parts of them); returns how many jobs it took."""
        if self._db.is_sqlite and not await self._jobs.any_due(SENDING_QUEUE):
            return 0
        made = 0
        async with self._db.writing() as conn:
            jobs = await self._jobs.take_within(conn, SENDING_QUEUE, limit)
            if not jobs:
                return 0
            ids = sorted({int(job.payload) for job in jobs})
            made = await self._run(conn, ids)
        if made:
            self._jobs.wake(FANOUT_QUEUE)
        return len(jobs)

    async def _run(self, conn: AsyncConnection, sending_ids: list[int]) -> int:
        now = self._clock()
        rows = (
            await conn.execute(
                select(sendings).where(
                    sendings.c.id.in_(sending_ids), sendings.c.state.in_(("waiting", "running"))
                )
            )
        ).all()
        if not rows:
            return 0
        bound = await _pushes(conn, [int(r.id) for r in rows])
        apps_by_account = await _apps_by_account(conn, {int(r.account_id) for r in rows})
        later: list[tuple[int, int]] = []
        runs: list[_Run] = []
        for row in rows:
            account_id = int(row.account_id)
            selection = AppSelection.from_json(orjson.loads(row.apps))
            groups = await groups_of_account(conn, account_id, "apps", selection.named_groups())
            app_ids = selection.resolve(
                apps_by_account.get(account_id, ()),
                {g: [int(m) for m in members] for g, members in groups.items()},
            )
            parts, cursor, next_ms = await self._parts(conn, row, app_ids, now)
            if not parts and next_ms is not None and cursor == row.cursor:
                later.append((int(row.id), next_ms))  # nothing due yet: look again then
                continue
            runs.append(_Run(row, app_ids, parts, cursor, next_ms))
        moved = await _move(conn, runs, now)
        notifications: list[NotificationRow] = []
        for run in runs:
            sending_id = int(run.row.id)
            if sending_id not in moved:  # pragma: no cover - another run made this part
                log.warning("sending %s: this part has run already; skipped", sending_id)
                continue
            if run.next_ms is not None:
                later.append((sending_id, run.next_ms))
            for part in run.parts:
                if self._lag is not None:
                    self._lag.observe(max(0, now - part.due_ms) / 1000)
                for push in bound.get(sending_id, ()):
                    for app_id in run.app_ids:
                        notifications.append(
                            self._notification(
                                int(run.row.account_id), app_id, sending_id, push, part, now
                            )
                        )
        await self._store(conn, notifications)
        for sending_id, at in later:
            await self._jobs.enqueue(
                SENDING_QUEUE,
                [sending_payload(sending_id)],
                delay_seconds=max(0, at - now) / 1000,
                conn=conn,
            )
        return len(notifications)

    async def _parts(
        self, conn: AsyncConnection, row: Any, app_ids: list[int], now: int
    ) -> tuple[list[_Part], int, int | None]:
        """The parts due now, the cursor after them, and when the next part is due."""
        wall, offset = int(row.wall_ms), int(row.offset_minutes)
        if not row.local_time:
            return [_Part(row.audience, moment_ms(wall, offset))], NO_OFFSET_RUN, None
        audience = Audience.from_json(row.audience) if row.audience else Audience()
        timezones = await _timezones(
            conn, int(row.account_id), app_ids, audience, not self._db.is_sqlite
        )
        run = local_run(offset_groups(timezones, wall, offset), wall, int(row.cursor), now)
        parts = [
            _Part(
                replace(
                    audience, timezones=group.timezones, without_timezone=group.without_timezone
                ).to_json(),
                group.due_ms(wall),
            )
            for group in run.due
        ]
        return parts, run.cursor, run.next_ms

    def _notification(
        self, account_id: int, app_id: int, sending_id: int, push: Any, part: _Part, now: int
    ) -> NotificationRow:
        ttl = self._ttl if push.ttl_seconds is None else int(push.ttl_seconds)
        start = max(now, part.due_ms)
        return (
            0,  # given by insert_notifications
            account_id,
            app_id,
            None,
            push.title,
            push.message,
            push.data,
            now,
            start + ttl * 1000,
            push.options,
            push.campaign_id,
            part.audience,
            push.translations,
            part.due_ms,
            0,
            0,
            sending_id,
            int(push.id),
        )

    async def _store(self, conn: AsyncConnection, rows: list[NotificationRow]) -> None:
        if not rows:
            return
        ids = await self._writes.insert_notifications(conn, rows)
        await self._jobs.enqueue(FANOUT_QUEUE, [fanout_payload(n) for n in ids], conn=conn)


@dataclass(frozen=True, slots=True)
class _Push:
    id: int
    title: str | None
    message: str
    data: str
    options: str | None
    ttl_seconds: int | None
    campaign_id: int | None
    translations: str | None


async def _pushes(conn: AsyncConnection, sending_ids: Sequence[int]) -> dict[int, list[_Push]]:
    """The pushes bound to these sendings, with their translations as stored on a
    notification."""
    rows = (
        await conn.execute(
            select(pushes).where(pushes.c.sending_id.in_(list(sending_ids))).order_by(pushes.c.id)
        )
    ).all()
    items = await translations_of(conn, [int(r.id) for r in rows])
    found: dict[int, list[_Push]] = defaultdict(list)
    for row in rows:
        given = items.get(int(row.id))
        translations = (
            Translations(row.default_language, tuple(v.translation for v in given)).to_json()
            if given and row.default_language
            else None
        )
        found[int(row.sending_id)].append(
            _Push(
                int(row.id),
                row.title,
                row.message,
                row.data,
                row.options,
                row.ttl_seconds,
                row.campaign_id,
                translations,
            )
        )
    return found


async def _apps_by_account(conn: AsyncConnection, account_ids: set[int]) -> dict[int, list[int]]:
    rows = await conn.execute(
        select(apps.c.account_id, apps.c.id).where(apps.c.account_id.in_(sorted(account_ids)))
    )
    found: dict[int, list[int]] = defaultdict(list)
    for account_id, app_id in rows:
        found[int(account_id)].append(int(app_id))
    return found


async def _timezones(
    conn: AsyncConnection, account_id: int, app_ids: list[int], audience: Audience, postgres: bool
) -> list[str | None]:
    """The timezones of the devices the audience selects in these apps (the device's, else
    its subscriber's)."""
    found: set[str | None] = set()
    for app_id in app_ids:
        p = Params(postgres)
        sql = select_timezones(p, audience, app_id=app_id, account_id=account_id)
        found.update(row[0] for row in await conn.exec_driver_sql(sql, tuple(p.values)))
    return list(found)
