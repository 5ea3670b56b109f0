"""``pushgate database prune``: the retention sweep that servers run in the background
(``services/retention.py``), run once now, with a progress bar."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pushgate.cli.database import with_database
from pushgate.config import load_settings
from pushgate.crypto import SecretBox
from pushgate.services.retention import Report, Retention, cutoff_for
from pushgate.storage.database import Database
from pushgate.web.timestamps import iso_ms

database_app = typer.Typer(
    help="Look after the database of the data directory (no server needed).",
    no_args_is_help=True,
)

PRUNE_HELP = """Delete the history older than DAYS now, as servers and workers do in the
background by retention_days (PUSHGATE_RETENTION_DAYS): the deliveries in a final status (delivered,
opened, failed, expired, capped) of notifications whose TTL ran out more than DAYS days ago,
those notifications once no delivery of theirs is left (the newest notification is always
kept), and idempotency keys older than DAYS. Queued and sent deliveries are never deleted.

It deletes in small batches that each hold the database's write lock for a few milliseconds,
so a running server goes on accepting notifications meanwhile."""


def _progress(shown: bool) -> Progress:
    """The progress bar on stderr (a terminal), or nothing."""
    return Progress(
        TextColumn("pruning"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn(
            "{task.completed:,.0f}/{task.total:,.0f} deliveries, "
            "{task.fields[notifications]:,} notifications, {task.fields[keys]:,} keys"
        ),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not shown,
    )


def _record(report: Report, days: float) -> dict[str, Any]:
    return {
        "older_than_days": days,
        "cutoff": iso_ms(report.cutoff_ms),
        "deliveries": report.deliveries,
        "notifications": report.notifications,
        "idempotency_keys": report.idempotency_keys,
        "batches": report.batches,
        "max_batch_rows": report.max_batch,
        "max_lock_hold_ms": round(report.max_hold_seconds * 1000, 3),
        "seconds": round(report.seconds, 3),
        "skipped": report.skipped,
    }


@database_app.command("prune", help=PRUNE_HELP)
def prune(
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            min=0,
            max=36_500,
            help="Retention age in days (fractions allowed; 0: every notification whose TTL has "
            "run out; default: retention_days).",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    days = load_settings().retention_days if older_than is None else older_than
    if older_than is None and days <= 0:
        typer.secho(
            "Retention is off (retention_days = 0): give the age with --older-than DAYS.",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    cutoff = cutoff_for(days)
    show_progress = not quiet and not as_json and sys.stderr.isatty()

    async def work(db: Database, _box: SecretBox) -> Report:
        retention = Retention(db)
        total = await retention.count(cutoff) if show_progress else 0
        with _progress(show_progress) as progress:
            task = progress.add_task("prune", total=total, notifications=0, keys=0)

            def advance(report: Report) -> None:
                progress.update(
                    task,
                    completed=report.deliveries,
                    notifications=report.notifications,
                    keys=report.idempotency_keys,
                )

            report = await retention.sweep(cutoff, advance)
            progress.update(task, completed=max(total, report.deliveries))
        return report

    report = with_database(work, quiet=quiet or as_json)
    if report.skipped:
        typer.secho(
            "Another process is pruning this database right now: nothing was done; try again "
            "later.",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
    if as_json:
        typer.echo(orjson.dumps(_record(report, days)).decode())
    elif not quiet:
        typer.echo(
            f"Deleted {report.deliveries:,} deliveries, {report.notifications:,} notifications "
            f"and {report.idempotency_keys:,} idempotency keys older than {days:g} days "
            f"(before {iso_ms(report.cutoff_ms)}) in {report.batches:,} batches, "
            f"{report.seconds:.1f} s; the longest held the write lock "
            f"{report.max_hold_seconds * 1000:.1f} ms."
        )
