"""Writing import entries a batch at a time: the entries of one write transaction are read,
applied and written together (``ImportBatch``).

Running an import again changes nothing:

- identifiers find the subscriber as an upsert does (every one given must name the same
  subscriber; it gets the ones it lacks), and its profile is written only where it differs
  (``updated_ms`` moves only then);
- a device is found by its provider address within the app, as a registration does. It keeps
  its device token, its enabled state and its activity times (an import is no sign of life of
  a device); a new one is enabled, with a device token that nobody is shown.

A batch's identifiers and addresses are looked up with one query per kind (``load``), its
entries are applied in order to what was read, so that entries of one subscriber merge
(``apply``), and what changed is written with one statement per kind of change (``write``).
``apply`` rejects, with the reason, an entry whose identifiers name different subscribers or
that would give a subscriber more enabled devices than allowed; nothing of it is applied.
On PostgreSQL the transaction first takes, in one order, the advisory locks that upserts and
registrations take (``lock_keys``; ``services.subscribers.lock``).

The entries are ``domain/import_entries.py``'s, already checked; the transactions and the
report are ``services/subscriber_import.py``'s.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.crypto import SecretBox, new_token
from pushgate.domain import addresses
from pushgate.domain.import_entries import DEVICE_PROFILE, DeviceEntry, Entry
from pushgate.domain.subscribers import OPTINS, STANDARD, AttributeRow, Profile
from pushgate.services.devices import DEVICE_TOKEN_PREFIX
from pushgate.services.subscribers import Scope, lock_key
from pushgate.storage.models import (
    devices,
    subscriber_attributes,
    subscriber_identifiers,
    subscriber_tags,
    subscribers,
)

T = TypeVar("T")

# Values in one ``IN (...)`` list: well within SQLite's and asyncpg's parameter limits.
IN_CHUNK = 1000
_PROFILE_COLUMNS = ("language", "country", "timezone", *(f"optin_{name}" for name in OPTINS))
_STANDARD_END = 1 + len(STANDARD)  # where the profile columns start in a subscriber's row


@dataclass(frozen=True, slots=True)
class Written:
    """The ids of one kind of row (subscribers or devices) that a written batch's entries
    named: all of them, those the batch made, and those it changed of the others."""

    named: frozenset[int]
    new: frozenset[int]
    changed: frozenset[int]


@dataclass(eq=False, slots=True)
class _Subscriber:
    """A subscriber as a batch sees it: what was read, with the batch's entries applied."""

    id: int | None  # None: new, inserted when the batch is written
    line: int  # the entry that made it (new ones), for messages
    standard: dict[str, str | None]
    columns: dict[str, Any]
    custom: set[tuple[str, str]] = field(default_factory=set)
    attributes: dict[str, tuple[AttributeRow, ...]] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    stored_tags: frozenset[str] = frozenset()
    enabled_devices: int = 0
    new_custom: list[tuple[str, str]] = field(default_factory=list)
    changed_attributes: set[str] = field(default_factory=set)
    changed: bool = False

    def anonymous(self) -> bool:
        return not self.custom and all(value is None for value in self.standard.values())

    def named(self) -> str:
        return (
            f"subscriber {self.id}"
            if self.id is not None
            else f"the subscriber of line {self.line}"
        )


@dataclass(eq=False, slots=True)
class _Device:
    id: int | None  # None: new
    owner: _Subscriber
    platform: str
    address_hash: str
    address: str
    enabled: bool
    profile: dict[str, str | None]
    changed: bool = False


def _new_subscriber(line: int) -> _Subscriber:
    columns: dict[str, Any] = dict.fromkeys(_PROFILE_COLUMNS)
    columns["optin_push"] = True
    return _Subscriber(None, line, dict.fromkeys(STANDARD), columns)


