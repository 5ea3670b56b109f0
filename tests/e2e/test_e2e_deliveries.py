"""Observability of deliveries against a real server: one notification's deliveries (status
filter, pagination), delivery counts per account and per app, tenant isolation, and the
`pushgate deliveries` commands."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e_support import (
    SIGNUP_TEMPLATE,
    Tenant,
    add_app,
    add_event,
    latest_notification_id,
    new_account,
    post_ok,
    register_device,
)

from pushgate.testing.server import ServerProcess, create_account, run_cli

STATUSES = ["queued", "sent", "delivered", "opened", "failed", "expired", "capped"]


async def tenant_with_app(http: httpx2.AsyncClient, data_dir: Path) -> tuple[Tenant, int, str]:
    """A new account with one app and its signups event; (tenant, account id, account name)."""
    account = create_account(data_dir, f"acct-{time.monotonic_ns()}")
    tenant = Tenant(data_dir=data_dir, user_token=account["user_token"])
    await add_app(http, tenant)
    response = await add_event(http, tenant)
    assert response.status_code == 201, response.text
    return tenant, int(account["id"]), str(account["name"])


async def get_deliveries(
    http: httpx2.AsyncClient, tenant: Tenant, notification_id: int, **params: Any
) -> dict[str, Any]:
    response = await http.get(
        f"/api/v1/notifications/{notification_id}/deliveries",
        headers=tenant.bearer,
        params=params,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def send(http: httpx2.AsyncClient, tenant: Tenant, devices: int) -> int:
    """Post the signups event; the notification's id once its ``devices`` deliveries exist
    (the fan-out may run after the send was answered)."""
    await post_ok(http, tenant)
    notification_id = await latest_notification_id(http, tenant)
    deadline = time.monotonic() + 10
    while True:
        rows = (await get_deliveries(http, tenant, notification_id, limit=1000))["deliveries"]
        if len(rows) >= devices or time.monotonic() > deadline:
            assert len(rows) == devices, rows
            return notification_id
        await asyncio.sleep(0.05)


def native_error(response: httpx2.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    message: str = error["message"]
    return message


async def test_deliveries_show_every_field_and_filter_by_status(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant, _, _ = await tenant_with_app(http, server.data_dir)
    devices = [await register_device(http, tenant, f"d{i}") for i in range(3)]
    notification_id = await send(http, tenant, 3)

    body = await get_deliveries(http, tenant, notification_id)
    assert body["next_after_device_id"] is None
    rows = body["deliveries"]
    assert [row["device_id"] for row in rows] == [device["id"] for device in devices]
    for row in rows:
        assert set(row) == {
            "device_id",
            "transport",
            "status",
            "attempts",
            "reason",
            "created_at",
            "sent_at",
            "delivered_at",
            "updated_at",
        }
        assert row["transport"] == "channel" and row["status"] == "queued"
        assert row["attempts"] == 0 and row["reason"] is None
        assert row["sent_at"] is None and row["delivered_at"] is None
        assert row["created_at"].endswith("Z") and row["updated_at"] >= row["created_at"]

    # The second device fetches and acknowledges it: its delivery becomes delivered.
    device_headers = {"Authorization": f"Bearer {devices[1]['device_token']}"}
    polled = await http.get("/api/v1/channel/poll", headers=device_headers)
    assert [n["id"] for n in polled.json()["notifications"]] == [notification_id]
    ack = await http.post(
        "/api/v1/channel/ack", headers=device_headers, json={"ids": [notification_id]}
    )
    assert ack.status_code == 200, ack.text
    deadline = time.monotonic() + 10
    while True:
        delivered = (await get_deliveries(http, tenant, notification_id, status="delivered"))[
            "deliveries"
        ]
        if delivered or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert [row["device_id"] for row in delivered] == [devices[1]["id"]]
    # (sent_at may stay empty when "sent" and "delivered" reach storage in one batch)
    assert delivered[0]["delivered_at"] is not None
    assert delivered[0]["updated_at"] == delivered[0]["delivered_at"]
    queued = (await get_deliveries(http, tenant, notification_id, status="queued"))["deliveries"]
    assert [row["device_id"] for row in queued] == [devices[0]["id"], devices[2]["id"]]
    assert (await get_deliveries(http, tenant, notification_id, status="failed"))[
        "deliveries"
    ] == []

    bad = await http.get(
        f"/api/v1/notifications/{notification_id}/deliveries",
        headers=tenant.bearer,
        params={"status": "lost"},
    )
    assert native_error(bad, 400, "invalid_input") == (
        "Invalid request: status: Input should be 'queued', 'sent', 'delivered', 'opened', "
        "'failed', 'expired' or 'capped'"
    )


async def test_deliveries_page_by_device_id(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant, _, _ = await tenant_with_app(http, server.data_dir)
    ids = [(await register_device(http, tenant, f"d{i}"))["id"] for i in range(5)]
    notification_id = await send(http, tenant, 5)

    seen: list[int] = []
    after = 0
    pages = 0
    while True:
        page = await get_deliveries(http, tenant, notification_id, limit=2, after_device_id=after)
        seen += [row["device_id"] for row in page["deliveries"]]
        pages += 1
        if page["next_after_device_id"] is None:
            break
        after = page["next_after_device_id"]
        assert after == seen[-1]
    assert seen == ids and pages == 3
    assert (await get_deliveries(http, tenant, notification_id, after_device_id=ids[-1]))[
        "deliveries"
    ] == []

    for params in ({"limit": 0}, {"limit": 1001}, {"after_device_id": -1}):
        response = await http.get(
            f"/api/v1/notifications/{notification_id}/deliveries",
            headers=tenant.bearer,
            params=params,
        )
        message = native_error(response, 400, "invalid_input")
        assert message.startswith("Invalid request: " + next(iter(params)))
    maximum = await get_deliveries(http, tenant, notification_id, limit=1000)
    assert len(maximum["deliveries"]) == 5


async def test_delivery_counts_per_account_and_per_app(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant, _, _ = await tenant_with_app(http, server.data_dir)
    second = Tenant(data_dir=server.data_dir, user_token=tenant.user_token)
    await add_app(http, second, "second app")
    assert (await add_event(http, second)).status_code == 201
    for i in range(2):
        await register_device(http, tenant, f"d{i}")
    await send(http, tenant, 2)
    await send(http, tenant, 2)
    await post_ok(http, second)

    async def counts(path: str, total: int) -> dict[str, Any]:
        """The counts once ``total`` deliveries exist (the fan-out runs after the answer)."""
        deadline = time.monotonic() + 10
        while True:
            response = await http.get(path, headers=tenant.bearer)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["total"] >= total or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.05)

    account_counts = await counts("/api/v1/delivery-counts", 6)
    first_app = await counts(f"/api/v1/apps/{tenant.app_id}/delivery-counts", 4)
    second_app = await counts(f"/api/v1/apps/{second.app_id}/delivery-counts", 2)
    assert list(first_app["counts"]) == STATUSES
    assert first_app == {
        "app_id": tenant.app_id,
        "counts": {**dict.fromkeys(STATUSES, 0), "queued": 4},
        "total": 4,
    }
    assert second_app["app_id"] == second.app_id and second_app["total"] == 2
    assert account_counts == {
        "app_id": None,
        "counts": {**dict.fromkeys(STATUSES, 0), "queued": 6},
        "total": 6,
    }

    fresh, _, _ = await tenant_with_app(http, server.data_dir)
    response = await http.get(f"/api/v1/apps/{fresh.app_id}/delivery-counts", headers=fresh.bearer)
    assert response.json() == {
        "app_id": fresh.app_id,
        "counts": dict.fromkeys(STATUSES, 0),
        "total": 0,
    }


async def test_other_accounts_see_nothing(http: httpx2.AsyncClient, server: ServerProcess) -> None:
    owner, _, _ = await tenant_with_app(http, server.data_dir)
    await register_device(http, owner)
    notification_id = await send(http, owner, 1)
    intruder, _, _ = await tenant_with_app(http, server.data_dir)
    await register_device(http, intruder)

    response = await http.get(
        f"/api/v1/notifications/{notification_id}/deliveries", headers=intruder.bearer
    )
    assert native_error(response, 404, "not_found") == (
        f"No notification {notification_id} in this account"
    )
    response = await http.get(
        f"/api/v1/apps/{owner.app_id}/delivery-counts", headers=intruder.bearer
    )
    assert native_error(response, 404, "not_found") == f"No app {owner.app_id} in this account"
    response = await http.get("/api/v1/apps/no-such-app/delivery-counts", headers=owner.bearer)
    assert native_error(response, 404, "not_found") == "No app no-such-app in this account"
    response = await http.get("/api/v1/delivery-counts", headers=intruder.bearer)
    assert response.json()["total"] == 0
    for path in (
        f"/api/v1/notifications/{notification_id}/deliveries",
        "/api/v1/delivery-counts",
        f"/api/v1/apps/{owner.app_id}/delivery-counts",
    ):
        response = await http.get(path)
        native_error(response, 401, "unauthorized")


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["deliveries"]),
        (["deliveries"], ["show", "counts"]),
        (
            ["deliveries", "show"],
            ["NOTIFICATION_ID", "--account", "--status", "--limit", "--after-device-id", "--json"],
        ),
        (["deliveries", "counts"], ["--app", "--account", "--json"]),
    ],
)
def test_deliveries_commands_explain_themselves(
    tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    result = run_cli([*args, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for word in expected:
        assert word in result.stdout


async def test_cli_shows_and_counts_deliveries_of_one_account(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant, account_id, account_name = await tenant_with_app(http, server.data_dir)
    devices = [await register_device(http, tenant, f"d{i}") for i in range(3)]
    notification_id = await send(http, tenant, 3)
    other, other_id, _ = await tenant_with_app(http, server.data_dir)

    def cli(*args: str) -> Any:
        return run_cli(["deliveries", *args], server.data_dir)

    shown = cli("show", str(notification_id), "--account", str(account_id), "--json")
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [row["device_id"] for row in rows] == [device["id"] for device in devices]
    assert {row["transport"] for row in rows} == {"channel"}
    assert {row["status"] for row in rows} == {"queued"}

    # By name too; paging and a status filter.
    page = cli("show", str(notification_id), "--account", account_name, "--json", "--limit", "2")
    assert [json.loads(line)["device_id"] for line in page.stdout.splitlines()] == [
        devices[0]["id"],
        devices[1]["id"],
    ]
    rest = cli(
        "show",
        str(notification_id),
        "--account",
        account_name,
        "--json",
        "--after-device-id",
        str(devices[1]["id"]),
    )
    assert [json.loads(line)["device_id"] for line in rest.stdout.splitlines()] == [
        devices[2]["id"]
    ]
    none = cli("show", str(notification_id), "--account", account_name, "--status", "failed")
    assert none.returncode == 0 and "has no deliveries in status failed" in none.stdout

    table = cli("show", str(notification_id), "--account", str(account_id))
    assert table.returncode == 0, table.stderr
    assert f"Deliveries of notification {notification_id}" in table.stdout
    for word in ("transport", "status", "channel", "queued", str(devices[2]["id"])):
        assert word in table.stdout

    counted = cli("counts", "--account", str(account_id), "--json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == {
        "account_id": account_id,
        "app_id": None,
        "counts": {**dict.fromkeys(STATUSES, 0), "queued": 3},
        "total": 3,
    }
    by_app = cli("counts", "--account", str(account_id), "--app", tenant.app_id, "--json")
    assert json.loads(by_app.stdout)["total"] == 3
    human = cli("counts", "--account", account_name, "--app", tenant.app_id)
    assert human.returncode == 0, human.stderr
    assert f"Deliveries of account {account_id} ({account_name}), app {tenant.app_id}" in (
        human.stdout
    )
    assert "queued" in human.stdout and "total" in human.stdout

    # Tenant isolation: another account sees neither the notification nor the app.
    foreign = cli("show", str(notification_id), "--account", str(other_id))
    assert foreign.returncode == 1
    assert f"No notification {notification_id} in this account" in foreign.stderr
    foreign_app = cli("counts", "--account", str(other_id), "--app", tenant.app_id)
    assert foreign_app.returncode == 1
    assert f"No app {tenant.app_id} in this account" in foreign_app.stderr
    assert json.loads(cli("counts", "--account", str(other_id), "--json").stdout)["total"] == 0
    del other


def test_cli_account_selection(tmp_path: Path) -> None:
    none = run_cli(["deliveries", "counts"], tmp_path)
    assert none.returncode == 1
    assert "No accounts yet: create one with `pushgate account create NAME`" in none.stderr

    create_account(tmp_path, "only")
    alone = run_cli(["deliveries", "counts", "--json"], tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["total"] == 0

    create_account(tmp_path, "only")
    several = run_cli(["deliveries", "counts"], tmp_path)
    assert several.returncode == 2
    assert "There are 2 accounts: choose one with --account ID or NAME" in several.stderr
    same_name = run_cli(["deliveries", "counts", "--account", "only"], tmp_path)
    assert same_name.returncode == 2
    assert "Several accounts are named 'only' (ids 1, 2): use --account ID" in same_name.stderr
    assert run_cli(["deliveries", "counts", "--account", "2"], tmp_path).returncode == 0
    missing = run_cli(["deliveries", "show", "1", "--account", "nobody"], tmp_path)
    assert missing.returncode == 1
    assert "No account 'nobody'" in missing.stderr
    bad_status = run_cli(["deliveries", "show", "1", "--account", "1", "--status", "x"], tmp_path)
    assert bad_status.returncode == 2
    flat = " ".join(bad_status.stderr.replace("│", " ").split())
    assert "must be one of queued, sent, delivered, opened, failed, expired" in flat
    gone = run_cli(["deliveries", "show", "7", "--account", "1"], tmp_path)
    assert gone.returncode == 1 and "No notification 7 in this account" in gone.stderr


def test_new_account_helper_is_unchanged(server: ServerProcess) -> None:
    """The shared helper still makes accounts these tests can use next to their own."""
    assert new_account(server.data_dir).user_token
    assert SIGNUP_TEMPLATE
