"""``pushgate send``: send a notification to an app's devices, straight in the database, and
with ``--wait`` follow its deliveries to their final state.

The options are read into the native API's request body (``SendIn``), checked and
translated by the same code as ``POST /api/v1/notifications``; the notification is stored
with its fan-out job like any other, and the running server's workers deliver it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pushgate.api.native.send import SendIn, send_command
from pushgate.cli.database import with_database
from pushgate.cli.server_check import mismatch_note, server_url
from pushgate.config import Settings, load_settings
from pushgate.crypto import SecretBox
from pushgate.domain.errors import NotFound, PushgateError
from pushgate.observability.metrics import Metrics
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.services.apps import AppService
from pushgate.services.credentials import CredentialService
from pushgate.services.events import EventService
from pushgate.services.pipeline import DeliveryPipeline
from pushgate.services.send import SendService
from pushgate.services.send_progress import SendProgress, send_progress
from pushgate.services.subscribers import SubscriberService
from pushgate.storage.database import Database

POLL_SECONDS = 0.2
# With no fan-out after this long, the display asks whether a server runs on this data.
NO_FANOUT_HINT_SECONDS = 3.0


def _data(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    data: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--data")
        data[key] = value
    return data


def _invalid(exc: ValidationError) -> str:
    names = {"app_id": "--app", "message": "--message", "title": "--title", "data": "--data"}
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        problems.append(f"{names.get(field, field)}: {error['msg']}")
    return "Invalid notification: " + "; ".join(problems)


def _line(progress: SendProgress, seconds: float) -> Text:
    if not progress.fanned_out:
        text = f"notification {progress.notification_id}: waiting for the fan-out"
        if seconds >= NO_FANOUT_HINT_SECONDS:
            text += " (is `pushgate serve` running on this data directory?)"
        return Text(f"{text}  {seconds:.0f} s")
    shown = ", ".join(f"{count} {status}" for status, count in progress.counts.items() if count)
    return Text(
        f"notification {progress.notification_id}: {progress.total} "
        + ("delivery" if progress.total == 1 else "deliveries")
        + (f": {shown}" if shown else "")
        + (f"; {progress.unsettled} to go" if progress.unsettled else "; done")
        + f"  {seconds:.0f} s"
    )


async def _follow(
    db: Database, account_id: int, notification_id: int, seconds: float
) -> SendProgress:
    """Poll the notification's progress until it is settled or ``seconds`` have passed,
    shown live on stderr when that is a terminal."""
    started = time.monotonic()
    live = Live(console=Console(stderr=True), transient=True) if sys.stderr.isatty() else None
    progress = await send_progress(db, account_id, notification_id)
    if live is not None:
        live.start()
    try:
        while not progress.settled and time.monotonic() - started < seconds:
            if live is not None:
                live.update(_line(progress, time.monotonic() - started))
            await asyncio.sleep(POLL_SECONDS)
            progress = await send_progress(db, account_id, notification_id)
    finally:
        if live is not None:
            live.stop()
    return progress


def _summary(progress: SendProgress) -> dict[str, Any]:
    return {
        "id": progress.notification_id,
        "fanned_out": progress.fanned_out,
        "settled": progress.settled,
        "deliveries": progress.counts,
        "total": progress.total,
    }


def _print_summary(progress: SendProgress) -> None:
    table = Table("status", "deliveries", title=f"Notification {progress.notification_id}")
    for status, count in progress.counts.items():
        if count:
            table.add_row(Text(status), str(count))
    table.add_row("total", str(progress.total), style="bold")
    Console().print(table)


def send(
    app_id: Annotated[
        str,
        typer.Option(
            "--app",
            metavar="APP_ID",
            help="The app whose devices get it (see `pushgate app list`).",
        ),
    ],
    message: Annotated[str, typer.Option(metavar="TEXT", help="The notification's text.")],
    title: Annotated[str | None, typer.Option(metavar="TEXT", help="Its title.")] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="Data for the app, as strings; repeat for more keys.",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the deliveries (live on a terminal) until each has reached its final "
            "state, then print them by status.",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="With --wait: give up after this many seconds (exit status 1).",
            min=0,
        ),
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Send a notification to every enabled device of an app (and the account's personal
    channel devices), as POST /api/v1/notifications does; print its id.

    It is stored with its fan-out job in the data directory's database: the server running on
    that data (`pushgate serve`) delivers it."""
    try:
        body = SendIn(app_id=app_id, message=message, title=title, data=_data(data))
    except ValidationError as exc:
        typer.secho(_invalid(exc), fg="red", err=True)
        raise typer.Exit(2) from exc
    settings = load_settings()

    async def run(db: Database, box: SecretBox) -> SendProgress | None:
        notification_id, account_id = await _send(settings, db, box, body)
        if not wait:
            record = {"id": notification_id, "app_id": app_id}
            typer.echo(orjson.dumps(record).decode() if as_json else str(notification_id))
            return None
        if not as_json:
            typer.echo(f"Notification {notification_id} accepted.")
        note = mismatch_note(settings, server_url(settings))
        if note is not None:
            typer.secho(note, fg="yellow", err=True)
        return await _follow(db, account_id, notification_id, timeout)

    try:
        progress = with_database(run)
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc
    if progress is None:
        return
    if as_json:
        typer.echo(orjson.dumps(_summary(progress)).decode())
    else:
        _print_summary(progress)
    if not progress.settled:
        typer.secho(
            f"Not final after {timeout:g} s: see `pushgate deliveries show "
            f"{progress.notification_id}`.",
            fg="yellow",
            err=True,
        )
        raise typer.Exit(1)


async def _send(settings: Settings, db: Database, box: SecretBox, body: SendIn) -> tuple[int, int]:
    """Store the notification; (its id, its account's id)."""
    account_id = await CredentialService(db, box, settings.vapid_subject).owner(body.app_id)
    app = await AppService(db, box).of_account(account_id, body.app_id)
    if app is None:  # pragma: no cover - deleted meanwhile
        raise NotFound(f"No app {body.app_id} (see `pushgate app list`)")
    command = await send_command(body, app, SubscriberService(db), None)
    # A one-off pipeline: its metrics are this command's own (nothing scrapes them).
    pipeline = DeliveryPipeline(db, EmbeddedQueue(db), Metrics())
    pipeline.start()
    try:
        service = SendService(db, EventService(db), pipeline, settings.notification_ttl_seconds)
        return await service.send(command), account_id
    finally:
        await pipeline.stop()
