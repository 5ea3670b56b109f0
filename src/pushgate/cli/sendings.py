"""``pushgate sending`` and ``pushgate group``: sendings due later (list, show, cancel) and
the app and audience groups their filters name, straight in the database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from pushgate.cli.database import ACCOUNT_HELP, select_account, with_database
from pushgate.domain.errors import NotFound, PushgateError
from pushgate.domain.schedules import format_offset, wall_of
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.accounts import AccountService
from pushgate.services.groups import KINDS, Group, GroupService
from pushgate.services.sendings import SendingService, SendingView
from pushgate.services.stats import StatsService

sending_app = typer.Typer(
    help="Sendings due later (Push.express one-time sendings, native sends at a local time): "
    "list them, show one with its statistics, cancel one that has not started. Read and "
    "written in the database of the data directory: no server needed.",
    no_args_is_help=True,
)
group_app = typer.Typer(
    help="App groups (sets of app numbers) and audience groups (sets of subscriber tags) "
    "that Push.express filters name: app_groups_include, audience_groups_include...",
    no_args_is_help=True,
)
T = TypeVar("T")
Account = Annotated[str | None, typer.Option("--account", metavar="ID|NAME", help=ACCOUNT_HELP)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SendingId = Annotated[int, typer.Argument(help="The sending's id (see `pushgate sending list`).")]
GroupId = Annotated[int, typer.Argument(help="The group's id (see `pushgate group list`).")]


def _run(wanted: str | None, work: Callable[[Any, int], Awaitable[T]]) -> T:
    """``work(db, account_id)`` for the account the command names (or the only one)."""

    async def run(db: Any, box: Any) -> T:
        accounts = [account for account, _token in await AccountService(db, box).list()]
        return await work(db, select_account(accounts, wanted).id)

    try:
        return with_database(run)
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc


def _sendings(db: Any) -> SendingService:
    return SendingService(db, EmbeddedQueue(db), StatsService(db), 86_400)


def sending_record(view: SendingView) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": view.id,
        "name": view.name,
        "source": view.source,
        "wall_time": wall_of(view.wall_ms).strftime("%Y-%m-%dT%H:%M"),
        "offset": format_offset(view.offset_minutes),
        "local_time": view.local_time,
        "state": view.state,
        "pushes": list(view.push_ids),
    }
    if view.counts is not None:
        record["counts"] = {"targeted": view.counts.targeted, **view.counts.statuses}
    return record


@sending_app.command("list")
def list_sendings(
    account: Account = None,
    state: Annotated[
        str | None,
        typer.Option(help="Only sendings in this state: waiting, running, done, cancelled."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """The account's sendings, newest first."""
    views = _run(account, lambda db, account_id: _sendings(db).list(account_id, state=state))
    if as_json:
        typer.echo(orjson.dumps([sending_record(v) for v in views]).decode())
        return
    table = Table("id", "name", "due (wall time)", "offset", "local time", "state", "pushes")
    for v in views:
        r = sending_record(v)
        table.add_row(
            str(r["id"]), r["name"], r["wall_time"], r["offset"], "yes" if v.local_time else "no",
            r["state"], ", ".join(map(str, r["pushes"])),
        )  # fmt: skip
    Console().print(table)


@sending_app.command("show")
def show_sending(sending_id: SendingId, account: Account = None, as_json: AsJson = False) -> None:
    """One sending with its statistics, counted from its deliveries."""
    view = _run(
        account, lambda db, account_id: _sendings(db).get(account_id, sending_id, counts=True)
    )
    typer.echo(orjson.dumps(sending_record(view), option=orjson.OPT_INDENT_2).decode())


@sending_app.command("cancel")
def cancel_sending(sending_id: SendingId, account: Account = None, as_json: AsJson = False) -> None:
    """Cancel a sending that has not started: it sends nothing."""
    view = _run(account, lambda db, account_id: _sendings(db).cancel(account_id, sending_id))
    if as_json:
        typer.echo(orjson.dumps(sending_record(view)).decode())
        return
    typer.echo(f"Sending {view.id} ({view.name}) cancelled.")


Kind = Annotated[str, typer.Option(help=f"One of: {', '.join(KINDS)}.")]


def _members(kind: str, members: list[str]) -> list[object]:
    if kind != "apps":
        return list(members)
    try:
        return [int(m) for m in members]
    except ValueError:
        typer.secho(
            "app group members are app numbers (see `pushgate app list`)", fg="red", err=True
        )
        raise typer.Exit(2) from None


def _group_record(group: Group) -> dict[str, Any]:
    members = list(group.app_ids()) if group.kind == "apps" else list(group.members)
    return {"id": group.id, "kind": group.kind, "name": group.name, "members": members}


@group_app.command("create")
def create_group(
    name: Annotated[str, typer.Argument(help="The group's name, unique per account and kind.")],
    members: Annotated[list[str], typer.Argument(help="App numbers, or tags.")],
    account: Account = None,
    kind: Kind = "apps",
    as_json: AsJson = False,
) -> None:
    """Create a group: `pushgate group create europe 3 4 --account 1`."""
    given = _members(kind, members)
    group = _run(
        account, lambda db, account_id: GroupService(db).create(account_id, kind, name, given)
    )
    if as_json:
        typer.echo(orjson.dumps(_group_record(group)).decode())
        return
    typer.echo(f"{kind.rstrip('s').capitalize()} group {group.id} ({group.name}) created.")


@group_app.command("list")
def list_groups(account: Account = None, kind: Kind = "apps", as_json: AsJson = False) -> None:
    """The account's groups of a kind."""
    groups = _run(account, lambda db, account_id: GroupService(db).list(account_id, kind))
    if as_json:
        typer.echo(orjson.dumps([_group_record(g) for g in groups]).decode())
        return
    table = Table("id", "name", "members")
    for g in groups:
        table.add_row(str(g.id), g.name, ", ".join(map(str, _group_record(g)["members"])))
    Console().print(table)


@group_app.command("set")
def set_group(
    group_id: GroupId,
    members: Annotated[list[str], typer.Argument(help="The new members.")],
    account: Account = None,
    kind: Kind = "apps",
    as_json: AsJson = False,
) -> None:
    """Replace a group's members."""
    given = _members(kind, members)
    group = _run(
        account,
        lambda db, account_id: GroupService(db).update(account_id, kind, group_id, members=given),
    )
    typer.echo(orjson.dumps(_group_record(group)).decode())


@group_app.command("delete")
def delete_group(
    group_id: GroupId, account: Account = None, kind: Kind = "apps", as_json: AsJson = False
) -> None:
    """Delete a group."""
    _run(account, lambda db, account_id: GroupService(db).delete(account_id, kind, group_id))
    if as_json:
        typer.echo(orjson.dumps({"id": group_id, "deleted": True}).decode())
        return
    typer.echo(f"Group {group_id} deleted.")
