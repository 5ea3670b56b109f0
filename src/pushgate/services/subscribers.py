"""Subscribers of an app: found by their identifiers, given a profile, searched, erased.

A subscriber belongs to one app (``app_id``), or to the account (``app_id`` None) when it owns
personal channel devices. Every call names the account: another account's subscriber is
"not found".

Identifiers find a subscriber (``resolve``): every identifier given must name the same
subscriber (or none); that one gets the identifiers it lacks. Two identifiers that name two
different subscribers are a Conflict. On PostgreSQL, concurrent registrations that could find
or create the same subscriber are serialized by transaction-scoped advisory locks; SQLite's
single writer serializes them anyway.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import and_, delete, insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.domain.subscribers import (
    OPTINS,
    STANDARD,
    AttributeRow,
    Identifiers,
    Profile,
    attribute_value,
    parse_identifiers,
)
from pushgate.services.apps import App, owned_app_id
from pushgate.storage.audience_sql import Params
from pushgate.storage.database import Database, driver_rows, now_ms
from pushgate.storage.models import (
    apps,
    deliveries,
    devices,
    subscriber_attributes,
    subscriber_events,
    subscriber_identifiers,
    subscriber_tags,
    subscribers,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scope:
    """Where subscribers are looked for: one app, or the account's personal subscribers."""

    account_id: int
    app_id: int | None

    def where(self) -> Any:
        app = subscribers.c.app_id
        return and_(
            subscribers.c.account_id == self.account_id,
            app.is_(None) if self.app_id is None else app == self.app_id,
        )


@dataclass(frozen=True, slots=True)
class SubscriberView:
    id: int
    app_key: str | None
    identifiers: dict[str, str]
    language: str | None
    country: str | None
    timezone: str | None
    optins: dict[str, bool | None]
    attributes: dict[str, Any]
    tags: list[str]
    events: list[dict[str, Any]]
    last_active_ms: int | None
    created_ms: int
    updated_ms: int | None
    device_ids: list[int]


@dataclass(frozen=True, slots=True)
class Targets:
    """Named subscribers: those to send to, and how many got nothing and why."""

    subscriber_ids: tuple[int, ...]
    no_user: int
    opted_out: int


