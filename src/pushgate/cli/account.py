"""``pushgate account``: create and list accounts (tenants)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pushgate.cli.database import ACCOUNT_HELP, select_account, with_database
from pushgate.cli.server_check import mismatch_note, server_url
from pushgate.config import load_settings
from pushgate.crypto import SecretBox
from pushgate.domain.errors import PushgateError
from pushgate.services.accounts import Account, AccountService
from pushgate.services.dashboard_auth import DashboardAuth
from pushgate.storage.database import Database
from pushgate.web.timestamps import iso_ms

account_app = typer.Typer(help="Create and list accounts.", no_args_is_help=True)
T = TypeVar("T")


def _with_accounts(work: Callable[[AccountService], Awaitable[T]]) -> T:
    return with_database(lambda db, box: work(AccountService(db, box)))


@account_app.command("create")
def create(
    name: Annotated[
        str, typer.Argument(help="A name for the account, e.g. your company.", metavar="NAME")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create an account and print its user token (used by the Instapush apps/* calls and
    the native API)."""
    try:
        created = _with_accounts(lambda accounts: accounts.create(name))
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from exc
    record = {
        "id": created.account.id,
        "name": created.account.name,
        "user_token": created.user_token,
        "created_at": iso_ms(created.account.created_ms),
    }
    settings = load_settings()
    url = server_url(settings)
    if as_json:
        typer.echo(orjson.dumps(record).decode())
    else:
        typer.echo(f"Account {record['id']} ({record['name']}) created.")
        typer.echo(f"User token: {record['user_token']}")
        typer.echo("Use it as the x-instapush-token header, e.g.:")
        typer.echo(
            f'  curl -X POST -H "x-instapush-token: {record["user_token"]}" '
            "-H 'Content-Type: application/json' -d '{\"title\":\"My app\"}' "
            f"{url}/v1/apps/add"
        )
    note = mismatch_note(settings, url)
    if note is not None:
        typer.secho(note, fg="yellow", err=True)


@account_app.command("list")
def list_accounts(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    show_tokens: Annotated[bool, typer.Option(help="Show full user tokens.")] = False,
) -> None:
    """List every account in this data directory."""
    rows = _with_accounts(lambda accounts: accounts.list())

    def token_text(token: str) -> str:
        return token if show_tokens else token[:6] + "…"

    if as_json:
        for account, token in rows:
            record = {
                "id": account.id,
                "name": account.name,
                "created_at": iso_ms(account.created_ms),
                "user_token": token_text(token),
            }
            typer.echo(orjson.dumps(record).decode())
        return
    table = Table("id", "name", "created", "user token")
    for account, token in rows:
        table.add_row(
            str(account.id), escape(account.name), iso_ms(account.created_ms), token_text(token)
        )
    Console().print(table)


@account_app.command("set-password")
def set_password(
    email: Annotated[
        str, typer.Option("--email", help="The e-mail address to sign in to the dashboard with.")
    ],
    account: Annotated[str | None, typer.Option("--account", help=ACCOUNT_HELP)] = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from standard input."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Let the account sign in to the dashboard (/dashboard) with an e-mail and password
    (at least 12 characters; asked for, or read from stdin). Ends its open sessions."""
    password = (
        sys.stdin.readline().rstrip("\n")
        if password_stdin
        else typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    )

    async def work(db: Database, box: SecretBox) -> Account:
        found = select_account(
            [row for row, _token in await AccountService(db, box).list()], account
        )
        await DashboardAuth(db, box, 60).set_password(found.id, email, password)
        return found

    try:
        found = with_database(work)
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(
            orjson.dumps({"account_id": found.id, "name": found.name, "email": email}).decode()
        )
        return
    typer.echo(f"Account {found.id} ({found.name}) signs in to the dashboard as {email}.")
