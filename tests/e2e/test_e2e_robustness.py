"""Hostile or odd input gets a clear 4xx in the right format, never a 500."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx2
import pytest
from e2e_support import make_tenant, post_event, register_device

from pushgate.testing.server import ServerProcess

HUGE = 2**70


async def test_nul_in_tracker_value_is_refused_and_does_not_hurt_others(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    bad = post_event(http, tenant, {"email": "a\u0000b", "country": "NL"})
    good = [post_event(http, tenant) for _ in range(20)]
    results = await asyncio.gather(bad, *good)
    assert results[0].status_code == 400
    assert results[0].json()["error"] is True
    assert "NUL" in results[0].json()["msg"]
    assert all(r.status_code == 201 for r in results[1:])


async def test_too_long_rendered_message(http: httpx2.AsyncClient, server: ServerProcess) -> None:
    tenant = await make_tenant(http, server.data_dir)
    response = await post_event(http, tenant, {"email": "x" * 20_000, "country": "NL"})
    assert response.status_code == 400
    assert "longer than" in response.json()["msg"]


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/channel/poll?since={HUGE}",
        "/api/v1/channel/poll?since=-1",
        "/api/v1/channel/poll?since=abc",
        f"/api/v1/notifications/{HUGE}/deliveries",
        "/api/v1/notifications/0/deliveries",
    ],
)
async def test_out_of_range_ids_are_400(
    http: httpx2.AsyncClient, server: ServerProcess, path: str
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant)
    headers = (
        {"Authorization": f"Bearer {device['device_token']}"}
        if "channel" in path
        else tenant.bearer
    )
    response = await http.get(path, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_input"


async def test_ack_with_huge_ids_is_400(http: httpx2.AsyncClient, server: ServerProcess) -> None:
    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant)
    response = await http.post(
        "/api/v1/channel/ack",
        json={"ids": [HUGE]},
        headers={"Authorization": f"Bearer {device['device_token']}"},
    )
    assert response.status_code == 400, response.text


async def test_device_name_with_nul_is_400(http: httpx2.AsyncClient, server: ServerProcess) -> None:
    tenant = await make_tenant(http, server.data_dir)
    response = await http.post(
        "/api/v1/devices", headers=tenant.bearer, json={"platform": "channel", "name": "a\u0000"}
    )
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["error"]["message"]


async def test_unknown_native_path_and_wrong_platform(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    missing = await http.get("/api/v1/nope", headers=tenant.bearer)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    response = await http.post("/api/v1/devices", headers=tenant.bearer, json={"platform": "fax"})
    assert response.status_code == 400
    assert "platform" in response.json()["error"]["message"]


async def test_openapi_and_docs_are_served(http: httpx2.AsyncClient) -> None:
    spec = await http.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in ("/api/v1/devices", "/api/v1/channel/poll", "/api/v1/channel/ack"):
        assert path in paths
    docs = await http.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


async def test_many_registrations_at_once_all_succeed(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    """The writers of one process take turns on SQLite's write lock instead of sleeping in its
    busy handler, where one of them could starve past the busy timeout (a 500 before)."""
    tenant = await make_tenant(http, server.data_dir)
    devices = await asyncio.gather(*(register_device(http, tenant, f"d{i}") for i in range(300)))
    assert len({device["id"] for device in devices}) == 300


async def test_a_write_lock_held_past_the_busy_timeout_answers_503(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    """Another process (a backup, a CLI command) holds SQLite's write lock for longer than the
    server waits: the request is answered 503 in its face's format, not 500."""
    tenant = await make_tenant(http, server.data_dir)
    other = sqlite3.connect(server.data_dir / "pushgate.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        response = await http.post(
            "/api/v1/devices", headers=tenant.bearer, json={"platform": "channel"}, timeout=30
        )
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["message"] == (
        "The database is unavailable right now, please retry"
    )
    await register_device(http, tenant)  # and the next one succeeds
