"""``pushgate subscribers``: an app's subscribers, read and written straight in the database
of the data directory.

``import`` reads a file (CSV or NDJSON) into entries and prints what happened; the rules are
``domain/import_entries.py``'s and the writing ``services/subscriber_import.py``'s. ``show``,
``search`` and ``delete`` are the native API's ``GET /api/v1/subscribers/{id}``, ``GET
/api/v1/apps/{app_id}/subscribers`` and ``DELETE /api/v1/subscribers/{id}``, through the same
service (``services/subscribers.py``) and with the same fields.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

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
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from pushgate.api.native.subscriber_records import subscriber_record
from pushgate.cli.database import ACCOUNT_HELP, select_account, with_database
from pushgate.cli.import_files import (
    LIST_SEPARATOR,
    PROFILE_COLUMNS,
    BadFile,
    count_lines,
    csv_rows,
    format_of,
    ndjson_rows,
)
from pushgate.config import load_settings
from pushgate.crypto import SecretBox
from pushgate.domain.errors import MAX_ID, InvalidInput, NotFound, PushgateError
from pushgate.domain.subscribers import (
    OPTINS,
    STANDARD,
    Identifiers,
    identifier_name,
    parse_identifiers,
)
from pushgate.egress import EgressPolicy
from pushgate.services.accounts import AccountService
from pushgate.services.credentials import CredentialService
from pushgate.services.subscriber_import import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    ImportReport,
    SubscriberImport,
)
from pushgate.services.subscribers import SubscriberService, SubscriberView
from pushgate.storage.database import Database

subscribers_app = typer.Typer(
    help="An app's subscribers, read and written in the database of the data directory: no "
    "server needed.",
    no_args_is_help=True,
)
T = TypeVar("T")


IMPORT_HELP = "\n\n".join(
    [
        "Import subscribers with their devices into an app, from a CSV or NDJSON file.",
        "Each row (an NDJSON line, or a CSV row) is applied as PUT "
        "/api/v1/apps/APP_ID/subscribers is: its identifiers find the subscriber, or make it, "
        "and what else it gives is set. Its devices are registered to that subscriber in the "
        "app, as POST /api/v1/devices does: a device is found again by its token (a browser "
        "by its endpoint). The API's rules check every field. A row that breaks one is "
        "rejected, with its line and the reason, and the import goes on.",
        "Running the same file again changes nothing. Rows of one subscriber merge. An import "
        "is no device activity: devices that exist keep their device tokens and their "
        "enabled state.",
        "NDJSON: one object per line, the body of PUT /api/v1/apps/APP_ID/subscribers "
        '(without events) with "devices": a list of registration bodies of POST '
        "/api/v1/devices (platform, token or subscription, name, language, country, timezone, "
        "model, os_version, app_version).",
        "CSV: a header row, then one row per subscriber, or per device (rows that name the "
        "same subscriber merge). An empty cell leaves the field as it is. The columns:",
        f"- identifiers: {', '.join(STANDARD)}, INSIDER.<key>, identifiers.<key> (a custom "
        "key)\n"
        f"- profile: {', '.join(PROFILE_COLUMNS)}, "
        f"{', '.join(f'optin_{name}' for name in OPTINS)} (true or false), tags, add_tags "
        f'(tags separated by "{LIST_SEPARATOR}")\n'
        "- attributes: d_<name>, c_<name>: a number, true, false, a JSON list, or null (which "
        "removes it) is read as such, other text as a string; c_<name>:string, :number, "
        ":bool, :date (ISO 8601) or :json say which\n"
        "- device: platform (ios, android, huawei, web), token (or push_token); for web "
        "subscription (JSON), or endpoint, p256dh and auth; device_name, device_language, "
        "device_country, device_timezone, device_model, device_os_version, "
        "device_app_version",
        "Rejected rows are listed as 'line N: reason' on stderr, or in --rejects FILE.",
        "Exit status: 0 when every row was imported; 1 when some rows were rejected (the "
        "others were imported); 2 when nothing was imported: the options, the file's header "
        "or the app are wrong; 3 when a database error stopped the import (the rows before "
        "it are imported: run it again to complete it).",
    ]
)

IMPORT_EPILOG = """Example, subscribers.csv (the tokens shortened):

