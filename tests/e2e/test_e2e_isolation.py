"""Separate data directories never mix, and the ServerProcess helper itself behaves."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx2
import pytest
from e2e_support import ServerFactory, make_tenant_sync, new_account

from pushgate.testing.server import ServerProcess, ServerStartError, free_port

INVALID_USER_TOKEN = {"msg": "Invalid User Token", "error": True, "status": 401}
WRONG_APP = {"msg": "Wrong APPID or APPSECRET", "error": True, "status": 401}


def test_two_data_dirs_never_mix(make_server: ServerFactory, tmp_path: Path) -> None:
    server_a = make_server(tmp_path / "a")
    server_b = make_server(tmp_path / "b")
    tenant_a = make_tenant_sync(server_a)

    with httpx2.Client(base_url=server_b.url, timeout=10.0, trust_env=False) as b:
        resp = b.get("/v1/apps/list", headers=tenant_a.user_headers)
        assert (resp.status_code, resp.json()) == (401, INVALID_USER_TOKEN)
        resp = b.post("/v1/apps/add", headers=tenant_a.user_headers, json={"title": "x"})
        assert (resp.status_code, resp.json()) == (401, INVALID_USER_TOKEN)
        resp = b.get("/v1/events/list", headers=tenant_a.app_headers)
        assert (resp.status_code, resp.json()) == (401, WRONG_APP)
        resp = b.post(
            "/v1/post",
            headers=tenant_a.app_headers,
            json={"event": "signups", "trackers": {"email": "a", "country": "b"}},
        )
        assert (resp.status_code, resp.json()) == (401, WRONG_APP)
        resp = b.get("/api/v1/notifications", headers=tenant_a.bearer)
        assert resp.status_code == 401, resp.text

    # and an account of B is unknown to A
    tenant_b = new_account(server_b.data_dir)
    with httpx2.Client(base_url=server_a.url, timeout=10.0, trust_env=False) as a:
        resp = a.get("/v1/apps/list", headers=tenant_b.user_headers)
        assert (resp.status_code, resp.json()) == (401, INVALID_USER_TOKEN)
        resp = a.get("/v1/apps/list", headers=tenant_a.user_headers)
        assert resp.status_code == 200
        assert [app["appID"] for app in resp.json()] == [tenant_a.app_id]


def test_data_survives_a_restart_on_the_same_port(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(tmp_path / "data")
    tenant = make_tenant_sync(server)
    port = server.port
    server.restart()
    assert server.port == port
    resp = httpx2.get(
        f"{server.url}/v1/events/list", headers=tenant.app_headers, timeout=10.0, trust_env=False
    )
    assert resp.status_code == 200
    assert [event["title"] for event in resp.json()] == ["signups"]
    server.kill()
    assert not server.running
    server.start()
    resp = httpx2.get(f"{server.url}/api/v1/health", timeout=10.0, trust_env=False)
    assert (resp.status_code, resp.json()["status"]) == (200, "ok")


def test_server_process_logs_to_its_data_dir(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(tmp_path / "data")
    server.stop()
    assert f"127.0.0.1:{server.port}" in server.log_path.read_text()
    assert server.log_path.parent == server.data_dir


def test_server_process_reports_a_crashing_server(tmp_path: Path) -> None:
    # an invalid setting must make the server refuse to start
    server = ServerProcess(tmp_path / "bad", {"PUSHGATE_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ServerStartError, match="exited with code"):
        server.start()
    assert not server.running
    assert server.output().strip()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
