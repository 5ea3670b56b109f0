"""Bulk import of an app's subscribers with their devices (``pushgate subscribers import``).

``SubscriberImport.run`` reads entries (``domain/import_entries.py``: the body of an upsert
with the devices the subscriber owns, checked by the API's rules), rejects each that breaks a
rule with its line and the reason, and goes on. The others are written ``batch_size`` at a
time, a batch in one write transaction (``services/import_batch.py``: one query per kind of
look-up, one statement per kind of change); running the import again changes nothing.

Before a batch's transaction, the Web Push endpoints of its entries pass the egress policy,
as on registration (checked once per host). On PostgreSQL a batch first takes the advisory
locks that upserts and registrations take; a batch whose entries need more than
``MAX_LOCKS`` of them is written in several transactions. A batch that cannot be written
raises: the batches before it are kept.

The report counts the distinct subscribers and devices the accepted entries named (new,
updated, unchanged) and lists the rejected entries by line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import select, text

from pushgate.crypto import SecretBox
from pushgate.domain import addresses
from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.domain.import_entries import Entry, SourceRow, parse_entry
from pushgate.egress import EgressPolicy, EgressRefused
from pushgate.services.devices import DEFAULT_MAX_PER_SUBSCRIBER
from pushgate.services.import_batch import ImportBatch, Written
from pushgate.services.subscribers import Scope
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import apps

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 5000
# Advisory locks one PostgreSQL transaction takes at most (a batch is split to stay below).
MAX_LOCKS = 2000


# -- the outcome ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Counts:
    """Distinct subscribers (or devices) the accepted entries named: made by this import,
    changed by it, or left as they were."""

    new: int
    updated: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class ImportReport:
    rows: int
    subscribers: Counts
    devices: Counts
    rejected: tuple[Rejection, ...]


@dataclass
class _Tally:
    rows: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    subscribers_seen: set[int] = field(default_factory=set)
    subscribers_new: set[int] = field(default_factory=set)
    subscribers_changed: set[int] = field(default_factory=set)
    devices_seen: set[int] = field(default_factory=set)
    devices_new: set[int] = field(default_factory=set)
    devices_changed: set[int] = field(default_factory=set)

    def add(self, subscribers: Written, devices: Written) -> None:
        """Count what a written batch named, made and changed."""
        self.subscribers_seen |= subscribers.named
        self.subscribers_new |= subscribers.new
        self.subscribers_changed |= subscribers.changed
        self.devices_seen |= devices.named
        self.devices_new |= devices.new
        self.devices_changed |= devices.changed

    def report(self) -> ImportReport:
        def counts(seen: set[int], new: set[int], changed: set[int]) -> Counts:
            updated = changed - new
            return Counts(len(new), len(updated), len(seen - new - updated))

        return ImportReport(
            rows=self.rows,
            subscribers=counts(
                self.subscribers_seen, self.subscribers_new, self.subscribers_changed
            ),
            devices=counts(self.devices_seen, self.devices_new, self.devices_changed),
            rejected=tuple(sorted(self.rejected, key=lambda item: item.line)),
        )


# -- the service ---------------------------------------------------------------------------

Progress = Callable[[int, int], None]


class SubscriberImport:
    """Imports entries into an app: ``run`` reads them, rejects the ones that break a rule,
    and writes the others a batch at a time."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        egress: EgressPolicy | None = None,
        max_devices_per_subscriber: int = DEFAULT_MAX_PER_SUBSCRIBER,
    ) -> None:
        """``egress``: the policy a Web Push endpoint must pass, as on registration."""
        self._db = db
        self._box = box
        self._egress = egress
        self._max_devices = max_devices_per_subscriber
        self._refused_hosts: dict[str, str | None] = {}

    async def scope(self, app_key: str) -> Scope:
        """The app's scope; ``NotFound`` when there is no such app."""
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(apps.c.id, apps.c.account_id).where(apps.c.app_key == app_key)
                )
            ).first()
        if row is None:
            raise NotFound(f"No app {app_key} (see `pushgate app list`)")
        return Scope(int(row.account_id), int(row.id))

    async def run(
        self,
        app_key: str,
        rows: Iterable[SourceRow],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_progress: Progress | None = None,
    ) -> ImportReport:
        """Import ``rows`` into the app; ``on_progress(rows read, last line)`` after every
        batch. A batch that cannot be written (the database failing) raises: the batches
        before it are kept, and running the import again completes it."""
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise InvalidInput(f"the batch size is 1 to {MAX_BATCH_SIZE} entries")
        scope = await self.scope(app_key)
        tally = _Tally()
        pending: list[Entry] = []
        last_line = 0
        for row in rows:
            tally.rows += 1
            last_line = row.line
            try:
                if row.error is not None:
                    raise InvalidInput(row.error)
                pending.append(parse_entry(row.line, row.body, app_key))
            except InvalidInput as exc:
                tally.rejected.append(Rejection(row.line, exc.message))
            if tally.rows % batch_size == 0:
                await self._write(scope, pending, tally)
                pending = []
                if on_progress is not None:
                    on_progress(tally.rows, last_line)
        await self._write(scope, pending, tally)
        if on_progress is not None:
            on_progress(tally.rows, last_line)
        return tally.report()

    async def _write(self, scope: Scope, entries: list[Entry], tally: _Tally) -> None:
        entries = await self._allowed(entries, tally)
        if self._db.is_sqlite:
            if entries:
                await self._transaction(scope, entries, tally)
            return
        # PostgreSQL's lock table is shared by all sessions (64 locks per connection by
        # default): a transaction takes at most MAX_LOCKS advisory locks.
        group: list[Entry] = []
        keys = 0
        for entry in entries:
            needed = len(entry.named) + len(entry.devices)
            if group and keys + needed > MAX_LOCKS:
                await self._transaction(scope, group, tally)
                group, keys = [], 0
            group.append(entry)
            keys += needed
        if group:
            await self._transaction(scope, group, tally)

    async def _transaction(self, scope: Scope, entries: list[Entry], tally: _Tally) -> None:
        batch = ImportBatch(scope, self._box, self._max_devices, self._db.is_sqlite)
        now = now_ms()
        async with self._db.writing() as conn:
            if not self._db.is_sqlite:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) k"),
                    {"keys": batch.lock_keys(entries)},
                )
            await batch.load(conn, entries)
            for entry in entries:
                reason = batch.apply(entry)
                if reason is not None:
                    tally.rejected.append(Rejection(entry.line, reason))
            await batch.write(conn, now)
        tally.add(*batch.written())

    async def _allowed(self, entries: list[Entry], tally: _Tally) -> list[Entry]:
        """The entries whose Web Push endpoints the egress policy allows (checked once per
        host, before the write transaction: resolving a name can take a while)."""
        if self._egress is None:
            return entries
        kept: list[Entry] = []
        for entry in entries:
            reason = None
            for number, device in enumerate(entry.devices):
                if device.platform != "web":
                    continue
                endpoint = addresses.address_key("web", device.address)
                refused = await self._refusal(endpoint)
                if refused is not None:
                    reason = f"devices[{number}].subscription.endpoint is refused: {refused}"
                    break
            if reason is None:
                kept.append(entry)
            else:
                tally.rejected.append(Rejection(entry.line, reason))
        return kept

    async def _refusal(self, endpoint: str) -> str | None:
        assert self._egress is not None
        parts = urlsplit(endpoint)
        origin = f"{parts.hostname}:{parts.port}"
        if origin not in self._refused_hosts:
            try:
                await self._egress.check_url(endpoint)
                self._refused_hosts[origin] = None
            except EgressRefused as exc:
                self._refused_hosts[origin] = str(exc)
        return self._refused_hosts[origin]