external_id,email,language,c_plan,platform,token
u-1,ann@example.com,nl,pro,ios,5f2a...(64 hex digits)
u-1,,,,android,eXk9...(an FCM token)
u-2,bob@example.com,en,free,,

$ pushgate subscribers import --app APP_ID subscribers.csv

The same as NDJSON, users.ndjson:

{"identifiers": {"external_id": "u-1", "email": "ann@example.com"}, "language": "nl", \
"attributes": {"c_plan": "pro"}, "devices": [{"platform": "ios", "token": "5f2a..."}, \
{"platform": "android", "token": "eXk9..."}]}
{"identifiers": {"INSIDER.external_id": "u-2", "INSIDER.email": "bob@example.com"}, \
"language": "en", "attributes": {"c_plan": "free"}}

$ pushgate subscribers import --app APP_ID users.ndjson --rejects rejected.txt
"""


# -- the command -----------------------------------------------------------------------------


def _progress(shown: bool) -> Progress:
    """The progress bar on stderr (a terminal), or nothing."""
    return Progress(
        TextColumn("importing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("line {task.completed:,.0f}/{task.total:,.0f}, {task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not shown,
    )


def _summary(report: ImportReport, path: Path, app_key: str, seconds: float) -> dict[str, Any]:
    return {
        "file": str(path),
        "app_id": app_key,
        "rows": report.rows,
        "subscribers": {
            "new": report.subscribers.new,
            "updated": report.subscribers.updated,
            "unchanged": report.subscribers.unchanged,
        },
        "devices": {
            "new": report.devices.new,
            "updated": report.devices.updated,
            "unchanged": report.devices.unchanged,
        },
        "rejected": len(report.rejected),
        "seconds": round(seconds, 3),
        "rows_per_second": round(report.rows / seconds) if seconds > 0 else None,
    }


@subscribers_app.command("import", help=IMPORT_HELP, epilog=IMPORT_EPILOG)
def import_subscribers(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            exists=True,
            dir_okay=False,
            readable=True,
            help="The CSV (.csv) or NDJSON (.ndjson, .jsonl) file.",
        ),
    ],
    app_key: Annotated[
        str, typer.Option("--app", metavar="APP_ID", help="The app to import into (its appID).")
    ],
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="csv|ndjson",
            help="csv or ndjson (default: by the file's extension).",
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects",
            metavar="REJECTS_FILE",
            dir_okay=False,
            help="Write the rejected rows there, one 'line N: reason' per line, instead of to "
            "stderr.",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(min=1, max=MAX_BATCH_SIZE, help="Rows written per transaction."),
    ] = DEFAULT_BATCH_SIZE,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    settings = load_settings()
    show_progress = not quiet and sys.stderr.isatty()
    try:
        kind = format_of(file, file_format)
        total = count_lines(file) if show_progress else 0
        with file.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            rows = csv_rows(handle) if kind == "csv" else ndjson_rows(handle)

            async def work(db: Database, box: SecretBox) -> tuple[ImportReport, float]:
                service = SubscriberImport(
                    db,
                    box,
                    EgressPolicy.from_setting(settings.egress_allow),
                    settings.max_devices_per_subscriber,
                )
                await service.scope(app_key)  # no such app: nothing read
                started = time.perf_counter()
                with _progress(show_progress) as progress:
                    task = progress.add_task("import", total=total, rows=0)

                    def advance(count: int, line: int) -> None:
                        written[0] = count
                        progress.update(task, completed=line, rows=count)

                    report = await service.run(
                        app_key, rows, batch_size=batch_size, on_progress=advance
                    )
                    progress.update(task, completed=total)
                return report, time.perf_counter() - started

            written = [0]
            # What is loaded by now lives as long as the process: out of the collector's full
            # passes, which an import's millions of short-lived objects would otherwise make
            # scan it again and again (measured: 20% of a 50,000-row import).
            gc.freeze()
            report, seconds = with_database(work, quiet=quiet)
    except (BadFile, PushgateError) as exc:
        message = exc.message if isinstance(exc, PushgateError) else str(exc)
        typer.secho(message, fg="red", err=True)
        raise typer.Exit(2) from exc
    except (OSError, UnicodeError) as exc:
        typer.secho(f"{file}: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    except SQLAlchemyError as exc:
        # The driver's message only: the statement's parameters hold subscribers' data.
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        typer.secho(
            f"The import stopped at a database error after {written[0]:,} rows, which are "
            f"kept (run the import again to complete it): {type(cause).__name__}: {cause}",
            fg="red",
            err=True,
        )
        raise typer.Exit(3) from exc
    listed = "".join(f"line {item.line}: {item.reason}\n" for item in report.rejected)
    if rejects is not None:
        rejects.write_text(listed, encoding="utf-8")
    elif listed:
        sys.stderr.write(listed)
    summary = _summary(report, file, app_key, seconds)
    if as_json:
        typer.echo(orjson.dumps(summary).decode())
    elif not quiet:
        _print_summary(summary, rejects)
    if report.rejected:
        raise typer.Exit(1)


def _print_summary(summary: dict[str, Any], rejects: Path | None) -> None:
    rate = summary["rows_per_second"]
    typer.echo(
        f"{summary['file']} -> app {summary['app_id']}: {summary['rows']:,} rows in "
        f"{summary['seconds']:.1f} s" + (f" ({rate:,} rows/s)" if rate is not None else "")
    )
    for what in ("subscribers", "devices"):
        counts = summary[what]
        typer.echo(
            f"  {what + ':':<13}{counts['new']:,} new, {counts['updated']:,} updated, "
            f"{counts['unchanged']:,} unchanged"
        )
    rejected = summary["rejected"]
    where = f"listed in {rejects}" if rejects is not None else "listed on stderr"
    typer.echo(
        f"  {'rejected:':<13}{rejected:,} row{'s' if rejected != 1 else ''}"
        + (f" ({where})" if rejected else "")
    )


# -- show, search, delete --------------------------------------------------------------------

SEARCH_PAGE = 100
MAX_SEARCH_PAGE = 1000
PIPED_WIDTH = 160


def _id_option(value: int) -> int:
    """An id as the API takes it (a signed 64-bit number)."""
    if value > MAX_ID:
        raise typer.BadParameter(f"{value} is larger than any id")
    return value


def _run(work: Callable[[Database, SecretBox], Awaitable[T]]) -> T:
    """Run ``work`` with the database; a PushgateError exits with its message (code 1 when
    something is not found, 2 for input to fix)."""
    try:
        return with_database(work)
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc


async def _account_id(db: Database, box: SecretBox, wanted: str | None) -> int:
    accounts = [account for account, _token in await AccountService(db, box).list()]
    return select_account(accounts, wanted).id


def _console() -> Console:
    """Rich output fitted to the terminal; wide enough for every column when piped."""
    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


def _pairs(values: dict[str, Any], shown: Callable[[Any], str] = str) -> str:
    return "\n".join(f"{name}: {shown(value)}" for name, value in values.items())


def _json_value(value: Any) -> str:
    return orjson.dumps(value).decode()


def _optin(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _print_subscriber(record: dict[str, Any]) -> None:
    events = "\n".join(
        f"{event['name']}: {event['count']} (first {event['first_at']}, last {event['last_at']})"
        for event in record["events"]
    )
    devices = record["device_ids"]
    rows = {
        "app": record["app_id"] or "none: a personal subscriber of the account",
        "identifiers": _pairs(record["identifiers"]),
        "language": record["language"],
        "country": record["country"],
        "timezone": record["timezone"],
        "optins": _pairs(record["optins"], _optin),
        "attributes": _pairs(record["attributes"], _json_value),
        "tags": ", ".join(record["tags"]),
        "events": events,
        "devices": f"{len(devices)}: " + ", ".join(map(str, devices)) if devices else "0",
        "last active": record["last_active_at"],
        "created": record["created_at"],
        "updated": record["updated_at"],
    }
    table = Table("field", "value", title=f"Subscriber {record['id']} (times UTC)")
    for name, value in rows.items():
        table.add_row(name, Text(value or "-"))  # subscribers' data: never read as rich markup
    _console().print(table)


@subscribers_app.command("show")
def show(
    subscriber_id: Annotated[
        int,
        typer.Argument(
            metavar="SUBSCRIBER_ID",
            min=1,
            callback=_id_option,
            help="The subscriber's id (its id in the API's answers and in `pushgate "
            "subscribers search`).",
        ),
    ],
    account: Annotated[
        str | None, typer.Option("--account", metavar="ID", help=ACCOUNT_HELP)
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object: the answer of GET /api/v1/subscribers/SUBSCRIBER_ID.",
        ),
    ] = False,
) -> None:
    """Show a subscriber: identifiers, profile, attributes, tags, events and devices.

    The fields of GET /api/v1/subscribers/SUBSCRIBER_ID (times in UTC). Exit status 1 when the
    account has no such subscriber."""

    async def work(db: Database, box: SecretBox) -> SubscriberView:
        return await SubscriberService(db).get(await _account_id(db, box, account), subscriber_id)

    record = subscriber_record(_run(work))
    if as_json:
        typer.echo(orjson.dumps(record).decode())
    else:
        _print_subscriber(record)


def _identifiers(given: dict[str, str | None], pairs: list[str]) -> Identifiers | None:
    """The identifiers of the options; None when none is given. InvalidInput says what is
    wrong (checked as strictly as an upsert checks them)."""
    raw = {name: value for name, value in given.items() if value is not None}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        name = identifier_name(key.strip())
        if not equals or not name:
            raise InvalidInput(
                f"--identifier {pair!r}: give it as KEY=VALUE, e.g. --identifier member_no=A-17"
            )
        if name in raw:
            raise InvalidInput(f"{name} is given twice: give each identifier once")
        raw[name] = value
    return parse_identifiers(raw, field="") if raw else None


def _print_page(found: list[dict[str, Any]], app_key: str) -> None:
    table = Table(
        "id",
        "identifiers",
        "language",
        "country",
        "tags",
        "devices",
        "created (UTC)",
        title=f"Subscribers of app {app_key}",
    )
    for record in found:
        table.add_row(
            str(record["id"]),
            Text(_pairs(record["identifiers"]) or "-"),
            Text(record["language"] or "-"),
            Text(record["country"] or "-"),
            Text(", ".join(record["tags"]) or "-"),
            str(len(record["device_ids"])),
            record["created_at"][:19].replace("T", " "),
        )
    _console().print(table)


@subscribers_app.command("search")
def search(
    app_key: Annotated[
        str, typer.Option("--app", metavar="APP_ID", help="The app whose subscribers to search.")
    ],
    external_id: Annotated[
        str | None, typer.Option("--external-id", metavar="X", help="Your id of the user.")
    ] = None,
    email: Annotated[str | None, typer.Option(metavar="X", help="An e-mail address.")] = None,
    user_id: Annotated[
        str | None, typer.Option("--user-id", metavar="X", help="Another id of the user.")
    ] = None,
    phone_number: Annotated[
        str | None,
        typer.Option(
            "--phone-number", metavar="X", help="In international form, e.g. +31612345678."
        ),
    ] = None,
    uuid: Annotated[str | None, typer.Option(metavar="X", help="A UUID.")] = None,
    identifier: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="A custom identifier, e.g. member_no=A-17 (an INSIDER. prefix is accepted); "
            "repeat for more.",
        ),
    ] = None,
    after: Annotated[
        int,
        typer.Option(
            metavar="ID",
            min=0,
            callback=_id_option,
            help="List the subscribers after this id (the last one of the page before).",
        ),
    ] = 0,
    limit: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, max=MAX_SEARCH_PAGE, help="List at most this many subscribers."
        ),
    ] = SEARCH_PAGE,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON object per subscriber, one per line (the API's fields)."
        ),
    ] = False,
) -> None:
    """Find an app's subscriber by its identifiers, or list the app's subscribers.

    With identifiers: the subscriber they name (every one given must name the same
    subscriber), as GET /api/v1/apps/APP_ID/subscribers?email=... finds it; exit status 1 when
    none names one. Without: the app's subscribers in id order, --limit at a time from
    --after, as that call lists them. Exit status 2 when an identifier is not valid."""
    try:
        identifiers = _identifiers(
            {
                "external_id": external_id,
                "user_id": user_id,
                "uuid": uuid,
                "email": email,
                "phone_number": phone_number,
            },
            identifier or [],
        )
    except InvalidInput as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(2) from exc

    async def work(db: Database, box: SecretBox) -> list[SubscriberView]:
        owner = await CredentialService(db, box, load_settings().vapid_subject).owner(app_key)
        return await SubscriberService(db).search(
            owner, app_key, identifiers, after=after, limit=limit
        )

    found = [subscriber_record(view) for view in _run(work)]
    if as_json:
        for record in found:
            typer.echo(orjson.dumps(record).decode())
    elif found:
        _print_page(found, app_key)
    if identifiers is not None:
        if not found:
            typer.secho(
                f"No subscriber of app {app_key} has these identifiers.", fg="red", err=True
            )
            raise typer.Exit(1)
        return
    if as_json:
        return
    if not found:
        typer.echo(f"App {app_key} has no subscribers" + (f" after id {after}." if after else "."))
    elif len(found) == limit:
        typer.echo(f"There may be more: add --after {found[-1]['id']} for the next page.")


@subscribers_app.command("delete")
def delete(
    subscriber_id: Annotated[
        int,
        typer.Argument(
            metavar="SUBSCRIBER_ID",
            min=1,
            callback=_id_option,
            help="The subscriber's id (see `pushgate subscribers search`).",
        ),
    ],
    account: Annotated[
        str | None, typer.Option("--account", metavar="ID", help=ACCOUNT_HELP)
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Erase a subscriber with its devices: a person's erasure request.

    Like DELETE /api/v1/subscribers/SUBSCRIBER_ID, this deletes the subscriber with its
    devices, their deliveries and its whole profile; it cannot be undone. It asks first,
    naming the subscriber and its devices (unless --yes), then says how many devices went
    with it. Exit status 1 when the account has no such subscriber, or when the answer is
    no."""

    async def work(db: Database, box: SecretBox) -> int:
        account_id = await _account_id(db, box, account)
        service = SubscriberService(db)
        if not yes:
            view = await service.get(account_id, subscriber_id)
            named = ", ".join(f"{name}={value}" for name, value in view.identifiers.items())
            typer.confirm(
                f"Erase subscriber {subscriber_id}"
                + (f" ({named})" if named else "")
                + (f" of app {view.app_key}" if view.app_key else "")
                + f": its profile, {_plural(len(view.device_ids), 'device')} and their "
                "deliveries?",
                abort=True,
            )
        return await service.delete(account_id, subscriber_id)

    count = _run(work)
    if as_json:
        record = {"id": subscriber_id, "deleted": True, "devices": count}
        typer.echo(orjson.dumps(record).decode())
    else:
        typer.echo(f"Subscriber {subscriber_id} deleted, with {_plural(count, 'device')}.")
