"""``pushgate key``: API keys of the vendor faces, straight in the database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from pushgate.cli.database import with_database
from pushgate.domain.errors import InvalidInput, NotFound, PushgateError
from pushgate.services.api_keys import KINDS, ApiKey, ApiKeyService, key_record
from pushgate.services.credentials import CredentialService
from pushgate.services.quotas import Quotas
from pushgate.web.timestamps import iso_ms

key_app = typer.Typer(
    help="API keys: the credentials of the vendor faces (Insider mobile and web, Push API "
    "v2, Push.express) and of the native API. Read and written in the database of the data "
    "directory: no server needed. A key is shown once, when it is created.",
    no_args_is_help=True,
)
T = TypeVar("T")


def _run(work: Callable[[ApiKeyService, CredentialService], Awaitable[T]]) -> T:
    async def run(db: Any, box: Any) -> T:
        keys = ApiKeyService(db, box, Quotas())
        return await work(keys, CredentialService(db, box, "mailto:admin@localhost"))

    try:
        return with_database(run)
    except PushgateError as exc:
        typer.secho(exc.message, fg="red", err=True)
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc


async def _account(
    credentials: CredentialService, app_key: str | None, account_id: int | None
) -> int:
    if app_key is not None:
        owner = await credentials.owner(app_key)
        if account_id is not None and account_id != owner:
            raise InvalidInput(f"app {app_key} is not an app of account {account_id}")
        return owner
    if account_id is None:
        raise InvalidInput("name the key's app (--app APP_ID) or its account (--account ID)")
    return account_id


@key_app.command("create")
def create(
    kind: Annotated[str, typer.Option(help=f"One of: {', '.join(KINDS)}.")],
    app_key: Annotated[
        str | None,
        typer.Option(
            "--app",
            metavar="APP_ID",
            help="The app the key acts for (insider-mobile, insider-web, push-api-v2, browser).",
        ),
    ] = None,
    account_id: Annotated[
        int | None,
        typer.Option(
            "--account",
            metavar="ID",
            help="The account, for keys that act for a whole account (native, push-express); "
            "see `pushgate account list`.",
        ),
    ] = None,
    ip: Annotated[
        list[str] | None,
        typer.Option(
            help="An address or CIDR the key may be used from; repeat for more (default: any; "
            "insider-mobile keys: 127.0.0.1 only).",
        ),
    ] = None,
    per_minute: Annotated[
        int | None, typer.Option(help="Requests per minute (default: the face's quota).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create an API key and print it (this once), with the ids its face needs: Push API v2's
    CompanyId and Insider web's partner_id."""

    async def work(keys: ApiKeyService, credentials: CredentialService) -> tuple[ApiKey, str]:
        owner = await _account(credentials, app_key, account_id)
        return await keys.create(
            owner, kind, app_key=app_key, name=name, ip_allowlist=ip, per_minute=per_minute
        )

    key, secret = _run(work)
    record = {**key_record(key), "key": secret}
    if as_json:
        typer.echo(orjson.dumps(record).decode())
        return
    typer.echo(f"API key {key.id} ({key.kind}) created. Keep it, it is not shown again:")
    typer.echo(f"  {secret}")
    typer.echo(f"CompanyId / partner_id: {key.account_id}")
    if key.ip_allowlist is not None:
        typer.echo(
            f"Allowed from: {', '.join(key.ip_allowlist)} (change with `pushgate key update`)"
        )


@key_app.command("list")
def list_keys(
    app_key: Annotated[
        str | None, typer.Option("--app", metavar="APP_ID", help="Only this app's keys.")
    ] = None,
    account_id: Annotated[
        int | None, typer.Option("--account", metavar="ID", help="The account's keys.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the keys of an app or of an account (never the keys themselves)."""

    async def work(keys: ApiKeyService, credentials: CredentialService) -> list[ApiKey]:
        return await keys.list(await _account(credentials, app_key, account_id), app_key)

    listed = _run(work)
    if as_json:
        for key in listed:
            typer.echo(orjson.dumps(key_record(key)).decode())
        return
    table = Table("id", "kind", "app", "name", "hint", "allowed from", "per minute", "revoked")
    for key in listed:
        table.add_row(
            str(key.id),
            key.kind,
            key.app_key or "-",
            key.name or "-",
            "…" + key.hint,
            ", ".join(key.ip_allowlist) if key.ip_allowlist is not None else "any",
            str(key.per_minute) if key.per_minute else "default",
            iso_ms(key.revoked_ms) if key.revoked_ms else "-",
        )
    Console().print(table)


@key_app.command("update")
def update_key(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `pushgate key list`).")],
    account_id: Annotated[int, typer.Option("--account", metavar="ID", help="Its account.")],
    ip: Annotated[
        list[str] | None,
        typer.Option(help="The addresses or CIDRs it may be used from (replacing the list)."),
    ] = None,
    any_ip: Annotated[bool, typer.Option(help="Allow any address.")] = False,
    per_minute: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    default_quota: Annotated[bool, typer.Option(help="Back to the face's quota.")] = False,
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Change a key's IP allowlist, quota or name."""

    async def work(keys: ApiKeyService, credentials: CredentialService) -> ApiKey:
        return await keys.update(
            account_id,
            key_id,
            name=name,
            ip_allowlist=ip,
            any_address=any_ip,
            per_minute=per_minute,
            default_quota=default_quota,
        )

    key = _run(work)
    if as_json:
        typer.echo(orjson.dumps(key_record(key)).decode())
    else:
        typer.echo(f"API key {key.id} updated.")


@key_app.command("revoke")
def revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `pushgate key list`).")],
    account_id: Annotated[int, typer.Option("--account", metavar="ID", help="Its account.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Revoke a key: every server refuses it within a second."""

    async def work(keys: ApiKeyService, credentials: CredentialService) -> ApiKey:
        return await keys.revoke(account_id, key_id)

    key = _run(work)
    if as_json:
        typer.echo(orjson.dumps(key_record(key)).decode())
    else:
        typer.echo(f"API key {key.id} revoked.")
