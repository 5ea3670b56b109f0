"""The CLI's way into storage: commands that read or write the database directly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pushgate.config import load_settings
from pushgate.crypto import SecretBox
from pushgate.storage.database import Database, open_database
from pushgate.storage.migrate import migrate

T = TypeVar("T")


def with_database(work: Callable[[Database, SecretBox], Awaitable[T]]) -> T:
    """Open the configured database (migrated to the newest schema), run ``work`` with it and
    the server secret's box, and close it again."""
    settings = load_settings()
    settings.ensure_data_dir()

    async def run() -> T:
        db = open_database(settings.resolved_database_url)
        try:
            await migrate(db)
            return await work(db, SecretBox(settings.resolved_secret_key()))
        finally:
            await db.dispose()

    return asyncio.run(run())
