"""`pushgate backup` while the server runs and writes; `pushgate restore` refused while it
runs, and bringing back exactly the backed-up data once it is stopped."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from pathlib import Path

from e2e_support import ServerFactory, client_for, make_tenant, new_account, post_ok

from pushgate.testing.server import run_cli


async def test_an_online_backup_restores_what_it_saw(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    async with client_for(server) as http:
        kept = await make_tenant(http, server.data_dir)
        await post_ok(http, kept)
        stop = asyncio.Event()

        async def keep_posting() -> int:
            posted = 0
            while not stop.is_set():
                await post_ok(http, kept)
                posted += 1
            return posted

        writer = asyncio.create_task(keep_posting())
        await asyncio.sleep(0.3)
        target = tmp_path / "backup"
        result = await asyncio.to_thread(run_cli, ["backup", str(target)], server.data_dir)
        stop.set()
        assert await writer > 0
        assert result.returncode == 0, result.stderr
        assert "Backed up" in result.stdout
        assert stat.S_IMODE((target / "pushgate.db").stat().st_mode) == 0o600
        assert (target / "secret.key").read_bytes() == (server.data_dir / "secret.key").read_bytes()
        # A backup is a second run away from overwriting: refused.
        again = run_cli(["backup", str(target)], server.data_dir)
        assert again.returncode == 1 and "not an empty directory" in again.stderr

        refused = run_cli(["restore", str(target)], server.data_dir)
        assert refused.returncode == 1
        assert "running" in refused.stderr and "stop it first" in refused.stderr

        later = new_account(server.data_dir)  # made after the backup: gone after restore
        assert (await http.get("/v1/apps/list", headers=later.user_headers)).status_code == 200
    server.stop()

    result = run_cli(["restore", str(target), "--json"], server.data_dir)
    assert result.returncode == 0, result.stderr
    restored = json.loads(result.stdout)
    assert restored["backup"] == str(target) and "pushgate.db" in restored["files"]
    server.start()
    async with client_for(server) as http:
        assert (await http.get("/v1/apps/list", headers=kept.user_headers)).status_code == 200
        assert (await http.get("/v1/apps/list", headers=later.user_headers)).status_code == 401
        await post_ok(http, kept)  # the app's secret still decrypts: the key came back too


def test_a_backup_that_is_not_one_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli(["migrate"], data_dir).returncode == 0
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    result = run_cli(["restore", str(bogus)], data_dir)
    assert result.returncode == 1 and "not a `pushgate backup`" in result.stderr
    (bogus / "pushgate.db").write_bytes(b"not a database at all" * 100)
    result = run_cli(["restore", str(bogus)], data_dir)
    assert result.returncode == 1 and "not a SQLite database" in result.stderr
    (bogus / "pushgate.db").unlink()
    sqlite3.connect(bogus / "pushgate.db").execute("CREATE TABLE t (x)").connection.close()
    result = run_cli(["restore", str(bogus)], data_dir)
    assert result.returncode == 1 and "not a Pushgate database" in result.stderr


def test_postgresql_is_sent_to_its_own_tools(tmp_path: Path) -> None:
    env = {"PUSHGATE_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/test"}
    result = run_cli(["backup", str(tmp_path / "b")], tmp_path, env)
    assert result.returncode == 2 and "pg_dump" in result.stderr
