"""`pushgate doctor --online` proves stored credentials with the (fake) providers: an access
token from FCM and HMS, a provider token APNs accepts; credentials the providers refuse fail
with what they said."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from e2e_support import Fakes, client_for, new_account
from provider_support import pem, service_account

from pushgate.testing.server import ServerProcess, run_cli


@pytest.fixture(scope="module")
def online_server(
    fakes: Fakes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("doctor-online"), fakes.env()) as srv:
        yield srv


async def app_with(http: httpx2.AsyncClient, server: ServerProcess, uploads: dict[str, Any]) -> str:
    tenant = new_account(server.data_dir)
    made = await http.post("/api/v1/apps", headers=tenant.bearer, json={"title": "doctor"})
    app_id: str = made.json()["id"]
    for platform, body in uploads.items():
        resp = await http.put(
            f"/api/v1/apps/{app_id}/credentials/{platform}", headers=tenant.bearer, json=body
        )
        assert resp.status_code == 201, resp.text
    return app_id


def online_checks(server: ServerProcess, fakes: Fakes) -> tuple[int, dict[str, dict[str, Any]]]:
    result = run_cli(["doctor", "--online", "--json"], server.data_dir, fakes.env())
    found = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, {check["name"]: check for check in found}


async def test_good_and_refused_credentials(online_server: ServerProcess, fakes: Fakes) -> None:
    async with client_for(online_server) as http:
        good = await app_with(
            http,
            online_server,
            {
                "ios": fakes.apns.credentials(topic="com.example.app"),
                "android": fakes.fcm.credentials(),
                "huawei": fakes.hms.credentials(),
            },
        )
        unknown_key = {
            **fakes.apns.credentials(topic="com.example.app"),
            "private_key": pem(ec.generate_private_key(ec.SECP256R1())),
        }
        stranger = service_account(
            pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            fakes.fcm.credentials()["service_account"]["token_uri"],
        )
        bad = await app_with(http, online_server, {"ios": unknown_key, "android": stranger})
    code, found = online_checks(online_server, fakes)
    for platform in ("ios", "android", "huawei"):
        assert found[f"credentials {good} {platform}"]["status"] == "ok", found
        assert found[f"credentials {good} {platform} online"]["status"] == "ok", found
    assert "access token" in found[f"credentials {good} android online"]["detail"]
    assert found[f"credentials {good} web online"]["status"] == "ok"
    ios = found[f"credentials {bad} ios online"]
    assert ios["status"] == "fail" and "InvalidProviderToken" in ios["detail"]
    assert ios["fix"].startswith(f"pushgate credentials set {bad} ios")
    assert found[f"credentials {bad} android online"]["status"] == "fail"
    assert code == 1
    # Without --online nothing is asked of the providers.
    offline = run_cli(["doctor", "--json"], online_server.data_dir, fakes.env())
    assert " online" not in offline.stdout
