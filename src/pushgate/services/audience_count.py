"""How many devices an ``Audience`` selects now: the fan-out's own selection
(``storage/audience_sql.select_devices``) counted in one ``SELECT count(*)``, never device by
device in Python. The dashboard shows it while an audience is composed."""

from __future__ import annotations

from pushgate.domain.audience import Audience
from pushgate.storage.audience_sql import Params, count_devices
from pushgate.storage.database import Database, now_ms

DAY_MS = 86_400_000


class AudienceCount:
    def __init__(self, db: Database, unengaged_after_days: float = 30.0) -> None:
        self._db = db
        self._unengaged_ms = int(unengaged_after_days * DAY_MS)
        self._postgres = db.read.dialect.name == "postgresql"

    async def devices(self, account_id: int, app_id: int, audience: Audience) -> int:
        """The enabled devices of the account's app (and, with ``personal``, the account's
        personal channel devices) that the audience selects, as the fan-out would now."""
        p = Params(self._postgres)
        sql = count_devices(
            p,
            audience,
            app_id=app_id,
            account_id=account_id,
            engaged_since_ms=now_ms() - self._unengaged_ms,
        )
        async with self._db.read.connect() as conn:
            return int((await conn.exec_driver_sql(sql, tuple(p.values))).scalar_one())
