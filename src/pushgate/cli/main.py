"""``pushgate``: serve, worker, migrate, account, listen."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from pushgate.cli.account import account_app
from pushgate.cli.apps import app_app
from pushgate.cli.backup import backup, restore
from pushgate.cli.credentials import credentials_app
from pushgate.cli.deliveries import deliveries_app
from pushgate.cli.doctor import doctor
from pushgate.cli.keys import key_app
from pushgate.cli.listen import listen
from pushgate.cli.subscribers import subscribers_app
from pushgate.config import Settings, load_settings

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
app.add_typer(credentials_app, name="credentials")
app.add_typer(key_app, name="key")
app.add_typer(subscribers_app, name="subscribers")
app.command(help=listen.__doc__)(listen)
app.command()(backup)
app.command()(restore)
app.command()(doctor)


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

    settings = settings_or_exit(host=host, port=port)
    settings.ensure_data_dir()
    configure_logs(settings)
    lock = hold_data_dir(settings.data_dir)  # noqa: F841 - held while serving
    try:
        application = create_app(settings)
    except ValueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from exc
    url = f"http://{settings.host}:{settings.port}"
    typer.echo(f"Pushgate listening on {url} (data: {settings.data_dir})", err=False)
    typer.echo(f"  API docs: {url}/docs   create an account: pushgate account create NAME")
    run(settings, application, application.state.runtime.begin_stop)


@app.command()
def worker() -> None:
    """Run delivery workers (fan-out, device channel, push platforms) in this process.

    Needs PUSHGATE_QUEUE_URL=redis://...: jobs and device-channel messages then travel through
    Redis, so any number of `pushgate worker` and `pushgate serve` processes, on one machine
    or several, share the work. Give every process the same PUSHGATE_DATABASE_URL (PostgreSQL
    when they run on several machines) and the same PUSHGATE_SECRET_KEY.
    """
    from pushgate.cli.worker import run_worker

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
    configure_logs(settings)
    lock = hold_data_dir(settings.data_dir)  # noqa: F841 - held while working
    try:
        asyncio.run(run_worker(settings))
    except ValueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from exc


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the newest version."""
    from pushgate.storage.database import open_database
    from pushgate.storage.migrate import migrate as run_migrations

    settings = settings_or_exit()
    settings.ensure_data_dir()

    async def run() -> None:
        db = open_database(settings.resolved_database_url)
        try:
            await run_migrations(db)
        finally:
            await db.dispose()

    asyncio.run(run())
    typer.echo(f"Database is up to date ({settings.resolved_database_url.split('://')[0]}).")


def main() -> None:
    app()
