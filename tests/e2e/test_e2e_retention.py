"""Retention on a real data directory: `pushgate database prune` while the server runs, and
the server's own background sweep (retention_days, retention_interval_seconds)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import httpx2
from e2e_support import (
    ServerFactory,
    Tenant,
    client_for,
    deliveries,
    make_tenant,
    post_ok,
    register_device,
    wait_fanned_out,
)

from pushgate.testing.server import run_cli

DAY_MS = 86_400_000


def _age(data_dir: Path, ids: list[int], days: int, status: str) -> None:
    """Make these notifications ``days`` older (TTL included) and their deliveries ``status``,
    as if they had been sent and handled that long ago."""
    marks = ", ".join("?" * len(ids))
    with sqlite3.connect(data_dir / "pushgate.db", timeout=10) as db:
        db.execute(
            f"UPDATE notifications SET created_ms = created_ms - ?, expires_ms = expires_ms - ? "
            f"WHERE id IN ({marks})",
            (days * DAY_MS, days * DAY_MS, *ids),
        )
        db.execute(
            f"UPDATE deliveries SET status = ? WHERE notification_id IN ({marks})", (status, *ids)
        )
    db.close()


async def _posted(http: httpx2.AsyncClient, tenant: Tenant, count: int) -> list[int]:
    ids = [await post_ok(http, tenant) for _ in range(count)]
    await wait_fanned_out(http, tenant, ids)
    return ids


async def test_prune_deletes_old_history_while_the_server_runs(
    make_server: ServerFactory,
) -> None:
    server = make_server()
    async with client_for(server) as http:
        tenant = await make_tenant(http, server.data_dir)
        await register_device(http, tenant)  # every post gets one delivery to it
        ids = await _posted(http, tenant, 6)
        _age(server.data_dir, ids[:3], 40, "delivered")
        _age(server.data_dir, ids[3:4], 40, "queued")  # old, but still waiting: kept
        _age(server.data_dir, ids[4:5], 10, "delivered")  # within the 30 days: kept

        result = await asyncio.to_thread(
            run_cli, ["database", "prune", "--older-than", "30", "--json"], server.data_dir
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["deliveries"] == 3 and report["notifications"] == 3
        assert report["older_than_days"] == 30 and not report["skipped"]
        assert report["max_lock_hold_ms"] > 0

        for gone in ids[:3]:
            resp = await http.get(f"/api/v1/notifications/{gone}/deliveries", headers=tenant.bearer)
            assert resp.status_code == 404, resp.text
        for kept in ids[3:]:
            assert len(await deliveries(http, tenant, kept)) == 1
        assert await post_ok(http, tenant) > ids[-1]

        # The text summary; nothing is left to delete.
        again = await asyncio.to_thread(
            run_cli, ["database", "prune", "--older-than", "30"], server.data_dir
        )
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("Deleted 0 deliveries, 0 notifications")


async def test_the_newest_notification_is_kept_so_ids_go_on_growing(
    make_server: ServerFactory,
) -> None:
    server = make_server()
    async with client_for(server) as http:
        tenant = await make_tenant(http, server.data_dir)
        await register_device(http, tenant)
        ids = await _posted(http, tenant, 3)
    server.stop()
    _age(server.data_dir, ids, 40, "expired")

    result = run_cli(["database", "prune", "--older-than", "30", "--json"], server.data_dir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["deliveries"], report["notifications"]) == (3, 2)

    server.start()
    async with client_for(server) as http:
        assert await post_ok(http, tenant) == ids[-1] + 1


def test_prune_refuses_without_an_age_when_retention_is_off(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_cli(["database", "prune"], data_dir, {"PUSHGATE_RETENTION_DAYS": "0"})
    assert result.returncode == 2 and "--older-than" in result.stderr


async def test_the_server_sweeps_in_the_background(make_server: ServerFactory) -> None:
    server = make_server(
        env={"PUSHGATE_RETENTION_DAYS": "30", "PUSHGATE_RETENTION_INTERVAL_SECONDS": "1"}
    )
    async with client_for(server) as http:
        tenant = await make_tenant(http, server.data_dir)
        await register_device(http, tenant)
        ids = await _posted(http, tenant, 3)
        _age(server.data_dir, ids[:2], 31, "delivered")
        deadline = time.monotonic() + 15
        while True:
            resp = await http.get(f"/api/v1/notifications/{ids[0]}/stats", headers=tenant.bearer)
            if resp.status_code == 404:
                break
            assert time.monotonic() < deadline, "the server never swept"
            await asyncio.sleep(0.2)
        resp = await http.get(f"/api/v1/notifications/{ids[1]}/stats", headers=tenant.bearer)
        assert resp.status_code == 404
        assert len(await deliveries(http, tenant, ids[2])) == 1
