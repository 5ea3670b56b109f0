"""Dashboard sign-in: by an account's user token, or by the e-mail and password an operator
sets with ``pushgate account set-password``; server-side sessions with an expiry.

A session is a random token in an HttpOnly cookie; the database keeps only its keyed hash.
Its CSRF token is derived from the session token (a keyed hash with another purpose), so
it needs no storage and changes with every session. Passwords are hashed with scrypt
(stdlib ``hashlib``), a fresh salt each, compared in constant time; an unknown e-mail costs
the same hashing work as a wrong password.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pushgate.crypto import SecretBox, new_token
from pushgate.domain.errors import Conflict, InvalidInput, NotFound
from pushgate.services.accounts import Account
from pushgate.storage.database import Database, now_ms
from pushgate.storage.models import accounts, dashboard_logins, dashboard_sessions

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
MAX_EMAIL_CHARS = 320
# scrypt: n=2**15, r=8, p=1 (32 MiB, ~50-100 ms here): OWASP's minimum is n=2**17 with
# r=8 at p=1 for 128 MiB; this keeps a sign-in affordable on a 2-core box while costly to
# guess offline.
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024
_DUMMY_SALT = b"\x00" * 16


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _N, _R, _P)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, stored: str | None) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` value; with None, the
    same work is done and False returned."""
    if stored is None:
        _scrypt(password, _DUMMY_SALT, _N, _R, _P)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(password, base64.urlsafe_b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, base64.urlsafe_b64decode(digest))


def _normal_email(email: str) -> str:
    email = email.strip().lower()
    if not email or len(email) > MAX_EMAIL_CHARS or "@" not in email:
        raise InvalidInput("e-mail must be an address like ann@example.com")
    return email


@dataclass(frozen=True, slots=True)
class Session:
    account: Account
    # The session's CSRF token: every form of the dashboard carries it.
    csrf_token: str
    expires_ms: int


class DashboardAuth:
    def __init__(self, db: Database, box: SecretBox, session_seconds: int) -> None:
        self._db = db
        self._box = box
        self._session_ms = session_seconds * 1000

    async def set_password(self, account_id: int, email: str, password: str) -> None:
        """Give the account a dashboard login (replacing its earlier one)."""
        email = _normal_email(email)
        if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
            raise InvalidInput(
                f"the password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
            )
        hashed = await asyncio.to_thread(hash_password, password)
        now = now_ms()
        try:
            async with self._db.writing() as conn:
                exists = (
                    await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
                ).scalar()
                if exists is None:
                    raise NotFound(f"No account {account_id}")
                changed = await conn.execute(
                    update(dashboard_logins)
                    .where(dashboard_logins.c.account_id == account_id)
                    .values(email=email, password_hash=hashed, updated_ms=now)
                )
                if not changed.rowcount:
                    await conn.execute(
                        insert(dashboard_logins),
                        {
                            "account_id": account_id,
                            "email": email,
                            "password_hash": hashed,
                            "created_ms": now,
                            "updated_ms": now,
                        },
                    )
                # A new password ends the account's sessions.
                await conn.execute(
                    delete(dashboard_sessions).where(dashboard_sessions.c.account_id == account_id)
                )
        except IntegrityError as exc:
            raise Conflict(f"{email} already signs in to another account") from exc

    async def check_password(self, email: str, password: str) -> int | None:
        """The account id whose login this is, or None."""
        if len(password) > MAX_PASSWORD_CHARS or len(email) > MAX_EMAIL_CHARS:
            return None
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(dashboard_logins.c.account_id, dashboard_logins.c.password_hash).where(
                        dashboard_logins.c.email == email.strip().lower()
                    )
                )
            ).first()
        stored = None if row is None else row.password_hash
        if not await asyncio.to_thread(password_matches, password, stored):
            return None
        return None if row is None else int(row.account_id)

    async def start(self, account_id: int) -> str:
        """A new session of the account; returns its token (for the cookie)."""
        token = new_token(32)
        now = now_ms()
        async with self._db.writing() as conn:
            # Expired sessions are removed as new ones begin.
            await conn.execute(
                delete(dashboard_sessions).where(dashboard_sessions.c.expires_ms <= now)
            )
            await conn.execute(
                insert(dashboard_sessions),
                {
                    "token_hash": self._box.digest(token),
                    "account_id": account_id,
                    "created_ms": now,
                    "expires_ms": now + self._session_ms,
                },
            )
        return token

    async def session(self, token: str | None) -> Session | None:
        """The live session of this cookie token, or None."""
        if not token or len(token) > 128:
            return None
        digest = self._box.digest(token)
        async with self._db.read.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        dashboard_sessions.c.token_hash,
                        dashboard_sessions.c.expires_ms,
                        accounts.c.id,
                        accounts.c.name,
                        accounts.c.created_ms,
                    )
                    .select_from(
                        dashboard_sessions.join(
                            accounts, accounts.c.id == dashboard_sessions.c.account_id
                        )
                    )
                    .where(dashboard_sessions.c.token_hash == digest)
                )
            ).first()
        if row is None or row.expires_ms <= now_ms():
            return None
        if not self._box.matches(token, row.token_hash):
            return None
        return Session(
            Account(row.id, row.name, row.created_ms), self.csrf_token(token), row.expires_ms
        )

    def csrf_token(self, session_token: str) -> str:
        return self._box.digest("dashboard-csrf:" + session_token)

    def csrf_matches(self, session_token: str, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(
            self.csrf_token(session_token).encode(), given.encode()
        )

    async def end(self, token: str | None) -> None:
        """Sign out: the session stops working at once."""
        if not token or len(token) > 128:
            return
        async with self._db.writing() as conn:
            await conn.execute(
                delete(dashboard_sessions).where(
                    dashboard_sessions.c.token_hash == self._box.digest(token)
                )
            )
