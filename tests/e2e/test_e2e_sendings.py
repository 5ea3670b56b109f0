"""Sendings through real server processes: each runs once, and only once, across a SIGKILL
restart and with two server processes on one database (SQLite and PostgreSQL); a local-time
sending reaches each offset at its own moment; the native API and the CLI cancel a sending."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e_support import (
    ServerFactory,
    Tenant,
    app_device,
    client_for,
    make_app,
    polled,
)

from pushgate.testing.server import ServerProcess, create_account, run_cli

PX = "/api/b/v2"
SENDINGS = 40
DEVICES = 3


def _push(title: str) -> dict[str, Any]:
    return {"default_lang": "en", "translations": [{"language": "en", "title": title, "text": "t"}]}


async def _tenant(http: httpx2.AsyncClient, data_dir: Path, env: dict[str, str]) -> Tenant:
    account = create_account(data_dir, f"once-{time.monotonic_ns()}", env)
    return Tenant(data_dir=data_dir, user_token=account["user_token"], account_id=account["id"])


def run_cli_json(server: ServerProcess, *args: str) -> Any:
    done = run_cli([*args, "--json"], server.data_dir)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def _key(http: httpx2.AsyncClient, tenant: Tenant) -> dict[str, str]:
    resp = await http.post("/api/v1/keys", headers=tenant.bearer, json={"kind": "push-express"})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['key']}"}


async def _instants(http: httpx2.AsyncClient, key: dict[str, str], count: int) -> list[int]:
    ids = []
    for n in range(count):
        resp = await http.post(
            f"{PX}/send/instant",
            headers=key,
            json={"name": f"s{n}", "filters": {}, "push": _push(f"s{n}")},
        )
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["sched_id"])
    return ids


async def _settled(
    http: httpx2.AsyncClient, tenant: Tenant, ids: list[int], timeout: float = 60
) -> list[dict[str, Any]]:
    """The sendings once each is done and its deliveries are all made."""
    deadline = time.monotonic() + timeout
    while True:
        views = []
        for sending_id in ids:
            resp = await http.get(f"/api/v1/sendings/{sending_id}", headers=tenant.bearer)
            assert resp.status_code == 200, resp.text
            views.append(resp.json())
        if all(v["state"] == "done" and v["counts"]["targeted"] >= DEVICES for v in views):
            return views
        if time.monotonic() > deadline:
            pytest.fail(f"not every sending finished: {[v for v in views if v['state'] != 'done']}")
        await asyncio.sleep(0.2)


def _assert_once(views: list[dict[str, Any]]) -> None:
    for view in views:
        counts = view["counts"]
        assert counts["notifications"] == 1, view
        assert counts["targeted"] == DEVICES, view


async def test_a_sending_runs_once_across_a_sigkill_restart(make_server: ServerFactory) -> None:
    env = {"PUSHGATE_INSTANT_DELAY_SECONDS": "1.5"}
    server = make_server(env=env)
    async with client_for(server) as http:
        tenant = await _tenant(http, server.data_dir, env)
        app = await make_app(http, tenant)
        for n in range(DEVICES):
            await app_device(http, tenant, app, name=f"d{n}")
        key = await _key(http, tenant)
        ids = await _instants(http, key, SENDINGS)
    # Killed while the first sendings run and the last still wait.
    await asyncio.sleep(1.3)
    server.kill()
    server.start()
    async with client_for(server) as http:
        _assert_once(await _settled(http, tenant, ids))


async def _two_servers_run_each_sending_once(
    make_server: ServerFactory, database_url: str | None, tmp_path: Path
) -> None:
    env = {"PUSHGATE_INSTANT_DELAY_SECONDS": "1", "PUSHGATE_SECRET_KEY": "s" * 48}
    if database_url is not None:
        env["PUSHGATE_DATABASE_URL"] = database_url
        first, second = make_server(env=env), make_server(env=env)
    else:
        shared = tmp_path / "shared"
        first = make_server(data_dir=shared, env=env)
        second = make_server(data_dir=shared, env=env)
    async with client_for(first) as http:
        tenant = await _tenant(http, first.data_dir, env)
        app = await make_app(http, tenant)
        for n in range(DEVICES):
            await app_device(http, tenant, app, name=f"d{n}")
        key = await _key(http, tenant)
        ids = await _instants(http, key, SENDINGS)
    async with client_for(second) as http:
        _assert_once(await _settled(http, tenant, ids))


async def test_two_server_processes_on_sqlite_run_each_sending_once(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    await _two_servers_run_each_sending_once(make_server, None, tmp_path)


async def test_two_server_processes_on_postgresql_run_each_sending_once(
    make_server: ServerFactory, postgres_database_url: str, tmp_path: Path
) -> None:
    await _two_servers_run_each_sending_once(make_server, postgres_database_url, tmp_path)


@pytest.mark.timeout(300)  # it waits for two minute boundaries
async def test_local_time_reaches_each_offset_at_its_moment(make_server: ServerFactory) -> None:
    """Offsets a minute apart (fixed offsets may have any minutes): +00:01 has passed when
    the sending is made, so it runs at once; +00:00 (and the devices without a timezone, whose
    fallback offset it is) at the next minute; -00:01 a minute later."""
    server = make_server()
    async with client_for(server) as http:
        tenant = await _tenant(http, server.data_dir, {})
        app = await make_app(http, tenant)
        zones = {"ahead": "+00:01", "utc": "+00:00", "none": None, "behind": "-00:01"}
        tokens = {}
        for name, zone in zones.items():
            extra = {} if zone is None else {"timezone": zone}
            tokens[name] = (await app_device(http, tenant, app, name=name, **extra))["device_token"]
        now = datetime.now(UTC)
        if now.second > 50:  # leave the next minute a few seconds away at least
            await asyncio.sleep(61 - now.second)
            now = datetime.now(UTC)
        wall = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
        resp = await http.post(
            "/api/v1/notifications",
            headers=tenant.bearer,
            json={
                "app_id": app,
                "message": "Good morning",
                "send_at": wall.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                "local_time": True,
            },
        )
        assert resp.status_code == 201, resp.text
        sending_id = resp.json()["sending_id"]
        assert "id" not in resp.json()

        async def got(name: str) -> list[str]:
            return [n["message"] for n in await polled(http, tokens[name])]

        await asyncio.sleep(1.5)
        assert await got("ahead") == ["Good morning"]
        assert await got("utc") == [] and await got("none") == []
        view = (await http.get(f"/api/v1/sendings/{sending_id}", headers=tenant.bearer)).json()
        assert view["state"] == "running" and view["local_time"] is True
        await asyncio.sleep(max(0.0, (wall - datetime.now(UTC)).total_seconds()) + 1.5)
        assert await got("utc") == ["Good morning"]
        assert await got("none") == ["Good morning"]
        assert await got("behind") == []
        # Running: it can no longer be cancelled.
        refused = await http.post(f"/api/v1/sendings/{sending_id}/cancel", headers=tenant.bearer)
        assert refused.status_code == 409, refused.text
        behind = wall + timedelta(minutes=1)
        await asyncio.sleep(max(0.0, (behind - datetime.now(UTC)).total_seconds()) - 1.0)
        assert await got("behind") == []  # a second early
        await asyncio.sleep(2.5)
        assert await got("behind") == ["Good morning"]
        view = (await http.get(f"/api/v1/sendings/{sending_id}", headers=tenant.bearer)).json()
        assert view["state"] == "done"
        assert view["counts"]["notifications"] == 3 and view["counts"]["targeted"] == 4
        for name in zones:  # polling does not acknowledge: each still has its one
            assert await got(name) == ["Good morning"]


async def test_the_native_api_and_the_cli_cancel_a_waiting_sending(
    make_server: ServerFactory,
) -> None:
    server = make_server()
    async with client_for(server) as http:
        tenant = await _tenant(http, server.data_dir, {})
        app = await make_app(http, tenant)
        later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT09:00:00+02:00")
        made = []
        for _ in range(2):
            resp = await http.post(
                "/api/v1/notifications",
                headers=tenant.bearer,
                json={"app_id": app, "message": "m", "send_at": later, "local_time": True},
            )
            assert resp.status_code == 201, resp.text
            made.append(resp.json()["sending_id"])
        resp = await http.post(f"/api/v1/sendings/{made[0]}/cancel", headers=tenant.bearer)
        assert resp.status_code == 200, resp.text
        assert resp.json()["state"] == "cancelled"
        again = await http.post(f"/api/v1/sendings/{made[0]}/cancel", headers=tenant.bearer)
        assert again.status_code == 409
    account = str(tenant.account_id)
    listed = await asyncio.to_thread(run_cli_json, server, "sending", "list", "--account", account)
    assert {s["id"]: s["state"] for s in listed} == {made[0]: "cancelled", made[1]: "waiting"}
    cancelled = await asyncio.to_thread(
        run_cli_json, server, "sending", "cancel", str(made[1]), "--account", account
    )
    assert cancelled["state"] == "cancelled"


async def test_the_cli_keeps_app_and_audience_groups(make_server: ServerFactory) -> None:
    server = make_server()
    async with client_for(server) as http:
        tenant = await _tenant(http, server.data_dir, {})
        app = await make_app(http, tenant)
        number = (await http.get(f"/api/v1/apps/{app}", headers=tenant.bearer)).json()["number"]
    account = str(tenant.account_id)

    def cli(*args: str) -> Any:
        return run_cli_json(server, "group", *args, "--account", account)

    made = await asyncio.to_thread(cli, "create", "shops", str(number))
    assert made["members"] == [number] and made["kind"] == "apps"
    tags = await asyncio.to_thread(cli, "create", "vip", "gold", "platinum", "--kind", "audiences")
    assert tags["members"] == ["gold", "platinum"]
    changed = await asyncio.to_thread(cli, "set", str(tags["id"]), "gold", "--kind", "audiences")
    assert changed["members"] == ["gold"]
    listed = await asyncio.to_thread(cli, "list", "--kind", "audiences")
    assert [g["name"] for g in listed] == ["vip"]
    foreign = await asyncio.to_thread(
        run_cli, ["group", "create", "x", "999999", "--account", account], server.data_dir
    )
    assert foreign.returncode == 1 and "No app 999999" in foreign.stderr
    await asyncio.to_thread(cli, "delete", str(made["id"]))
    assert await asyncio.to_thread(cli, "list") == []
