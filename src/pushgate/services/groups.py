"""Groups: named sets of an account's apps, or of audiences (subscriber tags), that a
sending's filters name instead of listing every member.

An app group's members are app numbers of the account (``apps.id``); an audience group's are
tags. A sending reads its app groups when it runs, so a group changed meanwhile counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.storage.database import Database, driver_rows, now_ms
from pushgate.storage.models import apps, group_members, groups

GroupKind = Literal["apps", "audiences"]
KINDS: tuple[GroupKind, ...] = ("apps", "audiences")
MAX_MEMBERS = 1000
MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    kind: GroupKind
    name: str
    members: tuple[str, ...]

    def app_ids(self) -> tuple[int, ...]:
        return tuple(int(member) for member in self.members)


def _kind(kind: str) -> GroupKind:
    if kind not in KINDS:
        raise InvalidInput(f"a group's kind is one of {', '.join(KINDS)}")
    return kind


def _name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or "\x00" in name:
        raise InvalidInput(f"a group's name is 1 to {MAX_NAME} characters")
    return name.strip()


class GroupService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _members(
        self, conn: AsyncConnection, account_id: int, kind: GroupKind, members: Iterable[object]
    ) -> list[str]:
        given = list(dict.fromkeys(members))
        if len(given) > MAX_MEMBERS:
            raise InvalidInput(f"a group has at most {MAX_MEMBERS} members")
        if kind == "audiences":
            for tag in given:
                if not isinstance(tag, str) or not 0 < len(tag) <= 200 or "\x00" in tag:
                    raise InvalidInput(
                        "an audience group's members are tags of 1 to 200 characters"
                    )
            return [str(tag) for tag in given]
        numbers: list[int] = []
        for member in given:
            if isinstance(member, bool) or not isinstance(member, int):
                raise InvalidInput("an app group's members are app numbers")
            numbers.append(member)
        owned = await owned_apps(conn, account_id, numbers)
        missing = sorted(set(numbers) - owned)
        if missing:
            raise NotFound(f"No app {', '.join(map(str, missing))} in this account")
        return [str(number) for number in numbers]

    async def create(
        self, account_id: int, kind: str, name: object, members: Sequence[object]
    ) -> Group:
        checked_kind, checked_name = _kind(kind), _name(name)
        try:
            async with self._db.writing() as conn:
                stored = await self._members(conn, account_id, checked_kind, members)
                group_id = (
                    await conn.execute(
                        insert(groups).returning(groups.c.id),
                        {
                            "account_id": account_id,
                            "kind": checked_kind,
                            "name": checked_name,
                            "created_ms": now_ms(),
                        },
                    )
                ).scalar_one()
                await _add_members(conn, int(group_id), stored)
        except IntegrityError:
            raise Conflict(f"This account already has a {kind} group named {name!r}") from None
        return Group(int(group_id), checked_kind, checked_name, tuple(stored))

    async def list(self, account_id: int, kind: str) -> list[Group]:
        checked = _kind(kind)
        async with self._db.read.connect() as conn:
            rows = (
                await conn.execute(
                    select(groups.c.id, groups.c.name)
                    .where(groups.c.account_id == account_id, groups.c.kind == checked)
                    .order_by(groups.c.id)
                )
            ).all()
            found = await _members_of(conn, [int(row.id) for row in rows])
        return [Group(int(r.id), checked, r.name, found.get(int(r.id), ())) for r in rows]

    async def get(self, account_id: int, kind: str, group_id: int) -> Group:
        checked = _kind(kind)
        async with self._db.read.connect() as conn:
            name = await _owned(conn, account_id, checked, group_id)
            found = await _members_of(conn, [group_id])
        return Group(group_id, checked, name, found.get(group_id, ()))

    async def update(
        self,
        account_id: int,
        kind: str,
        group_id: int,
        *,
        name: object = None,
        members: Sequence[object] | None = None,
    ) -> Group:
        """Rename the group and/or replace its members."""
        checked = _kind(kind)
        try:
            async with self._db.writing() as conn:
                await _owned(conn, account_id, checked, group_id)
                if name is not None:
                    await conn.execute(
                        update(groups).where(groups.c.id == group_id).values(name=_name(name))
                    )
                if members is not None:
                    stored = await self._members(conn, account_id, checked, members)
                    await conn.execute(
                        delete(group_members).where(group_members.c.group_id == group_id)
                    )
                    await _add_members(conn, group_id, stored)
        except IntegrityError:
            raise Conflict(f"This account already has a {kind} group named {name!r}") from None
        return await self.get(account_id, kind, group_id)

    async def delete(self, account_id: int, kind: str, group_id: int) -> None:
        checked = _kind(kind)
        async with self._db.writing() as conn:
            await _owned(conn, account_id, checked, group_id)
            await conn.execute(delete(group_members).where(group_members.c.group_id == group_id))
            await conn.execute(delete(groups).where(groups.c.id == group_id))


async def _add_members(conn: AsyncConnection, group_id: int, members: list[str]) -> None:
    if members:
        await conn.execute(
            insert(group_members), [{"group_id": group_id, "member": m} for m in members]
        )


async def _owned(conn: AsyncConnection, account_id: int, kind: GroupKind, group_id: int) -> str:
    """The name of the account's group of this kind; ``NotFound`` for any other group."""
    name = (
        await conn.execute(
            select(groups.c.name).where(
                groups.c.id == group_id, groups.c.account_id == account_id, groups.c.kind == kind
            )
        )
    ).scalar()
    if name is None:
        raise NotFound(f"No {kind} group {group_id} in this account")
    return str(name)


