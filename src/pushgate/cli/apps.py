"""``pushgate app``: an account's apps, straight in the database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from pushgate.cli.database import with_database
from pushgate.config import load_settings
from pushgate.domain.errors import NotFound, PushgateError
from pushgate.services.apps import AppService
from pushgate.services.credentials import CredentialService

app_app = typer.Typer(
    help="An account's apps (Instapush's apps: appID and appSecret), read and written in the "
    "database of the data directory: no server needed.",
    no_args_is_help=True,
)
T = TypeVar("T")
ACCOUNT_HELP = "The account's id (see `pushgate account list`)."


def _run(work: Callable[[AppService, CredentialService], Awaitable[T]]) -> T:
    settings = load_settings()

    async def run(db: Any, box: Any) -> T:
        credentials = CredentialService(db, box, settings.vapid_subject)
        return await work(AppService(db, box, on_created=credentials.add_initial), credentials)

    try:
        return with_database(run)
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc


@app_app.command("create")
def create(
    title: Annotated[str, typer.Argument(help="The app's name.", metavar="TITLE")],
    account_id: Annotated[int, typer.Option("--account", metavar="ID", help=ACCOUNT_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create an app and print its id and secret."""

    async def work(apps: AppService, credentials: CredentialService) -> Any:
        return await apps.create(account_id, title)

    created = _run(work)
    record = {"id": created.app.app_key, "title": created.app.title, "secret": created.secret}
    if as_json:
        typer.echo(orjson.dumps(record).decode())
    else:
        typer.echo(f"App {record['id']} ({record['title']}) created; secret: {record['secret']}")


@app_app.command("list")
def list_apps(
    account_id: Annotated[int, typer.Option("--account", metavar="ID", help=ACCOUNT_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List an account's apps (without their secrets)."""

    async def work(apps: AppService, credentials: CredentialService) -> Any:
        return await apps.list(account_id)

    listed = _run(work)
    if as_json:
        for item in listed:
            typer.echo(orjson.dumps({"id": item.app.app_key, "title": item.app.title}).decode())
        return
    table = Table("id", "title")
    for item in listed:
        table.add_row(item.app.app_key, item.app.title)
    Console().print(table)


@app_app.command("show")
def show(
    app_key: Annotated[str, typer.Argument(help="The app's id.", metavar="APP_ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show an app with its secret."""

    async def work(apps: AppService, credentials: CredentialService) -> Any:
        return await apps.get(await credentials.owner(app_key), app_key)

    found = _run(work)
    record = {
        "id": found.app.app_key,
        "title": found.app.title,
        "account_id": found.app.account_id,
        "secret": found.secret,
    }
    if as_json:
        typer.echo(orjson.dumps(record).decode())
    else:
        for name, value in record.items():
            typer.echo(f"{name}: {value}")


@app_app.command("delete")
def delete(
    app_key: Annotated[str, typer.Argument(help="The app's id.", metavar="APP_ID")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an app with its devices, subscribers, notifications and their deliveries,
    events, campaigns, credentials and API keys. This cannot be undone."""
    if not yes:
        typer.confirm(f"Delete app {app_key} and everything of it?", abort=True)

    async def work(apps: AppService, credentials: CredentialService) -> None:
        await apps.delete(await credentials.owner(app_key), app_key)

    _run(work)
    typer.echo(f"App {app_key} deleted.")
