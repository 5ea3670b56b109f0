"""The whole Instapush v1 flow against a real server, exactly as the reference's curl examples."""

from __future__ import annotations

import json
import time

import httpx2
import pytest
from e2e_support import (
    SIGNUP_MESSAGE,
    SIGNUP_TEMPLATE,
    SIGNUP_TRACKERS,
    make_tenant,
    new_account,
    post_ok,
    register_device,
    ws_connect,
    ws_expect_silence,
    ws_recv,
    ws_until_ready,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pushgate.testing.server import ServerProcess, run_cli

CREATED_EVENT = {"msg": "Event Created Succesfully", "error": False, "status": 201}
SENT = {"msg": "Notification Sent Succesfully", "error": False, "status": 201}


@pytest.mark.parametrize("prefix", ["/v1", ""], ids=["v1", "latest"])
async def test_full_flow_reaches_websocket_device(
    server: ServerProcess, http: httpx2.AsyncClient, prefix: str
) -> None:
    tenant = new_account(server.data_dir)

    # apps/add
    resp = await http.post(
        f"{prefix}/apps/add",
        headers={"x-instapush-token": tenant.user_token, "Content-Type": "application/json"},
        content=b'{"title":"test"}',
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"msg", "id", "secret", "error", "status"}
    assert body["msg"] == "App Created Successfully"
    assert body["error"] is False and body["status"] == 201
    assert isinstance(body["id"], str) and body["id"]
    assert isinstance(body["secret"], str) and body["secret"]
    app_id, app_secret = body["id"], body["secret"]
    tenant.app_id, tenant.app_secret = app_id, app_secret

    # apps/list
    resp = await http.get(f"{prefix}/apps/list", headers={"x-instapush-token": tenant.user_token})
    assert resp.status_code == 200, resp.text
    assert resp.json() == [{"title": "test", "appID": app_id, "appSecret": app_secret}]

    # events/add (the reference's body, with its closing brace)
    app_headers = {
        "x-instapush-appid": app_id,
        "x-instapush-appsecret": app_secret,
        "Content-Type": "application/json",
    }
    resp = await http.post(
        f"{prefix}/events/add",
        headers=app_headers,
        content=(
            b'{"title":"signups","trackers":["email","country"],'
            b'"message":"{email} has signed up from {country}"}'
        ),
    )
    assert resp.status_code == 201, resp.text
    assert resp.json() == CREATED_EVENT

    # events/list
    resp = await http.get(f"{prefix}/events/list", headers=app_headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == [{"title": "signups", "trackers": ["email", "country"]}]

    # a channel device, connected over WebSocket
    device = await register_device(http, tenant)
    async with ws_connect(server, token=device["device_token"]) as ws:
        backlog, ready = await ws_until_ready(ws)
        assert backlog == []
        assert ready == {"type": "ready", "device_id": device["id"], "backlog": 0}

        started = time.monotonic()
        resp = await http.post(
            f"{prefix}/post",
            headers=app_headers,
            json={"event": "signups", "trackers": SIGNUP_TRACKERS},
        )
        assert resp.status_code == 201, resp.text
        assert resp.json() == SENT
        message = await ws_recv(ws, timeout=1.0)
        elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert message["type"] == "notification"
    assert message["message"] == SIGNUP_MESSAGE
    assert message["event"] == "signups"
    assert message["app_id"] == app_id
    assert message["data"] == SIGNUP_TRACKERS
    assert isinstance(message["id"], int)
    assert message["created_at"] and message["expires_at"]


async def test_header_names_are_case_insensitive(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = new_account(server.data_dir)
    resp = await http.post(
        "/v1/apps/add", headers={"X-INSTAPUSH-TOKEN": tenant.user_token}, json={"title": "Caps"}
    )
    assert resp.status_code == 201, resp.text
    app_id, app_secret = resp.json()["id"], resp.json()["secret"]
    resp = await http.get("/v1/apps/list", headers={"X-Instapush-Token": tenant.user_token})
    assert resp.status_code == 200
    assert [app["appID"] for app in resp.json()] == [app_id]

    upper = {"X-INSTAPUSH-APPID": app_id, "X-INSTAPUSH-APPSECRET": app_secret}
    mixed = {"X-Instapush-AppId": app_id, "x-InstaPush-appSECRET": app_secret}
    payload = {"title": "signups", "trackers": ["email", "country"], "message": SIGNUP_TEMPLATE}
    resp = await http.post("/v1/events/add", headers=upper, json=payload)
    assert resp.status_code == 201, resp.text
    resp = await http.get("/events/list", headers=mixed)
    assert resp.status_code == 200, resp.text
    assert [event["title"] for event in resp.json()] == ["signups"]

    device = await register_device(http, tenant)
    async with ws_connect(server, token=device["device_token"]) as ws:
        await ws_until_ready(ws)
        resp = await http.post(
            "/post", headers=mixed, json={"event": "signups", "trackers": SIGNUP_TRACKERS}
        )
        assert resp.status_code == 201, resp.text
        assert resp.json() == SENT
        assert (await ws_recv(ws, 2.0))["message"] == SIGNUP_MESSAGE


async def test_every_device_of_the_account_receives_and_other_accounts_do_not(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    other = await make_tenant(http, server.data_dir)
    first = await register_device(http, tenant, "first")
    second = await register_device(http, tenant, "second")
    stranger = await register_device(http, other, "stranger")
    async with (
        ws_connect(server, token=first["device_token"]) as ws1,
        # the device token may also be given as a bearer header
        ws_connect(server, headers={"Authorization": f"Bearer {second['device_token']}"}) as ws2,
        ws_connect(server, token=stranger["device_token"]) as ws3,
    ):
        for ws in (ws1, ws2, ws3):
            await ws_until_ready(ws)
        await post_ok(http, tenant)
        one, two = await ws_recv(ws1, 2.0), await ws_recv(ws2, 2.0)
        assert one["message"] == two["message"] == SIGNUP_MESSAGE
        assert one["id"] == two["id"]
        await ws_expect_silence(ws3, 0.5)


async def test_websocket_rejects_a_wrong_device_token(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = new_account(server.data_dir)
    # the user token is not a device token
    for token in ("dvt_not-a-real-token", tenant.user_token):
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            async with ws_connect(server, token=token) as ws:
                await ws_recv(ws, 2.0)


def test_cli_account_create_json(server: ServerProcess) -> None:
    result = run_cli(["account", "create", "cli-json", "--json"], server.data_dir)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    account = json.loads(lines[0])
    assert account["name"] == "cli-json"
    assert isinstance(account["user_token"], str) and account["user_token"]
    assert "id" in account
