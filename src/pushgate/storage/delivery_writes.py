"""The write statements on the delivery hot path, as plain SQL with multi-row VALUES lists.

Each batch is ONE statement, whatever its number of rows: new notifications in one INSERT, their
deliveries in one ``INSERT ... SELECT`` joined to the devices (one parameter set per
notification, not per device), status changes in one ``UPDATE ... FROM (VALUES ...)`` (on
SQLite in chunks of a few fixed sizes, see ``_SQLITE_VALUES_SIZES``). That skips SQLAlchemy's
per-row parameter processing, and it lets SQLite run a whole batch inside one ``sqlite3_step``
call, which releases the GIL, instead of handing the GIL back and forth with the event loop
once per row. The SQL is the same on SQLite and PostgreSQL except for parameter markers and
casts, those chunks, and the fan-out without ``RETURNING`` written for SQLite alone
(``_fan_out_sqlite``); the storage test suite runs them on both databases.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.audience import Audience
from pushgate.storage.audience_sql import Params, select_devices
from pushgate.storage.database import Statement, driver_rows
from pushgate.storage.params import markers

# (id, account_id, app_id, event, title, message, data, created_ms, expires_ms, options,
#  campaign_id, audience, translations, due_ms, no_user, opted_out, sending_id, push_id)
NotificationRow = tuple[
    int,
    int,
    int | None,
    str | None,
    str | None,
    str,
    str,
    int,
    int,
    str | None,
    int | None,
    str | None,
    str | None,
    int | None,
    int,
    int,
    int | None,
    int | None,
]
# (notification_id, account_id, app_id, created_ms)
AudienceRow = tuple[int, int, int | None, int]
# Device ids in (after, upto]: the part of an audience that one fan-out chunk covers.
Span = tuple[int, int]
EVERY_DEVICE: Span = (0, 2**63 - 1)
# (sends, at, device_id, notification_id), for both "sent" and "delivered"
StatusRow = tuple[int, int, int, int]

_NOTIFICATION_COLUMNS = (
    "id, account_id, app_id, event, title, message, data, created_ms, expires_ms, options, "
    "campaign_id, audience, translations, due_ms, no_user, opted_out, sending_id, push_id"
)
_NOTIFICATION_CASTS = (
    "bigint",
    "bigint",
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "bigint",
    "text",
    "bigint",
    "text",
    "text",
    "bigint",
    "int",
    "int",
    "bigint",
    "bigint",
)
# SQLite allows 32766 bound parameters per statement.
_NOTIFICATIONS_PER_INSERT = 1024
_AUDIENCE_CASTS = ("bigint", "bigint", "bigint", "bigint")
_STATUS_CASTS = ("int", "bigint", "bigint", "bigint")
# Rows per VALUES list of a status statement on SQLite: the largest size, or the smallest one
# that holds what is left, the rest padded with rows that match nothing. The statement's text
# then takes one of three forms, compiled once each per connection (a VALUES list of 2,000
# rows took longer to compile than to run), and a flush of 1,000 changes is one statement: a
# statement is a release and a retake of the GIL by SQLite's thread, a wait while the event
# loop runs.
_SQLITE_VALUES_SIZES = (1024, 128, 16)
_NO_STATUS: StatusRow = (0, 0, -1, -1)
_NOT_SEEN = (0, -1)
_SEEN_CASTS = ("bigint", "bigint")


@lru_cache(maxsize=256)
def _values(rows: int, casts: tuple[str, ...], postgres: bool) -> str:
    """``VALUES (...), (...)`` for ``rows`` rows of ``len(casts)`` parameters, named
    ``v(column1, column2, ...)`` on both databases (SQLite's own names for VALUES columns)."""
    width = len(casts)
    if postgres:
        groups = (
            "(" + ", ".join(f"${r * width + c + 1}::{casts[c]}" for c in range(width)) + ")"
            for r in range(rows)
        )
        names = ", ".join(f"column{c + 1}" for c in range(width))
        return f"(VALUES {', '.join(groups)}) AS v({names})"
    group = "(" + ", ".join("?" * width) + ")"
    return f"(VALUES {', '.join([group] * rows)}) AS v"


@lru_cache(maxsize=16)
def _unnest(casts: tuple[str, ...]) -> str:
    """PostgreSQL: rows given as one array parameter per column, named ``v(column1, ...)``.
    The statement's text is the same whatever the number of rows, so asyncpg prepares it once
    per connection, where a VALUES list of each length is a statement of its own (a status
    flush of a few hundred changes was prepared again almost every time)."""
    arrays = ", ".join(f"${c + 1}::{cast}[]" for c, cast in enumerate(casts))
    names = ", ".join(f"column{c + 1}" for c in range(len(casts)))
    return f"unnest({arrays}) AS v({names})"


def _flat(rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(chain.from_iterable(rows))


def _values_chunks(
    rows: Sequence[tuple[Any, ...]],
    casts: tuple[str, ...],
    postgres: bool,
    padding: tuple[Any, ...],
) -> list[tuple[str, tuple[Any, ...]]]:
    """(row source named ``v(column1, ...)``, its parameters) for ``rows``: on PostgreSQL one
    ``unnest`` of an array per column (``_unnest``); on SQLite VALUES lists in the sizes of
    ``_SQLITE_VALUES_SIZES``, padded with ``padding`` rows that must match nothing."""
    if not rows:
        return []
    if postgres:
        return [(_unnest(casts), tuple(list(column) for column in zip(*rows, strict=True)))]
    chunks = []
    start = 0
    while start < len(rows):
        left = len(rows) - start
        size = next(
            (s for s in reversed(_SQLITE_VALUES_SIZES) if s >= left), _SQLITE_VALUES_SIZES[0]
        )
        chunk = list(rows[start : start + size])
        chunk += [padding] * (size - len(chunk))
        chunks.append((_values(size, casts, False), _flat(chunk)))
        start += size
    return chunks


class DeliveryWrites:
    """Builds and runs the hot-path statements for one database dialect."""

    def __init__(self, dialect_name: str) -> None:
        self._postgres = dialect_name == "postgresql"
        self._enabled = "devices.enabled" if self._postgres else "devices.enabled = 1"

    def _marks(self, count: int, start: int = 1) -> list[str]:
        return markers(self._postgres, count, start)

    async def insert_notifications(
        self, conn: AsyncConnection, rows: Sequence[NotificationRow]
    ) -> list[int]:
        """Insert accepted notifications (their deliveries are made by the fan-out) under new
        ids, increasing in the rows' order; the rows' own first field (the id) is not used.
        The ids, in the rows' order.

        PostgreSQL draws them from the table's sequence first. On SQLite each is the largest
        id plus its row's position, in the INSERT itself: the write transaction (``BEGIN
        IMMEDIATE``) holds the database's only write lock, so those ids are ours alone until
        it commits, and one statement does what a read of the largest id and the INSERT did.
        """
        if not rows:
            return []
        if self._postgres:
            result = await driver_rows(
                conn,
                "SELECT nextval(pg_get_serial_sequence('notifications', 'id')) "
                "FROM generate_series(1, $1::int)",
                (len(rows),),
            )
            ids = sorted(int(row[0]) for row in result)
            given = [(nid, *row[1:]) for nid, row in zip(ids, rows, strict=True)]
            for start in range(0, len(given), _NOTIFICATIONS_PER_INSERT):
                part = given[start : start + _NOTIFICATIONS_PER_INSERT]
                values = _values(len(part), _NOTIFICATION_CASTS, True)
                await driver_rows(
                    conn,
                    f"INSERT INTO notifications ({_NOTIFICATION_COLUMNS}) SELECT * FROM {values}",
                    _flat(part),
                )
            return ids
        others = ", ".join(f"v.column{c}" for c in range(2, len(_NOTIFICATION_CASTS) + 1))
        ids = []
        for start in range(0, len(rows), _NOTIFICATIONS_PER_INSERT):
            chunk = rows[start : start + _NOTIFICATIONS_PER_INSERT]
            values = _values(len(chunk), _NOTIFICATION_CASTS, False)
            positions = [(position, *row[1:]) for position, row in enumerate(chunk, 1)]
            returned = await driver_rows(
                conn,
                f"INSERT INTO notifications ({_NOTIFICATION_COLUMNS}) "
                "SELECT (SELECT coalesce(max(id), 0) FROM notifications) + v.column1, "
                f"{others} FROM {values} RETURNING id",
                _flat(positions),
            )
            made = sorted(int(row[0]) for row in returned)
            if made != list(range(made[0], made[0] + len(chunk))):
                raise RuntimeError(f"notification ids not consecutive: {made[:3]}...")
            ids += made
        return ids

    async def fan_out(
        self,
        conn: AsyncConnection,
        audiences: Sequence[AudienceRow],
        *,
        personal: bool = True,
        span: Span = EVERY_DEVICE,
    ) -> list[tuple[int, int, str]]:
        """Deliveries of notifications without an audience of their own: one queued delivery
        per notification x enabled device of its app, and (``personal``) x personal
        (app-less) channel device of its account; only devices whose ids are in ``span``.
        Deliveries that exist already are skipped (a fan-out that runs twice adds nothing).
        Returns the new deliveries as (notification_id, device_id, transport)."""
        if not audiences:
            return []
        values = _values(len(audiences), _AUDIENCE_CASTS, self._postgres)
        enabled = self._enabled.replace("devices.", "d.")
        after, upto = self._marks(2, len(audiences) * 4 + 1)
        within = f"{enabled} AND d.id > {after} AND d.id <= {upto}"
        personal_devices = (
            "UNION ALL "
            "SELECT v.column1, d.id, d.platform, v.column4 FROM v JOIN devices d "
            f"ON d.account_id = v.column2 AND d.app_id IS NULL WHERE {within} "
            if personal
            else ""
        )
        # PostgreSQL inserts in key order, so that two fan-outs that meet on a row wait for
        # each other instead of deadlocking. SQLite has one writer; there the sort cost about
        # a fifth of the statement (3.9 against 5.0 us a delivery alone with ``sqlite3``), and
        # its plan already walks each notification's devices in id order.
        order = "ORDER BY x.n, x.id " if self._postgres else ""
        insert = (
            f"WITH v AS (SELECT * FROM {values}) "
            "INSERT INTO deliveries "
            "(notification_id, device_id, status, transport, attempts, created_ms, updated_ms) "
            "SELECT x.n, x.id, 'queued', x.platform, 0, x.t, x.t FROM ("
            "SELECT v.column1 AS n, d.id AS id, d.platform AS platform, v.column4 AS t "
            f"FROM v JOIN devices d ON d.app_id = v.column3 WHERE {within} "
            f"{personal_devices}) x WHERE 1 = 1 {order}"
            "ON CONFLICT (notification_id, device_id) DO NOTHING"
        )
        params = _flat(audiences) + span
        if not self._postgres:
            return await self._fan_out_sqlite(conn, audiences, personal, span, insert, params)
        result = await driver_rows(
            conn, f"{insert} RETURNING notification_id, device_id, transport", params
        )
        return [(int(n), int(d), str(t)) for n, d, t in result]

    async def chunk_end(
        self,
        conn: AsyncConnection,
        app_id: int,
        account_id: int | None,
        after: int,
        size: int,
    ) -> int | None:
        """Where a fan-out chunk of ``size`` devices that starts after device ``after`` ends:
        the id of the ``size``-th enabled device of the app (with the account's personal ones
        when ``account_id`` is given) in id order, or None when no more than ``size`` are
        left. Reads at most ``size + 1`` index entries of each."""
        enabled = self._enabled
        m = self._marks(6)
        parts = [
            f"SELECT id FROM (SELECT id FROM devices WHERE app_id = {m[0]} AND {enabled} "
            f"AND id > {m[1]} ORDER BY id LIMIT {m[2]}) a"
        ]
        params: list[Any] = [app_id, after, size + 1]
        if account_id is not None:
            parts.append(
                f"SELECT id FROM (SELECT id FROM devices WHERE account_id = {m[3]} "
                f"AND app_id IS NULL AND {enabled} AND id > {m[4]} ORDER BY id LIMIT {m[5]}) b"
            )
            params += [account_id, after, size + 1]
        ids = sorted(
            int(row[0]) for row in await driver_rows(conn, " UNION ALL ".join(parts), params)
        )
        return ids[size - 1] if len(ids) > size else None

    async def _fan_out_sqlite(
        self,
        conn: AsyncConnection,
        audiences: Sequence[AudienceRow],
        personal: bool,
        span: Span,
        insert: str,
        params: tuple[Any, ...],
    ) -> list[tuple[int, int, str]]:
        """``fan_out`` on SQLite: the devices are read once per app (and account), not
        returned once per delivery. The transaction holds SQLite's only write lock, so they are
        the devices the INSERT joins; and each device of a notification is fanned out once on
        SQLite (in the transaction that accepts it, in the one that deletes its fan-out job,
        or in the one that moves its job past that device's chunk), so each of them is a new
        delivery. ``RETURNING`` a row per delivery cost more than inserting it."""
        by_app, by_account = await self._devices_of(
            conn, {a[2] for a in audiences}, {a[1] for a in audiences} if personal else set(), span
        )
        await driver_rows(conn, insert, params)
        nothing: list[tuple[int, str]] = []
        return [
            (notification_id, device_id, platform)
            for notification_id, account_id, app_id, _ in audiences
            for devices in (
                nothing if app_id is None else by_app.get(app_id, nothing),
                by_account.get(account_id, nothing),
            )
            for device_id, platform in devices
        ]

    async def _devices_of(
        self, conn: AsyncConnection, apps: set[int | None], accounts: set[int], span: Span
    ) -> tuple[dict[int, list[tuple[int, str]]], dict[int, list[tuple[int, str]]]]:
        """(id, platform) of the enabled devices of these apps, by app, and of the personal
        (app-less) devices of these accounts, by account, with ids in ``span``; in one
        statement (up to 500 of each), each list in id order."""
        by_app: dict[int, list[tuple[int, str]]] = defaultdict(list)
        by_account: dict[int, list[tuple[int, str]]] = defaultdict(list)
        app_ids = sorted(app for app in apps if app is not None)
        account_ids = sorted(accounts)
        for start in range(0, max(len(app_ids), len(account_ids)), 500):
            app_chunk = app_ids[start : start + 500]
            account_chunk = account_ids[start : start + 500]
            parts = []
            params: list[Any] = []
            if app_chunk:
                after, upto = self._marks(2, len(app_chunk) + 1)
                parts.append(
                    f"SELECT 0, app_id, id, platform FROM devices WHERE app_id IN "
                    f"({self._list(1, len(app_chunk))}) AND {self._enabled} "
                    f"AND id > {after} AND id <= {upto}"
                )
                params += [*app_chunk, *span]
            if account_chunk:
                first = len(params) + 1
                after, upto = self._marks(2, first + len(account_chunk))
                parts.append(
                    "SELECT 1, account_id, id, platform FROM devices WHERE account_id IN "
                    f"({self._list(first, len(account_chunk))}) "
                    f"AND app_id IS NULL AND {self._enabled} AND id > {after} AND id <= {upto}"
                )
                params += [*account_chunk, *span]
            for personal, key, device_id, platform in await driver_rows(
                conn, f"{' UNION ALL '.join(parts)} ORDER BY 1, 2, 3", params
            ):
                found = by_account if personal else by_app
                found[int(key)].append((int(device_id), str(platform)))
        return by_app, by_account

    async def devices_at_most(
        self, conn: AsyncConnection, app_id: int | None, account_id: int | None, limit: int
    ) -> bool:
        """Whether the app's enabled devices, with the account's enabled personal (app-less)
        ones when ``account_id`` is given, number at most ``limit``: reads at most
        ``limit + 1`` index entries of each, however large the app."""
        enabled = self._enabled
        m = self._marks(4)
        counts = [
            f"(SELECT count(*) FROM (SELECT 1 FROM devices WHERE devices.app_id = {m[0]} "
            f"AND {enabled} LIMIT {m[1]}) a)"
        ]
        params: list[Any] = [app_id, limit + 1]
        if account_id is not None:
            counts.append(
                "(SELECT count(*) FROM (SELECT 1 FROM devices WHERE devices.account_id = "
                f"{m[2]} AND devices.app_id IS NULL AND {enabled} LIMIT {m[3]}) b)"
            )
            params += [account_id, limit + 1]
        [(count,)] = await driver_rows(conn, f"SELECT {' + '.join(counts)}", params)
        return int(count) <= limit

    async def fan_out_users(
        self, conn: AsyncConnection, rows: Sequence[AudienceRow], *, last_active: bool = True
    ) -> list[tuple[int, int, str]]:
        """Deliveries of notifications to one user each (``Audience.one_subscriber``), many
        in one statement: each row (notification_id, subscriber_id, app_id, created_ms) gets
        its subscriber's most recently active enabled device of the app (``last_active``;
        else every enabled device of the app), when the subscriber has not withdrawn push
        opt-in (the audience rules ``subscribers``, ``optin_required`` and
        ``last_active_device_only``); as ``fan_out``."""
        if not rows:
            return []
        values = _values(len(rows), _AUDIENCE_CASTS, self._postgres)
        optin = "s.optin_push" if self._postgres else "s.optin_push = 1"
        if last_active:
            enabled = self._enabled.replace("devices.", "d2.")
            chosen = (
                "JOIN devices d ON d.id = (SELECT d2.id FROM devices d2 "
                "WHERE d2.subscriber_id = v.column2 AND d2.app_id = v.column3 "
                f"AND {enabled} ORDER BY coalesce(d2.last_active_ms, 0) DESC, d2.id DESC "
                "LIMIT 1) "
            )
        else:
            enabled = self._enabled.replace("devices.", "d.")
            chosen = (
                "JOIN devices d ON d.subscriber_id = v.column2 AND d.app_id = v.column3 "
                f"AND {enabled} "
            )
        result: list[Any] = await driver_rows(
            conn,
            f"WITH v AS (SELECT * FROM {values}) "
            "INSERT INTO deliveries "
            "(notification_id, device_id, status, transport, attempts, created_ms, updated_ms) "
            "SELECT v.column1, d.id, 'queued', d.platform, 0, v.column4, v.column4 "
            f"FROM v JOIN subscribers s ON s.id = v.column2 {chosen}"
            f"WHERE {optin} ORDER BY v.column1, d.id "
            "ON CONFLICT (notification_id, device_id) DO NOTHING "
            "RETURNING notification_id, device_id, transport",
            _flat(rows),
        )
        return [(int(n), int(d), str(t)) for n, d, t in result]

    async def fan_out_audience(
        self,
        conn: AsyncConnection,
        notification_id: int,
        created_ms: int,
        audience: Audience,
        *,
        app_id: int,
        account_id: int,
        engaged_since_ms: int,
    ) -> list[tuple[int, int, str]]:
        """Deliveries of one notification to the devices its audience selects (compiled to
        SQL by ``storage/audience_sql.py``); as ``fan_out``."""
        p = Params(self._postgres)
        n, t = p(notification_id), p(created_ms)
        devices_sql = select_devices(
            p, audience, app_id=app_id, account_id=account_id, engaged_since_ms=engaged_since_ms
        )
        result: list[Any] = await driver_rows(
            conn,
            "INSERT INTO deliveries "
            "(notification_id, device_id, status, transport, attempts, created_ms, updated_ms) "
            f"SELECT {n}, x.id, 'queued', x.platform, 0, {t}, {t} FROM ({devices_sql}) x "
            "WHERE 1 = 1 ORDER BY x.id "
            "ON CONFLICT (notification_id, device_id) DO NOTHING "
            "RETURNING notification_id, device_id, transport",
            tuple(p.values),
        )
        return [(int(n_), int(d), str(t_)) for n_, d, t_ in result]

    async def cap(
        self,
        conn: AsyncConnection,
        notification_id: int,
        app_id: int,
        cap: int,
        since_ms: int,
        now: int,
        span: Span = EVERY_DEVICE,
    ) -> set[int]:
        """Mark ``capped`` the queued deliveries of this notification to devices in ``span``
        of subscribers who had ``cap`` or more earlier notifications of the app since
        ``since_ms``; their device ids."""
        n, app, since, limit, reason, at, after, upto = self._marks(8)
        result: list[Any] = await driver_rows(
            conn,
            f"UPDATE deliveries SET status = 'capped', reason = {reason}, updated_ms = {at} "
            f"WHERE notification_id = {n} AND status = 'queued' "
            f"AND device_id > {after} AND device_id <= {upto} AND device_id IN ("
            f"SELECT d.id FROM devices d WHERE d.app_id = {app} AND d.subscriber_id IN ("
            "SELECT d2.subscriber_id FROM deliveries x JOIN devices d2 ON d2.id = x.device_id "
            "WHERE x.notification_id IN (SELECT id FROM notifications "
            f"WHERE app_id = {app} AND created_ms > {since} AND id < {n}) "
            "AND x.status IN ('queued', 'sent', 'delivered', 'opened') "
            "GROUP BY d2.subscriber_id "
            f"HAVING count(DISTINCT x.notification_id) >= {limit})) "
            "RETURNING device_id",
            (
                notification_id,
                app_id,
                since_ms,
                cap,
                f"capped: at most {cap} notifications per subscriber per day",
                now,
                *span,
            ),
        )
        return {int(row[0]) for row in result}

    async def device_languages(
        self, conn: AsyncConnection, device_ids: Sequence[int]
    ) -> dict[int, str | None]:
        """Each device's language (else its subscriber's), for choosing translations."""
        found: dict[int, str | None] = {}
        for start in range(0, len(device_ids), 500):
            chunk = device_ids[start : start + 500]
            rows: list[Any] = await driver_rows(
                conn,
                "SELECT d.id, coalesce(d.language, s.language) FROM devices d "
                "JOIN subscribers s ON s.id = d.subscriber_id "
                f"WHERE d.id IN ({self._list(1, len(chunk))})",
                tuple(chunk),
            )
            found.update({int(device_id): language for device_id, language in rows})
        return found

    def _status_statement(
        self, rows: Sequence[StatusRow], status: str, stamp: str
    ) -> list[Statement]:
        if not rows:
            return []
        allowed = "('queued', 'sent')" if status == "sent" else "('queued', 'sent', 'expired')"
        # A delivery acknowledged in the same flush as its send was sent then too.
        also = "" if status == "sent" else "sent_ms = coalesce(deliveries.sent_ms, v.column2), "
        chunks = _values_chunks(rows, _STATUS_CASTS, self._postgres, _NO_STATUS)
        return [
            Statement(
                f"UPDATE deliveries SET status = '{status}', attempts = attempts + v.column1, "
                f"{stamp} = v.column2, {also}updated_ms = v.column2 FROM {values} "
                "WHERE deliveries.device_id = v.column3 "
                "AND deliveries.notification_id = v.column4 "
                f"AND deliveries.status IN {allowed}",
                params,
            )
            for values, params in chunks
        ]

    def status_statements(
        self,
        sent: Sequence[StatusRow],
        delivered: Sequence[StatusRow],
        seen: Sequence[tuple[int, int]],
    ) -> list[Statement]:
        """The statements that record status changes reported by device connections: "sent"
        and "delivered" deliveries, and when each device was last seen (at, device_id)."""
        statements = self._status_statement(sent, "sent", "sent_ms")
        statements += self._status_statement(delivered, "delivered", "delivered_ms")
        statements += [
            Statement(
                "UPDATE devices SET last_seen_ms = v.column1 FROM "
                f"{values} WHERE devices.id = v.column2",
                params,
            )
            for values, params in _values_chunks(seen, _SEEN_CASTS, self._postgres, _NOT_SEEN)
        ]
        return statements

    def expire_statement(self, now: int, after: int) -> Statement:
        """Expire the deliveries still open whose notification's TTL ran out in
        ``(after, now]``."""
        at, upto, since = self._marks(3)
        return Statement(
            f"UPDATE deliveries SET status = 'expired', updated_ms = {at} "
            "WHERE status IN ('queued', 'sent') AND notification_id IN "
            f"(SELECT id FROM notifications WHERE expires_ms <= {upto} AND expires_ms > {since})",
            (now, now, after),
        )

    def mark_statement(self, name: str, value_ms: int) -> Statement:
        """Keep ``value_ms`` as the maintenance mark ``name``, unless a later one is kept
        (another process's)."""
        key, value = self._marks(2)
        return Statement(
            f"INSERT INTO maintenance_marks (name, value_ms) VALUES ({key}, {value}) "
            "ON CONFLICT (name) DO UPDATE SET value_ms = CASE WHEN excluded.value_ms > "
            "maintenance_marks.value_ms THEN excluded.value_ms ELSE maintenance_marks.value_ms "
            "END",
            (name, value_ms),
        )

    def _list(self, start: int, count: int) -> str:
        return ", ".join(markers(self._postgres, count, start))

    async def notifications_by_id(self, conn: AsyncConnection, ids: Sequence[int]) -> list[Any]:
        """(id, account_id, app_key, event, title, message, data, created_ms, expires_ms,
        options, app_id, audience, translations, frequency_cap of the app, due_ms) of these
        notifications, in id order."""
        if not ids:
            return []
        return await driver_rows(
            conn,
            "SELECT n.id, n.account_id, apps.app_key, n.event, n.title, n.message, n.data, "
            "n.created_ms, n.expires_ms, n.options, n.app_id, n.audience, n.translations, "
            "apps.frequency_cap, n.due_ms FROM notifications n "
            f"LEFT JOIN apps ON apps.id = n.app_id WHERE n.id IN ({self._list(1, len(ids))}) "
            "ORDER BY n.id",
            tuple(ids),
        )

    async def device_addresses(self, conn: AsyncConnection, ids: Sequence[int]) -> list[Any]:
        """(id, account_id, platform, push_token_enc, language, timezone, enabled) of these
        devices, the language and time zone falling back to their subscriber's."""
        if not ids:
            return []
        return await driver_rows(
            conn,
            "SELECT d.id, d.account_id, d.platform, d.push_token_enc, "
            "coalesce(d.language, s.language), coalesce(d.timezone, s.timezone), d.enabled "
            "FROM devices d JOIN subscribers s ON s.id = d.subscriber_id "
            f"WHERE d.id IN ({self._list(1, len(ids))})",
            tuple(ids),
        )

    async def start_attempts(
        self,
        conn: AsyncConnection,
        notification_id: int,
        device_ids: Sequence[int],
        attempts: int,
        stale_before: int,
        now: int,
    ) -> dict[int, int]:
        """Count a new attempt on the deliveries still ``queued`` at ``attempts`` attempts (or
        whose last attempt started before ``stale_before``); device id -> attempts now."""
        n, made, stale, at = self._marks(4)
        rows: list[Any] = await driver_rows(
            conn,
            f"UPDATE deliveries SET attempts = attempts + 1, updated_ms = {at} "
            f"WHERE notification_id = {n} AND device_id IN ({self._list(5, len(device_ids))}) "
            f"AND status = 'queued' AND (attempts = {made} OR updated_ms < {stale}) "
            "RETURNING device_id, attempts",
            (notification_id, attempts, stale_before, now, *device_ids),
        )
        return {int(device_id): int(count) for device_id, count in rows}

    async def set_status(
        self,
        conn: AsyncConnection,
        notification_id: int,
        device_ids: Sequence[int],
        *,
        status: str,
        reason: str | None,
        sent_ms: int | None,
        at: int,
    ) -> None:
        """Record an outcome on these deliveries, on those still ``queued`` only (as a push
        job claims them): one reported delivered or opened, or swept to expired, while its
        send was on its way keeps that status."""
        if not device_ids:
            return
        status_, reason_, sent, updated, n = self._marks(5)
        sent_cast = f"{sent}::bigint" if self._postgres else sent
        await driver_rows(
            conn,
            f"UPDATE deliveries SET status = {status_}, reason = {reason_}, "
            f"sent_ms = coalesce({sent_cast}, sent_ms), updated_ms = {updated} "
            f"WHERE notification_id = {n} AND device_id IN ({self._list(6, len(device_ids))}) "
            "AND status = 'queued'",
            (status, reason, sent_ms, at, notification_id, *device_ids),
        )
