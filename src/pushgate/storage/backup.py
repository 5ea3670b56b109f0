"""Backing up and restoring a SQLite data dir.

A backup is a directory: ``pushgate.db``, a consistent copy of the database made with
SQLite's online backup API (the server keeps running and writing; the copy is the database
as of one moment), and ``secret.key`` when the data dir has one (stored secrets are encrypted
with it: a database without its key cannot be read).

Restoring replaces the data dir's database (and key) with the backup's. It needs the data
dir to itself: ``pushgate serve`` and ``pushgate worker`` hold a shared lock on
``<data dir>/pushgate.lock`` (``hold_data_dir``) for as long as they run, and ``restore``
takes it exclusively, so it refuses while any of them runs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from pathlib import Path
from typing import IO

from pushgate.config import SECRET_FILE_NAME

DATABASE_FILE = "pushgate.db"
LOCK_FILE = "pushgate.lock"
PAGES_PER_STEP = 1024


class BackupError(Exception):
    """Why a backup or restore could not be done (a message for the user)."""


def hold_data_dir(data_dir: Path) -> IO[bytes]:
    """A shared lock on the data dir for this process's lifetime (keep the returned file
    open): ``restore`` refuses while anyone holds it."""
    handle = (data_dir / LOCK_FILE).open("ab")
    fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
    return handle


def _exclusive(data_dir: Path) -> IO[bytes]:
    handle = (data_dir / LOCK_FILE).open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BackupError(
            f"a Pushgate server or worker is running on {data_dir}: stop it first "
            "(restore replaces the database under it)"
        ) from None
    return handle


def _check(path: Path) -> None:
    """``path`` is an intact SQLite database with Pushgate's schema."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (result,) = conn.execute("PRAGMA integrity_check").fetchone()
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a SQLite database: {exc}") from exc
    if result != "ok":
        raise BackupError(f"{path} failed SQLite's integrity check: {result}")
    if "alembic_version" not in tables:
        raise BackupError(f"{path} is not a Pushgate database (no schema version)")


def backup(database: Path, data_dir: Path, target: Path) -> list[Path]:
    """Copy ``database`` (and the data dir's secret key) into the new directory ``target``;
    the files written."""
    if not database.exists():
        raise BackupError(f"no database at {database}: nothing to back up")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} exists and is not an empty directory")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    copy = target / DATABASE_FILE
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    destination = sqlite3.connect(copy)
    try:
        source.backup(destination, pages=PAGES_PER_STEP)
    finally:
        destination.close()
        source.close()
    os.chmod(copy, 0o600)
    _check(copy)
    written = [copy]
    key = data_dir / SECRET_FILE_NAME
    if key.exists():
        shutil.copyfile(key, target / SECRET_FILE_NAME)
        os.chmod(target / SECRET_FILE_NAME, 0o600)
        written.append(target / SECRET_FILE_NAME)
    return written


def restore(source: Path, database: Path, data_dir: Path) -> list[Path]:
    """Replace ``database`` (and the data dir's secret key) with the backup in ``source``;
    the files replaced. Refuses while a server or worker runs on ``data_dir``."""
    copy = source / DATABASE_FILE
    if not copy.is_file():
        raise BackupError(f"{source} holds no {DATABASE_FILE}: not a `pushgate backup`")
    _check(copy)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = _exclusive(data_dir)
    try:
        staged = database.with_name(database.name + ".restoring")
        shutil.copyfile(copy, staged)
        os.chmod(staged, 0o600)
        with staged.open("rb+") as handle:
            os.fsync(handle.fileno())
        # The old database's write-ahead log must not be applied to the restored file.
        for suffix in ("-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        os.replace(staged, database)
        replaced = [database]
        key = source / SECRET_FILE_NAME
        if key.exists():
            staged_key = data_dir / (SECRET_FILE_NAME + ".restoring")
            shutil.copyfile(key, staged_key)
            os.chmod(staged_key, 0o600)
            os.replace(staged_key, data_dir / SECRET_FILE_NAME)
            replaced.append(data_dir / SECRET_FILE_NAME)
        return replaced
    finally:
        lock.close()
