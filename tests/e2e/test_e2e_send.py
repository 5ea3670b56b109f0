"""The native send endpoint: a notification with every provider option, and clear 4xx for bad
input."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from e2e_support import Tenant, add_app, new_account, register_device, wait_delivery_status

from pushgate.testing.server import ServerProcess


@pytest.fixture
async def tenant(http: httpx2.AsyncClient, server: ServerProcess) -> Tenant:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    return tenant


async def test_send_reaches_the_accounts_devices(http: httpx2.AsyncClient, tenant: Tenant) -> None:
    await register_device(http, tenant)
    body = {
        "app_id": tenant.app_id,
        "title": "Sale",
        "message": "50% off today",
        "data": {"order": 42, "kind": "promo"},
        "image_url": "https://cdn.example.com/sale.png",
        "deep_link": "myapp://sale",
        "sound": "default",
        "badge": 3,
        "collapse_key": "sale",
        "priority": "normal",
        "ttl_seconds": 600,
    }
    resp = await http.post("/api/v1/notifications", headers=tenant.bearer, json=body)
    assert resp.status_code == 201, resp.text
    notification_id = resp.json()["id"]
    rows = await wait_delivery_status(http, tenant, notification_id, "queued")
    assert len(rows) == 1
    listed = (await http.get("/api/v1/notifications", headers=tenant.bearer)).json()
    (first,) = [n for n in listed["notifications"] if n["id"] == notification_id]
    assert first["title"] == "Sale" and first["message"] == "50% off today"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"image_url": "http://insecure.example.com/x.png"}, "image_url must be an https"),
        ({"badge": -1}, "badge"),
        ({"priority": "urgent"}, "priority"),
        ({"message": ""}, "message"),
        ({"colour": "red"}, "colour"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"data": {"blob": "x" * 5000}}, "data is larger than 4096 bytes"),
        ({"collapse_key": "k" * 65}, "collapse_key"),
    ],
)
async def test_bad_input_is_a_clear_400(
    http: httpx2.AsyncClient, tenant: Tenant, change: dict[str, Any], expected: str
) -> None:
    body = {"app_id": tenant.app_id, "message": "hello", **change}
    resp = await http.post("/api/v1/notifications", headers=tenant.bearer, json=body)
    assert resp.status_code == 400, resp.text
    assert expected in resp.json()["error"]["message"]


async def test_another_accounts_app_is_not_found(
    http: httpx2.AsyncClient, tenant: Tenant, server: ServerProcess
) -> None:
    other = new_account(server.data_dir)
    body = {"app_id": tenant.app_id, "message": "hello"}
    resp = await http.post("/api/v1/notifications", headers=other.bearer, json=body)
    assert resp.status_code == 404, resp.text
    unauthenticated = await http.post("/api/v1/notifications", json=body)
    assert unauthenticated.status_code == 401
