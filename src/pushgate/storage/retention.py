"""The statements of the retention sweep (``services/retention.py``), as plain SQL that runs
unchanged on SQLite and PostgreSQL except for parameter markers.

What is old: a notification whose TTL ran out before the cut-off (``expires_ms < cutoff``; its
creation, its scheduled fan-out and every attempt to deliver it lie before that too). Of an
old notification, the deliveries in a final status go (``FINAL_STATUSES``); a delivery still
``queued`` or ``sent`` never does. The notification itself goes once it has no delivery left,
except the newest notification of all: on SQLite a notification's id is the largest id plus
one (``DeliveryWrites.insert_notifications``; an ``INTEGER PRIMARY KEY`` without
AUTOINCREMENT), so deleting the newest row would let its id be given again. Idempotency keys
go by their own age.

Every statement is bounded: notifications are walked in ``(expires_ms, id)`` order on their
``expires_ms`` index, and deliveries in primary-key order between two keys found beforehand,
so a delete touches at most the rows it was sized for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.storage.params import markers

# Statuses a delivery never leaves by itself: it may be deleted once its notification is old.
FINAL_STATUSES = ("delivered", "opened", "failed", "expired", "capped")
_FINAL = "(" + ", ".join(f"'{status}'" for status in FINAL_STATUSES) + ")"

# (expires_ms, id): where the walk over old notifications stands.
NotificationKey = tuple[int, int]
# (notification_id, device_id): a delivery's primary key.
DeliveryKey = tuple[int, int]

START: NotificationKey = (-(2**62), 0)


class RetentionQueries:
    """Builds and runs the retention statements for one database dialect."""

    def __init__(self, dialect_name: str) -> None:
        self._postgres = dialect_name == "postgresql"

    def _marks(self, count: int, start: int = 1) -> list[str]:
        return markers(self._postgres, count, start)

    def _list(self, start: int, count: int) -> str:
        return ", ".join(self._marks(count, start))

    async def old_notifications(
        self, conn: AsyncConnection, cutoff: int, after: NotificationKey, limit: int
    ) -> list[NotificationKey]:
        """Up to ``limit`` old notifications after ``after``, in ``(expires_ms, id)`` order."""
        upto, low, e, i, count = self._marks(5)
        rows: list[Any] = list(
            await conn.exec_driver_sql(
                f"SELECT expires_ms, id FROM notifications WHERE expires_ms < {upto} "
                f"AND expires_ms >= {low} AND (expires_ms, id) > ({e}, {i}) "
                f"ORDER BY expires_ms, id LIMIT {count}",
                (cutoff, after[0], after[0], after[1], limit),
            )
        )
        return [(int(expires), int(id_)) for expires, id_ in rows]

    async def delivery_boundary(
        self, conn: AsyncConnection, ids: Sequence[int], after: DeliveryKey, count: int
    ) -> DeliveryKey | None:
        """The key of the ``count``-th delivery of ``ids`` (ascending) after ``after``, in
        primary-key order and whatever its status; None when fewer are left."""
        size = len(ids)
        a_n, a_d, offset = self._marks(3, size + 1)
        row: Any = (
            await conn.exec_driver_sql(
                "SELECT notification_id, device_id FROM deliveries "
                f"WHERE notification_id IN ({self._list(1, size)}) "
                f"AND (notification_id, device_id) > ({a_n}, {a_d}) "
                f"ORDER BY notification_id, device_id LIMIT 1 OFFSET {offset}",
                (*ids, *after, count - 1),
            )
        ).first()
        return None if row is None else (int(row[0]), int(row[1]))

    async def delete_deliveries(
        self,
        conn: AsyncConnection,
        ids: Sequence[int],
        after: DeliveryKey,
        upto: DeliveryKey | None,
    ) -> int:
        """Delete the deliveries in a final status of ``ids`` (ascending) in ``(after,
        upto]``; how many. Up to three statements, each an index range of the primary key:
        the rest of ``after``'s notification, the notifications wholly inside, and the start
        of ``upto``'s (one statement, when both are the same notification)."""
        first, from_device = after
        last = None if upto is None else upto[0]
        inside = [i for i in ids if i > first and (last is None or i < last)]
        parts: list[tuple[str, tuple[int, ...]]] = []
        n, d, e = self._marks(3)
        if upto is not None and first == last:
            where = f"notification_id = {n} AND device_id > {d} AND device_id <= {e}"
            parts.append((where, (first, from_device, upto[1])))
        else:
            if first in ids:
                parts.append((f"notification_id = {n} AND device_id > {d}", after))
            if inside:
                parts.append((f"notification_id IN ({self._list(1, len(inside))})", tuple(inside)))
            if upto is not None:
                parts.append((f"notification_id = {n} AND device_id <= {d}", upto))
        deleted = 0
        for where, params in parts:
            result = await conn.exec_driver_sql(
                f"DELETE FROM deliveries WHERE {where} AND status IN {_FINAL}", params
            )
            deleted += int(result.rowcount or 0)
        return deleted

    async def delete_notifications(
        self, conn: AsyncConnection, ids: Sequence[int], cutoff: int
    ) -> int:
        """Delete those of ``ids`` that are old and have no delivery left, never the newest
        notification (its id would be given again on SQLite); how many."""
        if not ids:
            return 0
        (upto,) = self._marks(1, len(ids) + 1)
        result = await conn.exec_driver_sql(
            f"DELETE FROM notifications WHERE id IN ({self._list(1, len(ids))}) "
            f"AND expires_ms < {upto} AND id < (SELECT max(id) FROM notifications) "
            "AND NOT EXISTS (SELECT 1 FROM deliveries WHERE notification_id = notifications.id)",
            (*ids, cutoff),
        )
        return int(result.rowcount or 0)

    async def delete_idempotency_keys(self, conn: AsyncConnection, cutoff: int, limit: int) -> int:
        """Delete up to ``limit`` idempotency keys made before ``cutoff``; how many."""
        upto, count = self._marks(2)
        result = await conn.exec_driver_sql(
            "DELETE FROM idempotency_keys WHERE (account_id, key) IN (SELECT account_id, key "
            f"FROM idempotency_keys WHERE created_ms < {upto} ORDER BY created_ms "
            f"LIMIT {count})",
            (cutoff, limit),
        )
        return int(result.rowcount or 0)

    async def count_old_deliveries(self, conn: AsyncConnection, cutoff: int) -> int:
        """How many deliveries a sweep with this cut-off would delete (for a progress bar)."""
        (upto,) = self._marks(1)
        result = await conn.exec_driver_sql(
            "SELECT count(*) FROM deliveries WHERE notification_id IN (SELECT id FROM "
            f"notifications WHERE expires_ms < {upto}) AND status IN {_FINAL}",
            (cutoff,),
        )
        return int(result.scalar_one())