async def owned_apps(conn: AsyncConnection, account_id: int, numbers: Iterable[int]) -> set[int]:
    """Which of these app numbers are apps of the account."""
    wanted = list(set(numbers))
    if not wanted:
        return set()
    rows = await conn.execute(
        select(apps.c.id).where(apps.c.account_id == account_id, apps.c.id.in_(wanted))
    )
    return {int(row[0]) for row in rows}


_ACCOUNT_APPS_POSTGRES = "SELECT id FROM apps WHERE account_id = $1"
_ACCOUNT_APPS_SQLITE = "SELECT id FROM apps WHERE account_id = ?1"


async def account_apps(conn: AsyncConnection, account_id: int) -> list[int]:
    """The account's app ids (one trip to the driver)."""
    postgres = conn.dialect.name == "postgresql"
    sql = _ACCOUNT_APPS_POSTGRES if postgres else _ACCOUNT_APPS_SQLITE
    rows = await driver_rows(conn, sql, (account_id,))
    return [int(row[0]) for row in rows]


async def _members_of(
    conn: AsyncConnection, group_ids: Sequence[int]
) -> dict[int, tuple[str, ...]]:
    if not group_ids:
        return {}
    rows = await conn.execute(
        select(group_members.c.group_id, group_members.c.member)
        .where(group_members.c.group_id.in_(list(group_ids)))
        .order_by(group_members.c.group_id, group_members.c.member)
    )
    found: dict[int, list[str]] = {}
    for group_id, member in rows:
        found.setdefault(int(group_id), []).append(member)
    return {key: tuple(value) for key, value in found.items()}


async def groups_of_account(
    conn: AsyncConnection, account_id: int, kind: GroupKind, group_ids: Iterable[int]
) -> dict[int, tuple[str, ...]]:
    """The members of those of these groups that are the account's, by group id."""
    wanted = list(set(group_ids))
    if not wanted:
        return {}
    rows = await conn.execute(
        select(groups.c.id).where(
            groups.c.account_id == account_id, groups.c.kind == kind, groups.c.id.in_(wanted)
        )
    )
    owned = [int(row[0]) for row in rows]
    members = await _members_of(conn, owned)
    return {group_id: members.get(group_id, ()) for group_id in owned}
