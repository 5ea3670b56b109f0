"""Accounts (tenants) and their user tokens."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select

from pushgate.cache import TTLCache
from pushgate.crypto import SecretBox, new_token
from pushgate.domain.errors import InvalidInput
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import accounts


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class NewAccount:
    account: Account
    user_token: str


class AccountService:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box
        self._by_token: TTLCache[str, Account] = TTLCache(ttl_seconds=60)

    async def create(self, name: str) -> NewAccount:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidInput("Account name must be 1-200 characters")
        token = new_token(16)
        created = now_ms()
        async with self._db.writing() as conn:
            result = await conn.execute(
                insert(accounts).returning(accounts.c.id),
                {
                    "name": name,
                    "user_token_hash": self._box.digest(token),
                    "user_token_enc": self._box.encrypt(token),
                    "created_ms": created,
                },
            )
            account_id = int(result.scalar_one())
        return NewAccount(Account(account_id, name, created), token)

    async def list(self) -> list[tuple[Account, str]]:
        """Every account with its user token (for the operator's CLI only)."""
        async with self._db.read.connect() as conn:
            rows = (await conn.execute(select(accounts).order_by(accounts.c.id))).all()
        return [
            (Account(row.id, row.name, row.created_ms), self._box.decrypt(row.user_token_enc))
            for row in rows
        ]

    async def get(self, account_id: int) -> Account | None:
        async with self._db.read.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        return None if row is None else Account(row.id, row.name, row.created_ms)

    async def authenticate(self, user_token: str | None) -> Account | None:
        if not user_token:
            return None
        digest = self._box.digest(user_token)
        cached = self._by_token.get(digest)
        if cached is not None:
            return cached
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(select(accounts).where(accounts.c.user_token_hash == digest))
            ).first()
        if row is None or not self._box.matches(user_token, row.user_token_hash):
            return None
        account = Account(row.id, row.name, row.created_ms)
        self._by_token.put(digest, account)
        return account