def _chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ImportBatch:
    """The entries of one transaction: read what they name, apply them in order, write what
    changed."""

    def __init__(self, scope: Scope, box: SecretBox, max_devices: int, sqlite: bool) -> None:
        self._scope = scope
        self._sqlite = sqlite
        self._box = box
        self._max_devices = max_devices
        self._by_identifier: dict[tuple[str, str], _Subscriber] = {}
        self._by_address: dict[tuple[str, str], _Device] = {}
        self._stored: dict[int, _Subscriber] = {}
        self._new: list[_Subscriber] = []
        self._new_devices: list[_Device] = []
        self._hashes: dict[tuple[str, str], str] = {}
        self.subscribers: set[_Subscriber] = set()
        self.devices: set[_Device] = set()

    def address_hash(self, device: DeviceEntry) -> str:
        key = (device.platform, device.address)
        found = self._hashes.get(key)
        if found is None:
            found = self._box.digest(addresses.address_key(device.platform, device.address))
            self._hashes[key] = found
        return found

    def lock_keys(self, entries: Iterable[Entry]) -> list[int]:
        """The advisory lock keys an upsert or registration of these entries would take."""
        scope = self._scope
        keys: set[int] = set()
        for entry in entries:
            keys |= {
                lock_key(scope, n if n in STANDARD else f"custom:{n}", v) for n, v in entry.named
            }
            keys |= {
                lock_key(scope, "extra", f"{device.platform}:{self.address_hash(device)}")
                for device in entry.devices
            }
        return sorted(keys)

    # -- reading ---------------------------------------------------------------------------

    async def load(self, conn: AsyncConnection, entries: Sequence[Entry]) -> None:
        """Read the subscribers and devices that the entries name."""
        scope = self._scope
        standard: dict[str, set[str]] = {name: set() for name in STANDARD}
        custom: dict[str, set[str]] = {}
        hashes: dict[str, set[str]] = {}
        for entry in entries:
            for name, value in entry.named:
                (standard[name] if name in standard else custom.setdefault(name, set())).add(value)
            for device in entry.devices:
                hashes.setdefault(device.platform, set()).add(self.address_hash(device))
        ids: set[int] = set()
        for name, values in standard.items():
            column = subscribers.c[name]
            for chunk in _chunks(sorted(values)):
                # By the app alone (its subscribers are its account's): with the account too,
                # SQLite searches the account's index and reads every subscriber of it.
                query = select(subscribers.c.id).where(
                    subscribers.c.app_id == scope.app_id, column.in_(chunk)
                )
                ids |= set((await conn.execute(query)).scalars())
        table = subscriber_identifiers.c
        for name, values in custom.items():
            for chunk in _chunks(sorted(values)):
                query = select(table.subscriber_id).where(
                    table.app_id == scope.app_id, table.name == name, table.value.in_(chunk)
                )
                ids |= set((await conn.execute(query)).scalars())
        device_rows: list[Any] = []
        for platform, chunk in (
            (platform, chunk)
            for platform, found in hashes.items()
            for chunk in _chunks(sorted(found))
        ):
            query = select(
                devices.c.id,
                devices.c.subscriber_id,
                devices.c.platform,
                devices.c.push_token_hash,
                devices.c.push_token_enc,
                devices.c.enabled,
                *(devices.c[name] for name in DEVICE_PROFILE),
            ).where(
                devices.c.app_id == scope.app_id,
                devices.c.platform == platform,
                devices.c.push_token_hash.in_(chunk),
            )
            device_rows.extend((await conn.execute(query)).all())
        ids |= {int(row.subscriber_id) for row in device_rows}
        touched = {name for entry in entries for name in entry.profile.attributes}
        await self._load_subscribers(conn, sorted(ids), touched)
        for row in device_rows:
            self._by_address[(row.platform, row.push_token_hash)] = _Device(
                id=int(row.id),
                owner=self._stored[int(row.subscriber_id)],
                platform=row.platform,
                address_hash=row.push_token_hash,
                address=self._box.decrypt(row.push_token_enc),
                enabled=bool(row.enabled),
                profile=dict(zip(DEVICE_PROFILE, row[6:], strict=True)),
            )

    async def _load_subscribers(
        self, conn: AsyncConnection, ids: Sequence[int], attribute_names: set[str]
    ) -> None:
        for chunk in _chunks(ids):
            rows = await conn.execute(
                select(
                    subscribers.c.id,
                    *(subscribers.c[name] for name in (*STANDARD, *_PROFILE_COLUMNS)),
                ).where(subscribers.c.id.in_(chunk))
            )
            for row in rows:
                subscriber_id = int(row[0])
                found = _Subscriber(
                    id=subscriber_id,
                    line=0,
                    standard=dict(zip(STANDARD, row[1:_STANDARD_END], strict=True)),
                    columns=dict(zip(_PROFILE_COLUMNS, row[_STANDARD_END:], strict=True)),
                )
                self._stored[subscriber_id] = found
                for name, value in found.standard.items():
                    if value is not None:
                        self._by_identifier[(name, value)] = found
            custom = await conn.execute(
                select(
                    subscriber_identifiers.c.subscriber_id,
                    subscriber_identifiers.c.name,
                    subscriber_identifiers.c.value,
                ).where(subscriber_identifiers.c.subscriber_id.in_(chunk))
            )
            for subscriber_id, name, value in custom:
                owner = self._stored[int(subscriber_id)]
                owner.custom.add((name, value))
                self._by_identifier[(name, value)] = owner
            if attribute_names:
                table = subscriber_attributes.c
                values_by: dict[tuple[int, str], list[AttributeRow]] = {}
                attribute_rows = await conn.execute(
                    select(
                        table.subscriber_id,
                        table.name,
                        table.position,
                        table.kind,
                        table.text_value,
                        table.num_value,
                    ).where(table.subscriber_id.in_(chunk), table.name.in_(sorted(attribute_names)))
                )
                for subscriber_id, name, position, kind, text_value, num_value in attribute_rows:
                    values_by.setdefault((int(subscriber_id), name), []).append(
                        AttributeRow(position, kind, text_value, num_value)
                    )
                for (subscriber_id, name), stored in values_by.items():
                    self._stored[subscriber_id].attributes[name] = tuple(
                        sorted(stored, key=lambda item: item.position)
                    )
            tags = await conn.execute(
                select(subscriber_tags.c.subscriber_id, subscriber_tags.c.tag).where(
                    subscriber_tags.c.subscriber_id.in_(chunk)
                )
            )
            for subscriber_id, tag in tags:
                self._stored[int(subscriber_id)].tags.add(tag)
            counts = await conn.execute(
                select(devices.c.subscriber_id, func.count())
                .where(devices.c.subscriber_id.in_(chunk), devices.c.enabled.is_(True))
                .group_by(devices.c.subscriber_id)
            )
            for subscriber_id, count in counts:
                self._stored[int(subscriber_id)].enabled_devices = int(count)
        for found in self._stored.values():
            found.stored_tags = frozenset(found.tags)

    # -- applying --------------------------------------------------------------------------

    def apply(self, entry: Entry) -> str | None:
        """Apply one entry; the reason when it is rejected (then nothing of it is applied)."""
        named: dict[_Subscriber, list[str]] = {}
        for name, value in entry.named:
            owner = self._by_identifier.get((name, value))
            if owner is not None:
                named.setdefault(owner, []).append(name)
        if len(named) > 1:
            which = "; ".join(f"{', '.join(names)} name {s.named()}" for s, names in named.items())
            return f"The identifiers name different subscribers ({which})"
        target = next(iter(named), None)
        found: dict[tuple[str, str], tuple[DeviceEntry, _Device | None]] = {}
        for device in entry.devices:
            key = (device.platform, self.address_hash(device))
            found[key] = (device, self._by_address.get(key))
        if target is None:
            # A device registered without identifiers: its owner gets them, as on registration.
            target = next(
                (
                    existing.owner
                    for _, existing in found.values()
                    if existing is not None and existing.owner.anonymous()
                ),
                None,
            )
        adding = sum(
            1
            for _, existing in found.values()
            if existing is None or (existing.enabled and existing.owner is not target)
        )
        having = 0 if target is None else target.enabled_devices
        if adding and having + adding > self._max_devices:
            return (
                f"This subscriber would have {having + adding} enabled devices, more than "
                f"allowed (setting max_devices_per_subscriber is {self._max_devices})"
            )
        if target is None:
            target = _new_subscriber(entry.line)
            self._new.append(target)
        self._identify(target, entry)
        self._set_profile(target, entry.profile)
        for key, (device, existing) in found.items():
            self._set_device(target, key, device, existing)
        self.subscribers.add(target)
        return None

    def _identify(self, target: _Subscriber, entry: Entry) -> None:
        """Give the subscriber the identifiers it lacks (as ``subscribers.resolve`` does)."""
        for name, value in entry.named:
            if name not in STANDARD:
                continue
            if target.standard[name] is None:
                target.standard[name] = value
                target.changed = True
                self._by_identifier[(name, value)] = target
        for item in entry.identifiers.custom:
            if item not in target.custom:
                target.custom.add(item)
                target.new_custom.append(item)
                target.changed = True
                self._by_identifier[item] = target

    @staticmethod
    def _set_profile(target: _Subscriber, profile: Profile) -> None:
        """What ``subscribers.apply_profile`` writes, where it differs from what is stored."""
        given: dict[str, Any] = {
            name: getattr(profile, name)
            for name in ("language", "country", "timezone")
            if getattr(profile, name) is not None
        }
        given.update({f"optin_{name}": value for name, value in profile.optins.items()})
        for name, value in given.items():
            if target.columns[name] != value:
                target.columns[name] = value
                target.changed = True
        for name, rows in profile.attributes.items():
            wanted = tuple(rows)
            if target.attributes.get(name, ()) != wanted:
                target.attributes[name] = wanted
                target.changed_attributes.add(name)
                target.changed = True
        if profile.tags is not None or profile.add_tags:
            tags = set(target.tags) if profile.tags is None else set(profile.tags)
            tags |= set(profile.add_tags)
            if tags != target.tags:
                target.tags = tags
                target.changed = True

    def _set_device(
        self,
        target: _Subscriber,
        key: tuple[str, str],
        entry: DeviceEntry,
        existing: _Device | None,
    ) -> None:
        if existing is None:
            device = _Device(
                id=None,
                owner=target,
                platform=entry.platform,
                address_hash=key[1],
                address=entry.address,
                enabled=True,
                profile={name: entry.profile.get(name) for name in DEVICE_PROFILE},
            )
            target.enabled_devices += 1
            self._new_devices.append(device)
            self._by_address[key] = device
            self.devices.add(device)
            return
        if existing.owner is not target:
            if existing.enabled:
                existing.owner.enabled_devices -= 1
                target.enabled_devices += 1
            existing.owner = target
            existing.changed = True
        if existing.address != entry.address:  # a browser's renewed keys, same endpoint
            existing.address = entry.address
            existing.changed = True
        for name, value in entry.profile.items():
            if existing.profile[name] != value:
                existing.profile[name] = value
                existing.changed = True
        self.devices.add(existing)

    # -- writing ---------------------------------------------------------------------------

    async def write(self, conn: AsyncConnection, now: int) -> None:
        scope = self._scope
        if self._new:
            made = await self._insert_numbered(
                conn,
                subscribers,
                [
                    {
                        "account_id": scope.account_id,
                        "app_id": scope.app_id,
                        **s.standard,
                        **s.columns,
                        "created_ms": now,
                        "updated_ms": now,
                    }
                    for s in self._new
                ],
            )
            for created, subscriber_id in zip(self._new, made, strict=True):
                created.id = subscriber_id
        changed = [s for s in self._stored.values() if s.changed]
        if changed:
            await conn.execute(
                update(subscribers).where(subscribers.c.id == bindparam("_id")),
                [{"_id": s.id, **s.standard, **s.columns, "updated_ms": now} for s in changed],
            )
        everyone = [*self._new, *changed]
        await _insert(
            conn,
            subscriber_identifiers,
            [
                {"app_id": scope.app_id, "name": name, "value": value, "subscriber_id": s.id}
                for s in everyone
                for name, value in s.new_custom
            ],
        )
        await self._write_attributes(conn, changed, everyone)
        await self._write_tags(conn, everyone)
        await self._write_devices(conn, now)

    async def _insert_numbered(
        self, conn: AsyncConnection, table: Any, rows: list[dict[str, Any]]
    ) -> list[int]:
        """Insert rows and return their ids, in order.

        On SQLite the batch's transaction holds the one write lock, so the ids after the
        largest one are the batch's, as SQLite would choose them (SQLAlchemy's ordered
        ``RETURNING`` inserts there one row at a time, 8 times slower). PostgreSQL numbers the
        rows of one multi-row insert in order."""
        if not self._sqlite:
            result = await conn.execute(
                insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
            )
            return [int(value) for value in result.scalars()]
        largest = (await conn.execute(select(func.max(table.c.id)))).scalar()
        first = int(largest or 0) + 1
        ids = list(range(first, first + len(rows)))
        await conn.execute(
            insert(table), [{**row, "id": n} for row, n in zip(rows, ids, strict=True)]
        )
        return ids

    async def _write_attributes(
        self, conn: AsyncConnection, changed: list[_Subscriber], everyone: list[_Subscriber]
    ) -> None:
        table = subscriber_attributes.c
        gone = [
            {"_subscriber_id": s.id, "_name": name}
            for s in changed
            for name in s.changed_attributes
        ]
        if gone:
            await conn.execute(
                delete(subscriber_attributes).where(
                    table.subscriber_id == bindparam("_subscriber_id"),
                    table.name == bindparam("_name"),
                ),
                gone,
            )
        await _insert(
            conn,
            subscriber_attributes,
            [
                {
                    "subscriber_id": s.id,
                    "name": name,
                    "position": row.position,
                    "kind": row.kind,
                    "text_value": row.text_value,
                    "num_value": row.num_value,
                }
                for s in everyone
                for name in sorted(s.changed_attributes)
                for row in s.attributes[name]
            ],
        )

    @staticmethod
    async def _write_tags(conn: AsyncConnection, everyone: list[_Subscriber]) -> None:
        gone = [
            {"_subscriber_id": s.id, "_tag": tag}
            for s in everyone
            for tag in sorted(s.stored_tags - s.tags)
        ]
        if gone:
            await conn.execute(
                delete(subscriber_tags).where(
                    subscriber_tags.c.subscriber_id == bindparam("_subscriber_id"),
                    subscriber_tags.c.tag == bindparam("_tag"),
                ),
                gone,
            )
        await _insert(
            conn,
            subscriber_tags,
            [
                {"subscriber_id": s.id, "tag": tag}
                for s in everyone
                for tag in sorted(s.tags - s.stored_tags)
            ],
        )

    async def _write_devices(self, conn: AsyncConnection, now: int) -> None:
        scope = self._scope
        box = self._box
        changed = [d for d in self._by_address.values() if d.id is not None and d.changed]
        if self._new_devices:
            made = await self._insert_numbered(
                conn,
                devices,
                [
                    {
                        "account_id": scope.account_id,
                        "app_id": scope.app_id,
                        "subscriber_id": d.owner.id,
                        "platform": d.platform,
                        **d.profile,
                        # Registrations answer the device token; nobody is shown this one.
                        "token_hash": box.digest(new_token(24, DEVICE_TOKEN_PREFIX)),
                        "push_token_enc": box.encrypt(d.address),
                        "push_token_hash": d.address_hash,
                        "enabled": True,
                        "disabled_reason": None,
                        "created_ms": now,
                        "last_seen_ms": None,
                        "last_active_ms": None,
                    }
                    for d in self._new_devices
                ],
            )
            for created, device_id in zip(self._new_devices, made, strict=True):
                created.id = device_id
        if changed:
            await conn.execute(
                update(devices).where(devices.c.id == bindparam("_id")),
                [
                    {
                        "_id": d.id,
                        "subscriber_id": d.owner.id,
                        **d.profile,
                        "push_token_enc": box.encrypt(d.address),
                    }
                    for d in changed
                ],
            )

    def written(self) -> tuple[Written, Written]:
        """What the written batch named, made and changed: its subscribers, its devices."""
        return (
            _written(self.subscribers, set(self._new)),
            _written(self.devices, set(self._new_devices)),
        )


async def _insert(conn: AsyncConnection, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(table), rows)


def _written(rows: Iterable[_Subscriber | _Device], made: Container[object]) -> Written:
    named: set[int] = set()
    new: set[int] = set()
    changed: set[int] = set()
    for row in rows:
        assert row.id is not None
        named.add(row.id)
        if row in made:
            new.add(row.id)
        elif row.changed:
            changed.add(row.id)
    return Written(frozenset(named), frozenset(new), frozenset(changed))
