"""``pushgate credentials``: an app's provider credentials, straight in the database."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pushgate.cli.database import with_database
from pushgate.config import load_settings
from pushgate.crypto import SecretBox
from pushgate.domain.credentials import KINDS
from pushgate.domain.errors import InvalidInput, NotFound, PushgateError
from pushgate.services.credentials import CredentialService, StoredCredential
from pushgate.storage.database import Database
from pushgate.web.timestamps import iso_ms

credentials_app = typer.Typer(
    help="Provider credentials of an app (APNs key, FCM service account, HMS app id and "
    "secret, VAPID key pair), read and written in the database of the data directory: no "
    "server needed. They are checked before they are stored, and stored encrypted.",
    no_args_is_help=True,
)
T = TypeVar("T")

APP_HELP = "The app's id (appID in Instapush, app_id in the native API; see `pushgate app list`)."
PLATFORMS = tuple(KINDS)


def _run(work: Callable[[CredentialService], Awaitable[T]]) -> T:
    settings = load_settings()

    async def run(db: Database, box: SecretBox) -> T:
        return await work(
            CredentialService(db, box, settings.vapid_subject, settings.fcm_token_hosts)
        )

    try:
        return with_database(run)
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc


def _platform(value: str) -> str:
    if value not in PLATFORMS:
        raise typer.BadParameter(f"must be one of {', '.join(PLATFORMS)}")
    return value


def _as_dict(stored: StoredCredential) -> dict[str, Any]:
    return {
        "platform": stored.platform,
        "public": stored.public,
        "created_at": iso_ms(stored.created_ms),
        "updated_at": iso_ms(stored.updated_ms),
    }


def _public_text(stored: StoredCredential) -> str:
    return ", ".join(f"{key}={value}" for key, value in stored.public.items())


def _print_public(stored: StoredCredential) -> None:
    """The public parts as a table of two columns (never secrets: there are none in it)."""
    table = Table(show_header=False, box=None)
    for key, value in stored.public.items():
        table.add_row(key, Text(str(value)))
    Console().print(table)


def _read_upload(path: Path, platform: str, fields: dict[str, str | None]) -> dict[str, Any]:
    """The upload for ``platform`` from ``path``: a JSON object of the API's fields, or for ios
    the .p8 key itself (with the other fields as options), or for android the service
    account's JSON key file itself."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    given = {name: value for name, value in fields.items() if value is not None}
    if platform == "ios" and "PRIVATE KEY" in text and not text.lstrip().startswith("{"):
        return {"private_key": text, **given}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if platform == "android" and isinstance(data, dict) and data.get("type") == "service_account":
        return {"service_account": data}
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: must hold a JSON object")
    return {**data, **given}


@credentials_app.command("set")
def set_credentials(
    app_key: Annotated[str, typer.Argument(help=APP_HELP, metavar="APP_ID")],
    platform: Annotated[
        str,
        typer.Argument(
            help="ios (APNs), android (FCM), huawei (HMS) or web (VAPID).",
            callback=_platform,
            metavar="PLATFORM",
        ),
    ],
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            help="ios: the AuthKey_XXXXXXXXXX.p8 file (with --key-id, --team-id, --topic) or a "
            "JSON object; android: the service account's JSON key file; huawei: JSON "
            '{"app_id": ..., "client_secret": ...}; web: JSON {"subject": ..., '
            '"private_key": ...}. "-" reads standard input.',
            allow_dash=True,
        ),
    ],
    key_id: Annotated[str | None, typer.Option(help="ios: the key's 10-character id.")] = None,
    team_id: Annotated[str | None, typer.Option(help="ios: your 10-character team id.")] = None,
    topic: Annotated[str | None, typer.Option(help="ios: the app's bundle id.")] = None,
    environment: Annotated[
        str | None, typer.Option(help="ios: production (default) or sandbox.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check and store an app's credentials for one platform, replacing earlier ones."""
    fields = {"key_id": key_id, "team_id": team_id, "topic": topic, "environment": environment}

    async def work(service: CredentialService) -> StoredCredential:
        upload = _read_upload(file, platform, fields if platform == "ios" else {})
        account_id = await service.owner(app_key)
        stored, _created = await service.put(account_id, app_key, platform, upload)
        return stored

    try:
        stored = _run(work)
    except OSError as exc:
        typer.secho(f"cannot read {file}: {exc.strerror}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(orjson.dumps(_as_dict(stored)).decode())
    else:
        typer.echo(f"{platform} credentials of app {app_key} stored:")
        _print_public(stored)


@credentials_app.command("show")
def show(
    app_key: Annotated[str, typer.Argument(help=APP_HELP, metavar="APP_ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which platforms an app has credentials for, with their public parts (never secrets)."""

    async def work(service: CredentialService) -> list[StoredCredential]:
        return await service.list(await service.owner(app_key), app_key)

    rows = _run(work)
    if as_json:
        typer.echo(orjson.dumps([_as_dict(row) for row in rows]).decode())
        return
    if not rows:
        typer.echo(f"App {app_key} has no provider credentials yet.")
        return
    table = Table("platform", "public", "updated")
    for row in rows:
        table.add_row(row.platform, Text(_public_text(row)), iso_ms(row.updated_ms))
    Console().print(table)


@credentials_app.command("delete")
def delete(
    app_key: Annotated[str, typer.Argument(help=APP_HELP, metavar="APP_ID")],
    platform: Annotated[
        str,
        typer.Argument(help="ios, android, huawei or web.", callback=_platform, metavar="PLATFORM"),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Remove an app's credentials for one platform: its deliveries there then fail with
    InvalidCertificate."""

    async def work(service: CredentialService) -> None:
        await service.delete(await service.owner(app_key), app_key, platform)

    _run(work)
    if as_json:
        record = {"app_id": app_key, "platform": platform, "deleted": True}
        typer.echo(orjson.dumps(record).decode())
    else:
        typer.echo(f"{platform} credentials of app {app_key} deleted.")


@credentials_app.command("generate-vapid")
def generate_vapid(
    app_key: Annotated[str, typer.Argument(help=APP_HELP, metavar="APP_ID")],
    subject: Annotated[
        str | None,
        typer.Option(help="Contact for push services: mailto:you@example.com or an https URL."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the stored credentials as one JSON object.")
    ] = False,
) -> None:
    """Give the app a new Web Push (VAPID) key pair and print its public key. Browsers
    subscribed with an older key must subscribe again."""

    async def work(service: CredentialService) -> StoredCredential:
        stored, _created = await service.generate_vapid(
            await service.owner(app_key), app_key, subject
        )
        return stored

    stored = _run(work)
    if as_json:
        typer.echo(orjson.dumps(_as_dict(stored)).decode())
    else:
        typer.echo(stored.public["public_key"])
