"""Provider credentials through the native API: checked at upload, stored encrypted, shown
without secrets, isolated per account; the Web Push public key for browsers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from e2e_support import Tenant, add_app, new_account

from pushgate.domain.credentials import b64url_decode
from pushgate.testing.server import ServerProcess, cli_env, run_cli


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def apns_upload() -> dict[str, Any]:
    return {
        "key_id": "ABC123DEFG",
        "team_id": "TEAM123456",
        "topic": "com.example.app",
        "environment": "sandbox",
        "private_key": _pem(ec.generate_private_key(ec.SECP256R1())),
    }


def fcm_upload() -> dict[str, Any]:
    return {
        "service_account": {
            "type": "service_account",
            "project_id": "pushgate-test",
            "private_key_id": "k1",
            "private_key": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "client_email": "sender@pushgate-test.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    }


@pytest.fixture
async def tenant(http: httpx2.AsyncClient, server: ServerProcess) -> Tenant:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    return tenant


def _url(tenant: Tenant, rest: str = "") -> str:
    return f"/api/v1/apps/{tenant.app_id}/credentials{rest}"


def _message(resp: httpx2.Response) -> str:
    message: str = resp.json()["error"]["message"]
    return message


async def test_upload_each_platform_and_list_without_secrets(
    http: httpx2.AsyncClient, tenant: Tenant
) -> None:
    uploads = {
        "ios": apns_upload(),
        "android": fcm_upload(),
        "huawei": {"app_id": "101234567", "client_secret": "s3cr3t-value"},
    }
    for platform, body in uploads.items():
        resp = await http.put(_url(tenant, f"/{platform}"), headers=tenant.bearer, json=body)
        assert resp.status_code == 201, resp.text
        assert resp.json()["platform"] == platform
    again = await http.put(_url(tenant, "/ios"), headers=tenant.bearer, json=apns_upload())
    assert again.status_code == 200, again.text
    listed = await http.get(_url(tenant), headers=tenant.bearer)
    assert listed.status_code == 200, listed.text
    by_platform = {c["platform"]: c["public"] for c in listed.json()["credentials"]}
    assert by_platform["ios"] == {
        "key_id": "ABC123DEFG",
        "team_id": "TEAM123456",
        "topic": "com.example.app",
        "environment": "sandbox",
    }
    assert by_platform["android"] == {
        "project_id": "pushgate-test",
        "client_email": "sender@pushgate-test.iam.gserviceaccount.com",
    }
    assert by_platform["huawei"] == {"app_id": "101234567"}
    assert "PRIVATE KEY" not in listed.text and "s3cr3t" not in listed.text


async def test_secrets_are_encrypted_at_rest(
    http: httpx2.AsyncClient, tenant: Tenant, server: ServerProcess
) -> None:
    body = {"app_id": "101234567", "client_secret": "plain-secret-that-must-not-be-stored"}
    resp = await http.put(_url(tenant, "/huawei"), headers=tenant.bearer, json=body)
    assert resp.status_code == 201, resp.text
    with sqlite3.connect(server.data_dir / "pushgate.db") as conn:
        stored = " ".join(
            str(row) for row in conn.execute("SELECT secret_enc, public FROM app_credentials")
        )
    assert "plain-secret-that-must-not-be-stored" not in stored


@pytest.mark.parametrize(
    ("platform", "body", "expected"),
    [
        ("ios", {**apns_upload(), "private_key": "not a key"}, "not an unencrypted PEM"),
        (
            "ios",
            {**apns_upload(), "private_key": _pem(rsa.generate_private_key(65537, 2048))},
            "EC key on P-256",
        ),
        ("ios", {**apns_upload(), "key_id": "short"}, "key_id must be 10"),
        ("ios", {k: v for k, v in apns_upload().items() if k != "topic"}, "'topic' is required"),
        ("android", {"service_account": {"type": "service_account"}}, "'project_id' is required"),
        ("android", {"project_id": "x"}, "unknown field"),
        (
            "android",
            {"service_account": {**fcm_upload()["service_account"], "type": "user"}},
            "'type' must be 'service_account'",
        ),
        ("huawei", {"app_id": "abc", "client_secret": "x"}, "numeric app id"),
        ("web", {"subject": "ops@example.com", "private_key": "AAAA"}, "mailto:"),
        ("web", {"subject": "mailto:ops@example.com", "private_key": "AAAA"}, "32-byte"),
    ],
)
async def test_bad_credentials_are_refused_at_upload(
    http: httpx2.AsyncClient, tenant: Tenant, platform: str, body: dict[str, Any], expected: str
) -> None:
    resp = await http.put(_url(tenant, f"/{platform}"), headers=tenant.bearer, json=body)
    assert resp.status_code == 400, resp.text
    assert expected in _message(resp)


async def test_unknown_platform_and_non_object(http: httpx2.AsyncClient, tenant: Tenant) -> None:
    resp = await http.put(_url(tenant, "/channel"), headers=tenant.bearer, json={})
    assert resp.status_code == 400, resp.text
    resp = await http.put(_url(tenant, "/ios"), headers=tenant.bearer, json=["x"])
    assert resp.status_code == 400, resp.text


async def test_web_push_public_key_is_generated_once_and_public(
    http: httpx2.AsyncClient, tenant: Tenant
) -> None:
    first = await http.get(f"/api/v1/apps/{tenant.app_id}/web-push/public-key")
    assert first.status_code == 200, first.text
    key = first.json()["public_key"]
    point = b64url_decode(key)
    assert len(point) == 65 and point[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    second = await http.get(f"/api/v1/apps/{tenant.app_id}/web-push/public-key")
    assert second.json()["public_key"] == key
    listed = await http.get(_url(tenant), headers=tenant.bearer)
    (web,) = listed.json()["credentials"]
    assert web["public"] == {"subject": "mailto:admin@localhost", "public_key": key}
    regenerated = await http.post(
        _url(tenant, "/web/generate"),
        headers=tenant.bearer,
        json={"subject": "mailto:ops@example.com"},
    )
    assert regenerated.status_code == 201, regenerated.text
    assert regenerated.json()["public"]["public_key"] != key
    third = await http.get(f"/api/v1/apps/{tenant.app_id}/web-push/public-key")
    assert third.json()["public_key"] == regenerated.json()["public"]["public_key"]
    missing = await http.get("/api/v1/apps/nosuchapp/web-push/public-key")
    assert missing.status_code == 404, missing.text


async def test_uploaded_vapid_key_keeps_its_public_key(
    http: httpx2.AsyncClient, tenant: Tenant
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    import base64

    body = {
        "subject": "https://example.com/contact",
        "private_key": base64.urlsafe_b64encode(scalar).rstrip(b"=").decode(),
    }
    resp = await http.put(_url(tenant, "/web"), headers=tenant.bearer, json=body)
    assert resp.status_code == 200, resp.text  # replaces the key pair the app was created with
    expected = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    public = (await http.get(f"/api/v1/apps/{tenant.app_id}/web-push/public-key")).json()
    assert b64url_decode(public["public_key"]) == expected


async def test_delete_and_isolation_between_accounts(
    http: httpx2.AsyncClient, tenant: Tenant, server: ServerProcess
) -> None:
    resp = await http.put(_url(tenant, "/ios"), headers=tenant.bearer, json=apns_upload())
    assert resp.status_code == 201, resp.text
    other = new_account(server.data_dir)
    for method, path in (
        ("GET", _url(tenant)),
        ("PUT", _url(tenant, "/ios")),
        ("DELETE", _url(tenant, "/ios")),
        ("POST", _url(tenant, "/web/generate")),
    ):
        body = apns_upload() if method == "PUT" else None
        resp = await http.request(method, path, headers=other.bearer, json=body)
        assert resp.status_code == 404, (method, path, resp.text)
    unauthenticated = await http.get(_url(tenant))
    assert unauthenticated.status_code == 401
    deleted = await http.delete(_url(tenant, "/ios"), headers=tenant.bearer)
    assert deleted.status_code == 204
    again = await http.delete(_url(tenant, "/ios"), headers=tenant.bearer)
    assert again.status_code == 404
    listed = await http.get(_url(tenant), headers=tenant.bearer)
    # What is left is the VAPID key pair every app gets when it is created.
    assert [c["platform"] for c in listed.json()["credentials"]] == ["web"]


async def test_cli_sets_shows_and_deletes(
    http: httpx2.AsyncClient, tenant: Tenant, server: ServerProcess, tmp_path: Path
) -> None:
    upload = apns_upload()
    p8 = tmp_path / "AuthKey_ABC123DEFG.p8"
    p8.write_text(upload["private_key"])
    args = ["credentials", "set", tenant.app_id, "ios", "--file", str(p8)]
    options = ["--key-id", "ABC123DEFG", "--team-id", "TEAM123456", "--topic", "com.example.app"]
    stored = await asyncio.to_thread(run_cli, [*args, *options, "--json"], server.data_dir)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["public"]["environment"] == "production"
    service_account = tmp_path / "service-account.json"
    service_account.write_text(json.dumps(fcm_upload()["service_account"]))
    fcm = await asyncio.to_thread(
        run_cli,
        ["credentials", "set", tenant.app_id, "android", "-f", str(service_account)],
        server.data_dir,
    )
    assert fcm.returncode == 0, fcm.stderr
    shown = await asyncio.to_thread(
        run_cli, ["credentials", "show", tenant.app_id, "--json"], server.data_dir
    )
    assert [row["platform"] for row in json.loads(shown.stdout)] == ["android", "ios", "web"]
    assert "PRIVATE KEY" not in shown.stdout
    # What the CLI stored, the server sees (within its short cache).
    listed = await http.get(_url(tenant), headers=tenant.bearer)
    assert {c["platform"] for c in listed.json()["credentials"]} == {"android", "ios", "web"}

    vapid = await asyncio.to_thread(
        run_cli,
        ["credentials", "generate-vapid", tenant.app_id, "--subject", "mailto:a@example.com"],
        server.data_dir,
    )
    assert vapid.returncode == 0, vapid.stderr
    assert len(b64url_decode(vapid.stdout.strip())) == 65

    bad = tmp_path / "bad.p8"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    refused = await asyncio.to_thread(
        run_cli,
        ["credentials", "set", tenant.app_id, "ios", "-f", str(bad), *options],
        server.data_dir,
    )
    assert refused.returncode == 2 and "not an unencrypted PEM" in refused.stderr
    unknown = await asyncio.to_thread(
        run_cli, ["credentials", "show", "no-such-app"], server.data_dir
    )
    assert unknown.returncode == 1 and "No app no-such-app" in unknown.stderr
    deleted = await asyncio.to_thread(
        run_cli, ["credentials", "delete", tenant.app_id, "ios"], server.data_dir
    )
    assert deleted.returncode == 0, deleted.stderr
    helped = await asyncio.to_thread(run_cli, ["credentials", "set", "--help"], server.data_dir)
    assert "--key-id" in helped.stdout and "service account" in helped.stdout


async def test_providers_doc_runs_as_written(
    http: httpx2.AsyncClient, tenant: Tenant, server: ServerProcess, tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[2]
    blocks = re.findall(
        r"```bash\n(.*?)```", (root / "docs" / "providers.md").read_text(), flags=re.DOTALL
    )
    env = cli_env(server.data_dir)
    env.update(
        PUSHGATE=server.url,
        USER_TOKEN=tenant.user_token,
        APP_ID=tenant.app_id,
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    script = "set -euo pipefail\n" + "\necho '-----'\n".join(blocks)
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _setup, apns, public_key, listing, refused, sent = result.stdout.split("-----\n")
    assert json.loads(apns)["public"] == {
        "key_id": "ABC123DEFG",
        "team_id": "DEF123GHIJ",
        "topic": "com.example.app",
        "environment": "sandbox",
    }
    assert len(b64url_decode(json.loads(public_key)["public_key"])) == 65
    listed_json, deleted = listing.strip()[:-3], listing.strip()[-3:]
    assert {c["platform"] for c in json.loads(listed_json)["credentials"]} == {"ios", "web"}
    assert deleted == "204"
    assert json.loads(refused)["error"]["message"] == (
        "HMS credentials: app_id must be the numeric app id from AppGallery Connect"
    )
    assert isinstance(json.loads(sent)["id"], int)