def lock_key(scope: Scope, kind: str, value: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key."""
    digest = hashlib.blake2b(
        f"{scope.account_id}\x00{scope.app_id}\x00{kind}\x00{value}".encode(), digest_size=8
    )
    return int.from_bytes(digest.digest(), "big", signed=True)


async def lock(
    db: Database, conn: AsyncConnection, scope: Scope, identifiers: Identifiers, *extra: str
) -> None:
    """Serialize the transactions that could find or create the same subscriber (or device,
    for each ``extra`` key) on PostgreSQL, locking in one order."""
    if db.is_sqlite:
        return
    keys = {lock_key(scope, name, value) for name, value in identifiers.standard().items()}
    keys |= {lock_key(scope, f"custom:{name}", value) for name, value in identifiers.custom}
    keys |= {lock_key(scope, "extra", value) for value in extra}
    for key in sorted(keys):
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


_IDENTITY = [subscribers.c.id, *(subscribers.c[name] for name in STANDARD)]


async def resolve(
    conn: AsyncConnection,
    scope: Scope,
    identifiers: Identifiers,
    now: int,
    current: int | None = None,
) -> tuple[int, bool]:
    """The subscriber these identifiers name, and whether it is new.

    None of them naming one: ``current`` (a re-registered device's owner) when it has no
    identifiers of its own or nothing is given, else a new subscriber."""
    if identifiers.custom and scope.app_id is None:
        raise InvalidInput("custom identifiers need an app (app_id)")
    found = await find(conn, scope, identifiers)
    if found is not None:
        await _fill(conn, scope, found, identifiers)
        return found, False
    if current is not None:
        if not identifiers:
            return current, False
        owner = (await conn.execute(select(*_IDENTITY).where(subscribers.c.id == current))).one()
        has_custom = (
            await conn.execute(
                select(subscriber_identifiers.c.name)
                .where(subscriber_identifiers.c.subscriber_id == current)
                .limit(1)
            )
        ).first()
        if all(getattr(owner, name) is None for name in STANDARD) and has_custom is None:
            await _fill(conn, scope, current, identifiers)
            return current, False
    result = await conn.execute(
        insert(subscribers).returning(subscribers.c.id),
        {
            "account_id": scope.account_id,
            "app_id": scope.app_id,
            **dict.fromkeys(STANDARD),
            **identifiers.standard(),
            "optin_push": True,
            "created_ms": now,
            "updated_ms": now,
        },
    )
    subscriber_id = int(result.scalar_one())
    await _add_custom(conn, scope, subscriber_id, identifiers.custom)
    return subscriber_id, True


async def find(conn: AsyncConnection, scope: Scope, identifiers: Identifiers) -> int | None:
    """The one subscriber every given identifier names (None: none names any); Conflict when
    they name different subscribers."""
    (found,) = await find_many(conn, scope, [identifiers])
    return found


async def find_many(
    conn: AsyncConnection, scope: Scope, items: Sequence[Identifiers]
) -> list[int | None]:
    """``find`` for many sets of identifiers at once: one query per identifier kind given,
    whatever their number. Conflict when a set's identifiers name different subscribers."""
    standard: dict[str, set[str]] = defaultdict(set)
    custom: set[tuple[str, str]] = set()
    for item in items:
        for name, value in item.standard().items():
            standard[name].add(value)
        custom.update(item.custom)
    owners: dict[tuple[str, str], int] = {}
    postgres = conn.dialect.name == "postgresql"
    for name, values in standard.items():
        if name not in STANDARD:  # a column name in the SQL below: only these
            raise ValueError(f"not a standard identifier: {name!r}")
        for chunk in _chunks(sorted(values), 500):
            # Plain SQL in one trip to the driver (a send's hot path: through SQLAlchemy's
            # expression, compiler and result a read cost several times as much).
            p = Params(postgres)
            app_is = "app_id IS NULL" if scope.app_id is None else f"app_id = {p(scope.app_id)}"
            rows = await driver_rows(
                conn,
                # markers, and a column named in STANDARD: no value of the caller's
                f"SELECT id, {name} FROM subscribers WHERE account_id = {p(scope.account_id)} "  # noqa: S608
                f"AND {app_is} AND {name} IN ({p.many(chunk)})",
                p.values,
            )
            owners.update({(name, row[1]): int(row[0]) for row in rows})
    if custom and scope.app_id is not None:
        pairs = sorted(custom)
        for chunk_pairs in _chunks(pairs, 200):
            named_rows = await conn.execute(
                select(
                    subscriber_identifiers.c.subscriber_id,
                    subscriber_identifiers.c.name,
                    subscriber_identifiers.c.value,
                ).where(
                    subscriber_identifiers.c.app_id == scope.app_id,
                    tuple_(subscriber_identifiers.c.name, subscriber_identifiers.c.value).in_(
                        chunk_pairs
                    ),
                )
            )
            owners.update({("custom:" + r[1], r[2]): int(r[0]) for r in named_rows})
    found: list[int | None] = []
    for item in items:
        named: dict[int, list[str]] = defaultdict(list)
        for name, value in item.standard().items():
            if (owner := owners.get((name, value))) is not None:
                named[owner].append(name)
        for name, value in item.custom:
            if (owner := owners.get(("custom:" + name, value))) is not None:
                named[owner].append(name)
        if len(named) > 1:
            which = "; ".join(
                f"{', '.join(names)} name subscriber {sid}" for sid, names in named.items()
            )
            raise Conflict(f"The identifiers name different subscribers ({which})")
        found.append(next(iter(named), None))
    return found


async def _fill(
    conn: AsyncConnection, scope: Scope, subscriber_id: int, identifiers: Identifiers
) -> None:
    """Give the subscriber the given identifiers it lacks (none of them names another
    subscriber: ``find`` made sure)."""
    row = (await conn.execute(select(*_IDENTITY).where(subscribers.c.id == subscriber_id))).one()
    missing = {
        name: value for name, value in identifiers.standard().items() if getattr(row, name) is None
    }
    if missing:
        await conn.execute(
            update(subscribers).where(subscribers.c.id == subscriber_id).values(**missing)
        )
    if identifiers.custom:
        known = set(
            (
                await conn.execute(
                    select(subscriber_identifiers.c.name, subscriber_identifiers.c.value).where(
                        subscriber_identifiers.c.subscriber_id == subscriber_id
                    )
                )
            ).all()
        )
        await _add_custom(
            conn, scope, subscriber_id, [item for item in identifiers.custom if item not in known]
        )


async def _add_custom(
    conn: AsyncConnection, scope: Scope, subscriber_id: int, items: Iterable[tuple[str, str]]
) -> None:
    rows = [
        {"app_id": scope.app_id, "name": name, "value": value, "subscriber_id": subscriber_id}
        for name, value in items
    ]
    if rows:
        await conn.execute(insert(subscriber_identifiers), rows)


class SubscriberService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _scope(self, conn: AsyncConnection, account_id: int, app_key: str) -> Scope:
        return Scope(account_id, await owned_app_id(conn, account_id, app_key))

    async def upsert(
        self, account_id: int, app_key: str, identifiers: Identifiers, profile: Profile
    ) -> tuple[SubscriberView, bool]:
        """Find the app's subscriber by its identifiers (or create it) and apply ``profile``.
        Returns it and whether it is new."""
        if not identifiers:
            raise InvalidInput(
                "identifiers are required: at least one of external_id, user_id, uuid, email, "
                "phone_number or a custom key"
            )
        now = now_ms()
        async with self._db.writing() as conn:
            scope = await self._scope(conn, account_id, app_key)
            await lock(self._db, conn, scope, identifiers)
            subscriber_id, created = await resolve(conn, scope, identifiers, now)
            await apply_profile(conn, subscriber_id, profile, now)
            view = await subscriber_view(conn, subscriber_id)
        return view, created

    async def targets(
        self, app: App, identifiers: Sequence[Identifiers], *, optin_required: bool = False
    ) -> Targets:
        """The app's subscribers these identifiers name, and how many name nobody; with
        ``optin_required``, those who withdrew push opt-in are counted, not kept."""
        scope = Scope(app.account_id, app.id)
        async with self._db.read.connect() as conn:
            named = await find_many(conn, scope, identifiers)
            found = [subscriber_id for subscriber_id in named if subscriber_id is not None]
            no_user = len(named) - len(found)
            ids = list(dict.fromkeys(found))
            opted_out: set[int] = set()
            if optin_required and ids:
                opted_out = set(
                    (
                        await conn.execute(
                            select(subscribers.c.id).where(
                                subscribers.c.id.in_(ids), subscribers.c.optin_push.is_(False)
                            )
                        )
                    ).scalars()
                )
        return Targets(tuple(i for i in ids if i not in opted_out), no_user, len(opted_out))

    async def get(self, account_id: int, subscriber_id: int) -> SubscriberView:
        async with self._db.read.connect() as conn:
            await _owned(conn, account_id, subscriber_id)
            return await subscriber_view(conn, subscriber_id)

    async def search(
        self,
        account_id: int,
        app_key: str,
        identifiers: Identifiers | None = None,
        *,
        after: int = 0,
        limit: int = 100,
    ) -> list[SubscriberView]:
        """The app's subscriber the identifiers name (at most one), or, without identifiers,
        the app's subscribers in id order after ``after``."""
        async with self._db.read.connect() as conn:
            scope = await self._scope(conn, account_id, app_key)
            if identifiers:
                found = await find(conn, scope, identifiers)
                ids = [] if found is None else [found]
            else:
                ids = list(
                    (
                        await conn.execute(
                            select(subscribers.c.id)
                            .where(scope.where(), subscribers.c.id > after)
                            .order_by(subscribers.c.id)
                            .limit(limit)
                        )
                    ).scalars()
                )
            return [await subscriber_view(conn, int(sid)) for sid in ids]

    async def lookup(self, account_id: int, app_key: str, value: str) -> list[SubscriberView]:
        """The app's subscribers that ``value`` names: as its id, external id, user id, uuid,
        e-mail or phone number, or, given as ``key=value``, as that identifier (a custom one
        too, e.g. ``member_no=A-17``)."""
        value = value.strip()
        if not value or len(value) > 400:
            return []
        key, equals, named = value.partition("=")
        wanted = [{key.strip(): named.strip()}] if equals else [{n: value} for n in STANDARD]
        async with self._db.read.connect() as conn:
            scope = await self._scope(conn, account_id, app_key)
            ids: list[int] = []
            if value.isdigit() and len(value) < 19:
                ids.extend(
                    (
                        await conn.execute(
                            select(subscribers.c.id).where(
                                scope.where(), subscribers.c.id == int(value)
                            )
                        )
                    ).scalars()
                )
            for raw in wanted:
                try:
                    identifiers = parse_identifiers(raw, field="", lenient=True)
                except InvalidInput:
                    continue
                found = await find(conn, scope, identifiers) if identifiers else None
                if found is not None:
                    ids.append(found)
            return [await subscriber_view(conn, int(sid)) for sid in dict.fromkeys(ids)]

    async def delete(self, account_id: int, subscriber_id: int) -> int:
        """Erase the subscriber with its devices, their deliveries, and everything its profile
        held. Returns how many devices went with it."""
        async with self._db.writing() as conn:
            await _owned(conn, account_id, subscriber_id)
            device_ids = list(
                (
                    await conn.execute(
                        select(devices.c.id).where(devices.c.subscriber_id == subscriber_id)
                    )
                ).scalars()
            )
            for chunk in _chunks(device_ids, 500):
                await conn.execute(delete(deliveries).where(deliveries.c.device_id.in_(chunk)))
            await conn.execute(delete(devices).where(devices.c.subscriber_id == subscriber_id))
            for table in (
                subscriber_attributes,
                subscriber_tags,
                subscriber_events,
                subscriber_identifiers,
            ):
                await conn.execute(delete(table).where(table.c.subscriber_id == subscriber_id))
            await conn.execute(delete(subscribers).where(subscribers.c.id == subscriber_id))
        return len(device_ids)


async def _owned(conn: AsyncConnection, account_id: int, subscriber_id: int) -> None:
    row = (
        await conn.execute(
            select(subscribers.c.id).where(
                subscribers.c.id == subscriber_id, subscribers.c.account_id == account_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"No subscriber {subscriber_id} in this account")


async def apply_profile(
    conn: AsyncConnection, subscriber_id: int, profile: Profile, now: int
) -> None:
    """Write what ``profile`` sets (what it leaves out stays as it is)."""
    values: dict[str, Any] = {"updated_ms": now}
    for name in ("language", "country", "timezone"):
        if getattr(profile, name) is not None:
            values[name] = getattr(profile, name)
    for name, value in profile.optins.items():
        values[f"optin_{name}"] = value
    await conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id), values)
    for name, rows in profile.attributes.items():
        await conn.execute(
            delete(subscriber_attributes).where(
                subscriber_attributes.c.subscriber_id == subscriber_id,
                subscriber_attributes.c.name == name,
            )
        )
        if rows:
            await conn.execute(
                insert(subscriber_attributes),
                [
                    {
                        "subscriber_id": subscriber_id,
                        "name": name,
                        "position": row.position,
                        "kind": row.kind,
                        "text_value": row.text_value,
                        "num_value": row.num_value,
                    }
                    for row in rows
                ],
            )
    if profile.tags is not None:
        await conn.execute(
            delete(subscriber_tags).where(subscriber_tags.c.subscriber_id == subscriber_id)
        )
    wanted = list(dict.fromkeys([*(profile.tags or ()), *profile.add_tags]))
    if wanted:
        have = set(
            (
                await conn.execute(
                    select(subscriber_tags.c.tag).where(
                        subscriber_tags.c.subscriber_id == subscriber_id
                    )
                )
            ).scalars()
        )
        new = [{"subscriber_id": subscriber_id, "tag": t} for t in wanted if t not in have]
        if new:
            await conn.execute(insert(subscriber_tags), new)
    for name, at in profile.events:
        await record_event(conn, subscriber_id, name, now if at is None else at)


async def record_event(conn: AsyncConnection, subscriber_id: int, name: str, at: int) -> None:
    """Count a named event of the subscriber, keeping its first and last time."""
    events = subscriber_events.c
    row = (
        await conn.execute(
            select(events.first_ms, events.last_ms, events["count"]).where(
                events.subscriber_id == subscriber_id, events.name == name
            )
        )
    ).first()
    if row is None:
        await conn.execute(
            insert(subscriber_events),
            {
                "subscriber_id": subscriber_id,
                "name": name,
                "first_ms": at,
                "last_ms": at,
                "count": 1,
            },
        )
        return
    first_ms, last_ms, count = row
    await conn.execute(
        update(subscriber_events)
        .where(events.subscriber_id == subscriber_id, events.name == name)
        .values(first_ms=min(first_ms, at), last_ms=max(last_ms, at), count=count + 1)
    )


async def subscriber_view(conn: AsyncConnection, subscriber_id: int) -> SubscriberView:
    row = (
        await conn.execute(
            select(subscribers, apps.c.app_key)
            .select_from(subscribers.outerjoin(apps, apps.c.id == subscribers.c.app_id))
            .where(subscribers.c.id == subscriber_id)
        )
    ).one()
    custom = (
        await conn.execute(
            select(subscriber_identifiers.c.name, subscriber_identifiers.c.value)
            .where(subscriber_identifiers.c.subscriber_id == subscriber_id)
            .order_by(subscriber_identifiers.c.name)
        )
    ).all()
    attribute_rows: dict[str, list[AttributeRow]] = defaultdict(list)
    for a in (
        await conn.execute(
            select(subscriber_attributes).where(
                subscriber_attributes.c.subscriber_id == subscriber_id
            )
        )
    ).all():
        attribute_rows[a.name].append(AttributeRow(a.position, a.kind, a.text_value, a.num_value))
    tags = list(
        (
            await conn.execute(
                select(subscriber_tags.c.tag)
                .where(subscriber_tags.c.subscriber_id == subscriber_id)
                .order_by(subscriber_tags.c.tag)
            )
        ).scalars()
    )
    events = [
        {"name": e[1], "first_ms": e[2], "last_ms": e[3], "count": e[4]}
        for e in (
            await conn.execute(
                select(subscriber_events)
                .where(subscriber_events.c.subscriber_id == subscriber_id)
                .order_by(subscriber_events.c.name)
            )
        ).all()
    ]
    device_ids = list(
        (
            await conn.execute(
                select(devices.c.id)
                .where(devices.c.subscriber_id == subscriber_id)
                .order_by(devices.c.id)
            )
        ).scalars()
    )
    identifiers = {name: getattr(row, name) for name in STANDARD if getattr(row, name)}
    identifiers.update({name: value for name, value in custom})
    return SubscriberView(
        id=row.id,
        app_key=row.app_key,
        identifiers=identifiers,
        language=row.language,
        country=row.country,
        timezone=row.timezone,
        optins={name: getattr(row, f"optin_{name}") for name in OPTINS},
        attributes={name: attribute_value(rows) for name, rows in sorted(attribute_rows.items())},
        tags=tags,
        events=events,
        last_active_ms=row.last_active_ms,
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
        device_ids=device_ids,
    )


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
