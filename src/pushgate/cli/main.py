"""``pushgate``: serve, worker, migrate, send, listen, and the account, app, credentials, key,
deliveries, database and subscribers groups."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import orjson
import typer

from pushgate.cli.account import account_app
from pushgate.cli.apps import app_app
from pushgate.cli.backup import backup, restore
from pushgate.cli.credentials import credentials_app
from pushgate.cli.database import report_data_dir
from pushgate.cli.deliveries import deliveries_app
from pushgate.cli.doctor import doctor
from pushgate.cli.help_format import install as install_help_format
from pushgate.cli.keys import key_app
from pushgate.cli.listen import listen
from pushgate.cli.prune import database_app
from pushgate.cli.send import send
from pushgate.cli.sendings import group_app, sending_app
from pushgate.cli.server_check import occupant_note, on_every_address, server_url
from pushgate.cli.subscribers import subscribers_app
from pushgate.config import Settings, load_settings
from pushgate.data_identity import data_location

install_help_format()
app = typer.Typer(
    name="pushgate",
    help="Pushgate: a self-hosted push-notification gateway.\n\n"
    "Every command reads PUSHGATE_* environment variables; --data-dir (or PUSHGATE_DATA_DIR) "
    "chooses where the database, the server secret and the CLI's saved state live.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(account_app, name="account")
app.add_typer(app_app, name="app")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(database_app, name="database")
app.add_typer(credentials_app, name="credentials")
app.add_typer(key_app, name="key")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(sending_app, name="sending")
app.add_typer(group_app, name="group")


def _print_version(wanted: bool) -> None:
    if wanted:
        from pushgate import __version__

        typer.echo(f"pushgate {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data directory (default: PUSHGATE_DATA_DIR or ~/.local/share/pushgate).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="TOML file with settings (PUSHGATE_CONFIG_FILE).", exists=True
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    if data_dir is not None:
        os.environ["PUSHGATE_DATA_DIR"] = str(data_dir)
    if config is not None:
        os.environ["PUSHGATE_CONFIG_FILE"] = str(config)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except Exception as exc:  # pydantic ValidationError or a bad TOML file
        typer.secho(f"Invalid settings: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def hold_data_dir(data_dir: Path) -> object:
    """A shared lock on the data dir while this process runs: `pushgate restore` refuses
    to replace the database under it."""
    from pushgate.storage.backup import hold_data_dir as hold

    return hold(data_dir)


def configure_logs(settings: Settings) -> None:
    from pushgate.observability.logs import configure_logging, parse_levels

    configure_logging(settings.log_level, parse_levels(settings.log_levels), settings.log_format)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (PUSHGATE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (PUSHGATE_PORT).")] = None,
) -> None:
    """Run the server: apply migrations, then serve every API on one port."""
    from pushgate.app import create_app
    from pushgate.serving import run
    from pushgate.serving.bind import CannotListen, bind_socket

    settings = settings_or_exit(host=host, port=port)
    settings.ensure_data_dir()
    configure_logs(settings)
    lock = hold_data_dir(settings.data_dir)  # noqa: F841 - held while serving
    try:
        sock = bind_socket(settings.host, settings.port)
    except CannotListen as exc:
        note = occupant_note(settings, server_url(settings)) if exc.in_use else ""
        typer.secho(f"{exc}{note}", fg="red", err=True)
        raise typer.Exit(2) from exc
    try:
        application = create_app(settings)
    except ValueError as exc:
        sock.close()
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from exc
    url = server_url(settings, sock.getsockname()[1])
    every = f" (on all addresses, {settings.host})" if on_every_address(settings.host) else ""

    def ready() -> None:
        typer.echo(f"Pushgate listening on {url}{every}")
        typer.echo(f"  data directory: {data_location(settings)}")
        typer.echo(f"  API docs: {url}/docs   create an account: pushgate account create NAME")

    run(
        settings,
        application,
        application.state.runtime.begin_stop,
        sock=sock,
        on_ready=ready,
        channel=application.state.channel,
    )


@app.command()
def worker() -> None:
    """Run delivery workers (fan-out, device channel, push platforms) in this process.

    Needs PUSHGATE_QUEUE_URL=redis://...: jobs and device-channel messages then travel through
    Redis, so any number of `pushgate worker` and `pushgate serve` processes, on one machine
    or several, share the work. Give every process the same PUSHGATE_DATABASE_URL (PostgreSQL
    when they run on several machines) and the same PUSHGATE_SECRET_KEY.
    """
    from pushgate.cli.worker import run_worker, worker_loop

    settings = settings_or_exit()
    if settings.queue_url is None:
        typer.secho(
            "pushgate worker needs PUSHGATE_QUEUE_URL=redis://host:port/db: with the embedded "
            "queue, `pushgate serve` runs the workers itself.",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    settings.ensure_data_dir()
    report_data_dir(settings)
    configure_logs(settings)
    lock = hold_data_dir(settings.data_dir)  # noqa: F841 - held while working
    try:
        with asyncio.Runner(loop_factory=worker_loop) as runner:
            runner.run(run_worker(settings))
    except ValueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from exc


@app.command()
def migrate(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create or upgrade the database schema to the newest version."""
    from pushgate.storage.database import open_database
    from pushgate.storage.migrate import migrate as run_migrations

    settings = settings_or_exit()
    settings.ensure_data_dir()
    report_data_dir(settings)

    async def run() -> None:
        db = open_database(settings.resolved_database_url)
        try:
            await run_migrations(db)
        finally:
            await db.dispose()

    asyncio.run(run())
    engine = settings.resolved_database_url.split("://")[0]
    if as_json:
        record = {"up_to_date": True, "database": engine, "data_dir": data_location(settings)}
        typer.echo(orjson.dumps(record).decode())
    else:
        typer.echo(f"Database is up to date ({engine}).")


app.command(help=send.__doc__)(send)
app.command(help=listen.__doc__)(listen)
app.command()(backup)
app.command()(restore)
app.command()(doctor)


def main() -> None:
    app()
