"""``pushgate backup PATH`` and ``pushgate restore PATH``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from sqlalchemy.engine import make_url

from pushgate.config import load_settings

POSTGRES_ADVICE = (
    "The database is PostgreSQL: back it up with PostgreSQL's own tools, e.g. "
    "`pg_dump --format=custom --file=pushgate.dump DBNAME` (online and consistent) and "
    "`pg_restore --clean --dbname=DBNAME pushgate.dump`; keep PUSHGATE_SECRET_KEY with it."
)


def _sqlite_database() -> tuple[Path, Path]:
    """(database file, data dir); exits with advice when the database is not SQLite."""
    settings = load_settings()
    url = make_url(settings.resolved_database_url)
    if not url.drivername.startswith("sqlite"):
        typer.echo(POSTGRES_ADVICE, err=True)
        raise typer.Exit(2)
    if not url.database:
        typer.secho("The database is in memory: nothing to back up or restore.", err=True)
        raise typer.Exit(2)
    return Path(url.database), settings.data_dir


JSON_HELP = "Print one JSON object: the files written, where from and where to."


def backup(
    path: Annotated[Path, typer.Argument(help="New (or empty) directory to write the backup to.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Back up the SQLite database (online: the server keeps running) and the secret key."""
    from pushgate.storage.backup import BackupError
    from pushgate.storage.backup import backup as run_backup

    database, data_dir = _sqlite_database()
    try:
        written = run_backup(database, data_dir, path)
    except BackupError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        record = {
            "database": str(database),
            "backup": str(path),
            "files": [p.name for p in written],
        }
        typer.echo(orjson.dumps(record).decode())
    else:
        typer.echo(f"Backed up {database} to {path} ({', '.join(p.name for p in written)}).")
    typer.echo("Restore it with: pushgate restore " + str(path), err=True)


def restore(
    path: Annotated[Path, typer.Argument(help="A directory written by `pushgate backup`.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Replace the data dir's database and secret key with a backup. Stop the server first."""
    from pushgate.storage.backup import BackupError
    from pushgate.storage.backup import restore as run_restore

    database, data_dir = _sqlite_database()
    try:
        replaced = run_restore(path, database, data_dir)
    except BackupError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        record = {
            "backup": str(path),
            "data_dir": str(data_dir),
            "files": [p.name for p in replaced],
        }
        typer.echo(orjson.dumps(record).decode())
    else:
        typer.echo(f"Restored {path} into {data_dir} ({', '.join(p.name for p in replaced)}).")
