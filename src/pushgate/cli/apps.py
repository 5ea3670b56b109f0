"""``pushgate app``: an account's apps, straight in the database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pushgate.cli.database import ACCOUNT_HELP, select_account, with_database
from pushgate.config import load_settings
from pushgate.crypto import SecretBox
from pushgate.domain.errors import NotFound, PushgateError
from pushgate.services.accounts import Account, AccountService
from pushgate.services.apps import AppService, AppWithSecret
from pushgate.services.credentials import CredentialService
from pushgate.storage.database import Database

app_app = typer.Typer(
    help="An account's apps (Instapush's apps: appID and appSecret), read and written in the "
    "database of the data directory: no server needed.",
    no_args_is_help=True,
)
T = TypeVar("T")
APP_HELP = "The app's id (appID in Instapush, app_id in the native API)."


@dataclass(frozen=True, slots=True)
class _Context:
    accounts: list[Account]
    apps: AppService
    credentials: CredentialService

    def account(self, wanted: str | None) -> Account:
        return select_account(self.accounts, wanted)

    def account_by_id(self, account_id: int) -> Account:
        return next(account for account in self.accounts if account.id == account_id)


def _run(work: Callable[[_Context], Awaitable[T]]) -> T:
    settings = load_settings()

    async def run(db: Database, box: SecretBox) -> T:
        credentials = CredentialService(db, box, settings.vapid_subject)
        accounts = [row for row, _token in await AccountService(db, box).list()]
        apps = AppService(db, box, on_created=credentials.add_initial)
        return await work(_Context(accounts, apps, credentials))

    try:
        return with_database(run)
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc


def _record(account: Account, item: AppWithSecret, secret: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": item.app.app_key,
        "title": item.app.title,
        "account_id": account.id,
        "account": account.name,
    }
    if secret:
        record["secret"] = item.secret
    return record


def _print_json(record: dict[str, Any]) -> None:
    typer.echo(orjson.dumps(record).decode())


def _print_fields(record: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for name, value in record.items():
        table.add_row(name, escape(str(value)))
    Console().print(table)


@app_app.command("create")
def create(
    title: Annotated[str, typer.Argument(help="The app's name.", metavar="TITLE")],
    account: Annotated[str | None, typer.Option("--account", help=ACCOUNT_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create an app and print its id (appID, app_id) and secret (appSecret)."""

    async def work(context: _Context) -> tuple[Account, AppWithSecret]:
        owner = context.account(account)
        return owner, await context.apps.create(owner.id, title)

    owner, created = _run(work)
    record = _record(owner, created, secret=True)
    if as_json:
        _print_json(record)
    else:
        _print_fields(record)


@app_app.command("list")
def list_apps(
    account: Annotated[
        str | None,
        typer.Option(
            "--account",
            help="Only this account's apps, by id or name (see `pushgate account list`); "
            "default: every account's.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List apps (without their secrets): of one account, or of every account."""

    async def work(context: _Context) -> list[tuple[Account, AppWithSecret]]:
        owners = context.accounts if account is None else [context.account(account)]
        return [(owner, item) for owner in owners for item in await context.apps.list(owner.id)]

    listed = _run(work)
    if as_json:
        for owner, item in listed:
            _print_json(_record(owner, item, secret=False))
        return
    if not listed:
        typer.echo("No apps yet: create one with `pushgate app create TITLE`.")
        return
    table = Table("id", "title", "account")
    for owner, item in listed:
        owner_text = f"{owner.id} ({escape(owner.name)})"
        table.add_row(item.app.app_key, escape(item.app.title), owner_text)
    Console().print(table)


@app_app.command("show")
def show(
    app_id: Annotated[str, typer.Argument(help=APP_HELP, metavar="APP_ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show an app with its secret."""

    async def work(context: _Context) -> tuple[Account, AppWithSecret]:
        owner = context.account_by_id(await context.credentials.owner(app_id))
        return owner, await context.apps.get(owner.id, app_id)

    owner, found = _run(work)
    record = _record(owner, found, secret=True)
    if as_json:
        _print_json(record)
    else:
        _print_fields(record)


@app_app.command("delete")
def delete(
    app_id: Annotated[str, typer.Argument(help=APP_HELP, metavar="APP_ID")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Delete an app with its devices, subscribers, notifications and their deliveries,
    events, campaigns, credentials and API keys. This cannot be undone."""
    if not yes:
        typer.confirm(f"Delete app {app_id} and everything of it?", abort=True)

    async def work(context: _Context) -> None:
        await context.apps.delete(await context.credentials.owner(app_id), app_id)

    _run(work)
    if as_json:
        _print_json({"id": app_id, "deleted": True})
    else:
        typer.echo(f"App {app_id} deleted.")
