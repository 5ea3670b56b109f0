"""``pushgate deliveries``: what happened to notifications, read from the database directly."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pushgate.cli.database import ACCOUNT_HELP, select_account, with_database
from pushgate.crypto import SecretBox
from pushgate.domain.errors import NotFound, PushgateError
from pushgate.services.accounts import Account, AccountService
from pushgate.services.notifications import (
    ALL_DELIVERY_STATUSES,
    MAX_DELIVERY_PAGE,
    DeliveryRecord,
    NotificationQueries,
)
from pushgate.services.stats import CampaignView, Counts, StatsService
from pushgate.storage.database import Database
from pushgate.web.timestamps import iso_ms

deliveries_app = typer.Typer(
    help="What happened to each delivery (one notification x one device), read from the "
    "database of the data directory: no server needed.",
    no_args_is_help=True,
)
T = TypeVar("T")
PIPED_WIDTH = 160


@dataclass(frozen=True, slots=True)
class _Context:
    account: Account
    queries: NotificationQueries
    stats: StatsService


def _run(
    account: str | None, work: Callable[[_Context], Awaitable[T]], app: str | None = None
) -> T:
    """Run ``work`` for the selected account; a PushgateError exits with its message
    (code 1 when something is not found, 2 for input to fix). An unknown ``app`` is
    answered with the command that lists apps."""

    async def run(db: Database, box: SecretBox) -> T:
        rows = [row for row, _token in await AccountService(db, box).list()]
        selected = select_account(rows, account)
        return await work(_Context(selected, NotificationQueries(db), StatsService(db)))

    try:
        return with_database(run)
    except PushgateError as exc:
        message = exc.message
        if app is not None and message == f"No app {app} in this account":
            message += " (see `pushgate app list`)"
        typer.secho(message, fg="red", err=True)
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc


def _maybe_iso(ms: int | None) -> str | None:
    return iso_ms(ms) if ms is not None else None


def _record(delivery: DeliveryRecord) -> dict[str, object]:
    return {
        "device_id": delivery.device_id,
        "transport": delivery.transport,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "reason": delivery.reason,
        "created_at": iso_ms(delivery.created_ms),
        "sent_at": _maybe_iso(delivery.sent_ms),
        "delivered_at": _maybe_iso(delivery.delivered_ms),
        "updated_at": iso_ms(delivery.updated_ms),
    }


def _console() -> Console:
    """Rich output fitted to the terminal; wide enough for every column when piped."""
    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


def _day(ms: int) -> str:
    return iso_ms(ms)[:10]


def _when(ms: int | None, day: str) -> str:
    """``HH:MM:SS.mmm`` on ``day``, else ``YYYY-MM-DD HH:MM:SS.mmm``; empty for None."""
    if ms is None:
        return ""
    stamp = iso_ms(ms)
    return stamp[11:23] if stamp[:10] == day else stamp[:10] + " " + stamp[11:23]


def _status_option(status: str | None) -> str | None:
    if status is not None and status not in ALL_DELIVERY_STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(ALL_DELIVERY_STATUSES)}")
    return status


@deliveries_app.command("show")
def show(
    notification_id: Annotated[
        int,
        typer.Argument(
            help="The notification's id (listed by GET /api/v1/notifications).",
            metavar="NOTIFICATION_ID",
            min=1,
        ),
    ],
    account: Annotated[str | None, typer.Option("--account", help=ACCOUNT_HELP)] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help=f"Only deliveries in this status: {', '.join(ALL_DELIVERY_STATUSES)}.",
            callback=_status_option,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(help="Show at most this many deliveries; 0 shows all.", min=0)
    ] = 100,
    after_device_id: Annotated[
        int, typer.Option(help="Start after this device id (to page through).", min=0)
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per delivery, one per line.")
    ] = False,
) -> None:
    """Show one notification's deliveries.

    One row per device, by device id: the transport (the device's platform), the status
    (queued, sent, delivered, opened, failed, expired, capped), the attempts, the last reason a
    provider gave, and when it was sent, delivered and last updated (UTC; --json also has
    when it was created)."""

    async def work(context: _Context) -> list[DeliveryRecord]:
        found: list[DeliveryRecord] = []
        after = after_device_id
        while limit == 0 or len(found) < limit:
            wanted = MAX_DELIVERY_PAGE if limit == 0 else min(MAX_DELIVERY_PAGE, limit - len(found))
            page = await context.queries.deliveries(
                context.account.id,
                notification_id,
                status=status,
                after_device_id=after,
                limit=wanted,
            )
            found.extend(page.deliveries)
            if page.next_after_device_id is None:
                break
            after = page.next_after_device_id
        return found

    rows = _run(account, work)
    if as_json:
        for delivery in rows:
            typer.echo(orjson.dumps(_record(delivery)).decode())
        return
    if not rows:
        typer.echo(
            f"Notification {notification_id} has no deliveries"
            + (f" in status {status}." if status else ".")
        )
        return
    day = _day(rows[0].created_ms)
    table = Table(
        "device",
        "transport",
        "status",
        "tries",
        "sent",
        "delivered",
        "updated",
        "reason",
        title=f"Deliveries of notification {notification_id} (times UTC, on {day} unless dated)",
    )
    for delivery in rows:
        table.add_row(
            str(delivery.device_id),
            Text(delivery.transport),
            Text(delivery.status),
            str(delivery.attempts),
            _when(delivery.sent_ms, day),
            _when(delivery.delivered_ms, day),
            _when(delivery.updated_ms, day),
            Text(delivery.reason or ""),  # provider text: never read as rich markup
        )
    _console().print(table)


@deliveries_app.command("counts")
def counts(
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="Count only this app's notifications, by its appID (the Instapush app id). "
            "Without it: every notification of the account.",
        ),
    ] = None,
    account: Annotated[str | None, typer.Option("--account", help=ACCOUNT_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count deliveries by status.

    Every notification of the account, or of one of its apps (--app), is counted: queued,
    sent, delivered, opened, failed, expired and capped."""

    async def work(context: _Context) -> tuple[Account, dict[str, int]]:
        return context.account, await context.queries.delivery_counts(context.account.id, app)

    selected, by_status = _run(account, work, app)
    total = sum(by_status.values())
    if as_json:
        record = {"account_id": selected.id, "app_id": app, "counts": by_status, "total": total}
        typer.echo(orjson.dumps(record).decode())
        return
    scope = f"app {app}" if app else "all apps"
    console = _console()
    console.print(f"Deliveries of account {selected.id} ({selected.name}), {scope}:", markup=False)
    table = Table("status", "deliveries")
    for name, count in by_status.items():
        table.add_row(Text(name), str(count))
    table.add_row("total", str(total), style="bold")
    console.print(table)


def _stats_record(counts: Counts) -> dict[str, object]:
    return {
        "targeted": counts.targeted,
        **counts.statuses,
        "failed_by_reason": counts.failed_by_reason,
        "no_user": counts.no_user,
        "opted_out": counts.opted_out,
    }


def _print_stats(title: str, counts: Counts) -> None:
    console = _console()
    console.print(title, markup=False)
    table = Table("count", "value")
    for name, value in _stats_record(counts).items():
        if name == "failed_by_reason":
            for reason, count in counts.failed_by_reason.items():
                table.add_row(Text(f"  failed: {reason}"), str(count))
            continue
        table.add_row(Text(name), str(value), style="bold" if name == "targeted" else None)
    console.print(table)


@deliveries_app.command("stats")
def stats(
    notification_id: Annotated[
        int, typer.Argument(help="The notification's id.", metavar="NOTIFICATION_ID", min=1)
    ],
    account: Annotated[str | None, typer.Option("--account", help=ACCOUNT_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """One notification's statistics, counted from its delivery records.

    targeted (deliveries, plus identifiers that named nobody and subscribers who had opted
    out), each delivery status, failed deliveries by reason, no_user and opted_out."""

    async def work(context: _Context) -> Counts:
        return await context.stats.notification(context.account.id, notification_id)

    counts = _run(account, work)
    if as_json:
        record = {"notification_id": notification_id, **_stats_record(counts)}
        typer.echo(orjson.dumps(record).decode())
        return
    _print_stats(f"Notification {notification_id}:", counts)


def _campaign_record(view: CampaignView) -> dict[str, object]:
    return {
        "id": view.external_id,
        "name": view.name,
        "created_at": iso_ms(view.created_ms),
        "notifications": view.counts.notifications,
        "stats": _stats_record(view.counts),
    }


@deliveries_app.command("campaigns")
def campaigns(
    app: Annotated[str, typer.Option("--app", help="The app, by its appID.", metavar="APP_ID")],
    campaign: Annotated[
        str | None,
        typer.Option("--campaign", help="Only this campaign (your id for it).", metavar="ID"),
    ] = None,
    account: Annotated[str | None, typer.Option("--account", help=ACCOUNT_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """An app's campaigns with their statistics: every notification sent with a campaign's
    id counts towards it."""

    async def work(context: _Context) -> list[CampaignView]:
        if campaign is not None:
            return [await context.stats.campaign(context.account.id, app, campaign)]
        return await context.stats.campaigns(context.account.id, app)

    views = _run(account, work, app)
    if as_json:
        for view in views:
            typer.echo(orjson.dumps(_campaign_record(view)).decode())
        return
    if not views:
        typer.echo(f"App {app} has no campaigns yet.")
    for view in views:
        name = f" ({view.name})" if view.name else ""
        _print_stats(
            f"Campaign {view.external_id}{name}, {view.counts.notifications} notifications:",
            view.counts,
        )
