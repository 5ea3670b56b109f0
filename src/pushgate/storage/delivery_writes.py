"""The write statements on the delivery hot path, as plain SQL executed with tuples.

Going through the driver directly (no per-row SQLAlchemy parameter processing) and creating
delivery rows with ``INSERT ... SELECT`` (one parameter set per notification instead of one per
device) is what lets one writer keep up with thousands of posts a second. The statements are
the same on SQLite and PostgreSQL except for parameter markers and casts; the storage test
suite runs them on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

# (id, account_id, app_id, event, title, message, data, created_ms, expires_ms)
NotificationRow = tuple[int, int, int | None, str | None, str | None, str, str, int, int]
# (notification_id, account_id, created_ms)
AudienceRow = tuple[int, int, int]
# (sends, at, device_id, notification_id)
SentRow = tuple[int, int, int, int]
# (sends, at, device_id, notification_id)
DeliveredRow = tuple[int, int, int, int]

_NOTIFICATION_COLUMNS = (
    "id, account_id, app_id, event, title, message, data, created_ms, expires_ms"
)


class DeliveryWrites:
    """Dialect-specific SQL text, built once per database."""

    def __init__(self, dialect_name: str) -> None:
        self._postgres = dialect_name == "postgresql"

        def marks(count: int, casts: Sequence[str] = ()) -> list[str]:
            # Numbered markers, so one tuple order serves both (SQLite: ?1, PostgreSQL: $1).
            if not self._postgres:
                return [f"?{i + 1}" for i in range(count)]
            return [f"${i + 1}" + (casts[i] if i < len(casts) else "") for i in range(count)]

        n = marks(9)
        self.insert_notifications = (
            f"INSERT INTO notifications ({_NOTIFICATION_COLUMNS}) VALUES ({', '.join(n)})"
        )
        a = marks(3, ("::bigint", "::bigint", "::bigint"))
        enabled = "enabled" if self._postgres else "enabled = 1"
        self.insert_deliveries = (
            "INSERT INTO deliveries "
            "(notification_id, device_id, status, attempts, created_ms, updated_ms) "
            f"SELECT {a[0]}, id, 'queued', 0, {a[2]}, {a[2]} FROM devices "
            f"WHERE account_id = {a[1]} AND {enabled}"
        )
        s = marks(4)
        self.mark_sent = (
            f"UPDATE deliveries SET status = 'sent', attempts = attempts + {s[0]}, "
            f"sent_ms = {s[1]}, updated_ms = {s[1]} "
            f"WHERE device_id = {s[2]} AND notification_id = {s[3]} "
            "AND status IN ('queued', 'sent')"
        )
        self.mark_delivered = (
            f"UPDATE deliveries SET status = 'delivered', attempts = attempts + {s[0]}, "
            f"delivered_ms = {s[1]}, updated_ms = {s[1]} "
            f"WHERE device_id = {s[2]} AND notification_id = {s[3]} "
            "AND status IN ('queued', 'sent', 'expired')"
        )
        m = marks(2)
        self.mark_seen = f"UPDATE devices SET last_seen_ms = {m[0]} WHERE id = {m[1]}"
        e = marks(3)
        self.expire_sql = (
            f"UPDATE deliveries SET status = 'expired', updated_ms = {e[0]} "
            "WHERE status IN ('queued', 'sent') AND notification_id IN "
            f"(SELECT id FROM notifications WHERE expires_ms <= {e[1]} AND expires_ms > {e[2]})"
        )

    async def reserve_notification_ids(self, conn: AsyncConnection, count: int) -> list[int]:
        """Ids for ``count`` new notifications, in order.

        PostgreSQL draws them from the table's sequence. On SQLite the write transaction
        (``BEGIN IMMEDIATE``) holds the database's only write lock, so the next ids after the
        largest one are ours alone until it commits.
        """
        if count == 0:
            return []
        if self._postgres:
            result = await conn.exec_driver_sql(
                "SELECT nextval(pg_get_serial_sequence('notifications', 'id')) "
                "FROM generate_series(1, $1::int)",
                (count,),
            )
            return sorted(int(row[0]) for row in result)
        result = await conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM notifications")
        start = int(result.scalar_one()) + 1
        return list(range(start, start + count))

    @staticmethod
    async def _many(conn: AsyncConnection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            await conn.exec_driver_sql(sql, list(rows))

    async def store_notifications(
        self,
        conn: AsyncConnection,
        rows: Sequence[NotificationRow],
        audiences: Sequence[AudienceRow],
    ) -> None:
        """Insert notifications and one queued delivery per enabled device of each one's
        account."""
        await self._many(conn, self.insert_notifications, rows)
        await self._many(conn, self.insert_deliveries, audiences)

    async def store_statuses(
        self,
        conn: AsyncConnection,
        sent: Sequence[SentRow],
        delivered: Sequence[DeliveredRow],
        seen: Sequence[tuple[int, int]],
    ) -> None:
        await self._many(conn, self.mark_sent, sent)
        await self._many(conn, self.mark_delivered, delivered)
        await self._many(conn, self.mark_seen, seen)

    async def expire(self, conn: AsyncConnection, now: int, after: int) -> None:
        """Deliveries still open whose notification's TTL ran out in ``(after, now]``."""
        await conn.exec_driver_sql(self.expire_sql, (now, now, after))
