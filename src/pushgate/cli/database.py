"""The CLI's way into storage: commands that read or write the database directly."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from pushgate.config import Settings, load_settings
from pushgate.crypto import SecretBox
from pushgate.data_identity import data_location
from pushgate.domain.errors import InvalidInput, NotFound
from pushgate.services.accounts import Account
from pushgate.storage.database import Database, open_database
from pushgate.storage.migrate import migrate

T = TypeVar("T")


@functools.cache
def _say_data_location(location: str) -> None:
    typer.echo(f"Data directory: {location}", err=True)


def report_data_dir(settings: Settings) -> None:
    """Say on stderr which data directory (and database) the command uses: once a process."""
    _say_data_location(data_location(settings))


def with_database(work: Callable[[Database, SecretBox], Awaitable[T]], *, quiet: bool = False) -> T:
    """Open the configured database (migrated to the newest schema), run ``work`` with it and
    the server secret's box, and close it again. Says which data directory it is on stderr,
    unless ``quiet``."""
    settings = load_settings()
    settings.ensure_data_dir()
    if not quiet:
        report_data_dir(settings)

    async def run() -> T:
        db = open_database(settings.resolved_database_url)
        try:
            await migrate(db)
            return await work(db, SecretBox(settings.resolved_secret_key()))
        finally:
            await db.dispose()

    return asyncio.run(run())


ACCOUNT_HELP = (
    "The account, by id or name (see `pushgate account list`). May be left out when the "
    "data directory holds only one account."
)


def select_account(rows: list[Account], wanted: str | None) -> Account:
    """The account a command acts for: by id or name, or the only one there is."""
    if not rows:
        raise NotFound("No accounts yet: create one with `pushgate account create NAME`")
    if wanted is None:
        if len(rows) == 1:
            return rows[0]
        raise InvalidInput(
            f"There are {len(rows)} accounts: choose one with --account ID or NAME "
            "(see `pushgate account list`)"
        )
    if wanted.isdigit():
        by_id = [account for account in rows if account.id == int(wanted)]
        if by_id:
            return by_id[0]
    by_name = [account for account in rows if account.name == wanted]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        ids = ", ".join(str(account.id) for account in by_name)
        raise InvalidInput(f"Several accounts are named {wanted!r} (ids {ids}): use --account ID")
    raise NotFound(f"No account {wanted!r} (see `pushgate account list`)")
