"""`pushgate subscribers import` as a user runs it: the real command line on CSV and NDJSON
files, next to a real server that serves what was imported; on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from e2e_support import Tenant, new_account

from pushgate.testing.server import ServerProcess, cli_env, run_cli

ROOT = Path(__file__).resolve().parents[2]
IOS_1, IOS_2, IOS_3 = "ab" * 32, "cd" * 32, "ef" * 32
ANDROID_1 = "F" * 152


def make_app(data_dir: Path, account_id: int, env: dict[str, str] | None = None) -> str:
    result = run_cli(
        ["app", "create", "Shop", "--account", str(account_id), "--json"], data_dir, env
    )
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["id"])


def run_import(
    data_dir: Path, app: str, path: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(["subscribers", "import", "--app", app, str(path), *options], data_dir, env)


def complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines of stderr but the data directory's (every command names it first)."""
    return [line for line in result.stderr.splitlines() if not line.startswith("Data directory:")]


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def web_subscription(endpoint: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {
        "endpoint": endpoint,
        "keys": {
            "p256dh": base64.urlsafe_b64encode(point).decode().rstrip("="),
            "auth": base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
        },
    }


@pytest.fixture
def tenant(server: ServerProcess) -> Tenant:
    found = new_account(server.data_dir)
    found.app_id = make_app(server.data_dir, found.account_id)
    return found


def api(server: ServerProcess, tenant: Tenant, path: str) -> Any:
    with httpx2.Client(base_url=server.url, timeout=10.0, trust_env=False) as client:
        response = client.get(path, headers=tenant.bearer)
    assert response.status_code == 200, response.text
    return response.json()


CSV = f"""external_id,INSIDER.email,identifiers.member_no,language,country,optin_email,tags,\
c_plan,c_age:number,c_zip:string,c_birthday:date,c_sizes,platform,token,device_model
u-1,ann@example.com,M-1,nl,NL,yes,vip|beta,pro,42,01234,1990-05-01,"[38, 39]",ios,{IOS_1},iPhone
u-1,,,,,,,,,,,,android,{ANDROID_1},Pixel
u-2,bob@example.com,,en,GB,,,free,,,,,,,
u-3,carl@example,,en,GB,,,,,,,,,,
u-4,dan@example.com,,,,,,,,,,,ios,{IOS_2},"two
lines"
u-5,eve@example.com,,,,maybe,,,,,,,,,
u-6,fay@example.com,,,,,,,,,,,huawei,short,
"""


def test_a_csv_file_is_imported_served_and_imported_again_without_changes(
    server: ServerProcess, tenant: Tenant, tmp_path: Path
) -> None:
    other_app = make_app(server.data_dir, tenant.account_id)
    path = tmp_path / "subscribers.csv"
    path.write_text(CSV)

    first = run_import(server.data_dir, tenant.app_id, path)
    assert first.returncode == 1, first.stderr
    assert complaints(first) == [
        "line 5: identifiers.INSIDER.email must be an address like ann@example.com: the part "
        "after '@' must be a domain name with a dot, such as example.com",
        "line 8: optin_email: 'maybe' is not true or false",
        "line 9: devices[0].token must be the HMS push token of 32 to 4096 characters; got 5 "
        "characters",
    ]
    assert first.stdout.splitlines()[1:] == [
        "  subscribers: 3 new, 0 updated, 0 unchanged",
        "  devices:     3 new, 0 updated, 0 unchanged",
        "  rejected:    3 rows (listed on stderr)",
    ]

    found = api(server, tenant, f"/api/v1/apps/{tenant.app_id}/subscribers?member_no=M-1")
    (ann,) = found["subscribers"]
    assert ann["identifiers"] == {
        "external_id": "u-1",
        "email": "ann@example.com",
        "member_no": "M-1",
    }
    assert ann["attributes"] == {
        "c_age": 42,
        "c_birthday": {"date": "1990-05-01T00:00:00Z"},
        "c_plan": "pro",
        "c_sizes": [38, 39],
        "c_zip": "01234",
    }
    assert (ann["language"], ann["country"], ann["tags"]) == ("nl", "NL", ["beta", "vip"])
    assert ann["optins"]["email"] is True and ann["last_active_at"] is None
    listed = api(server, tenant, f"/api/v1/devices?app_id={tenant.app_id}")["devices"]
    assert sorted((d["platform"], d["model"], d["app_id"]) for d in listed) == [
        ("android", "Pixel", tenant.app_id),
        ("ios", "iPhone", tenant.app_id),
        ("ios", "two\nlines", tenant.app_id),
    ]
    assert sorted(ann["device_ids"]) == sorted(
        d["id"] for d in listed if d["subscriber_id"] == ann["id"]
    )
    assert len(ann["device_ids"]) == 2
    assert api(server, tenant, f"/api/v1/devices?app_id={other_app}")["devices"] == []

    everyone = api(server, tenant, f"/api/v1/apps/{tenant.app_id}/subscribers")["subscribers"]
    again = run_import(server.data_dir, tenant.app_id, path, "--json")
    assert again.returncode == 1
    counts = summary(again)
    assert counts["subscribers"] == {"new": 0, "updated": 0, "unchanged": 3}
    assert counts["devices"] == {"new": 0, "updated": 0, "unchanged": 3}
    assert (counts["rows"], counts["rejected"]) == (7, 3)
    assert api(server, tenant, f"/api/v1/apps/{tenant.app_id}/subscribers")["subscribers"] == (
        everyone
    )
    assert api(server, tenant, f"/api/v1/devices?app_id={tenant.app_id}")["devices"] == listed

    rejects = tmp_path / "rejected.txt"
    third = run_import(server.data_dir, tenant.app_id, path, "--rejects", str(rejects))
    assert third.returncode == 1 and complaints(third) == []
    assert rejects.read_text().splitlines() == complaints(first)
    assert "(listed in" in third.stdout


def test_an_ndjson_file_with_web_devices_and_vendor_identifiers(
    server: ServerProcess, tenant: Tenant, tmp_path: Path
) -> None:
    public = web_subscription("https://8.8.8.8/push/v1/abc")
    lines = [
        {
            "identifiers": {"INSIDER.external_id": "w-1", "INSIDER.phone_number": "+31612345678"},
            "attributes": {"d_wp_browser": "Edg"},
            "devices": [
                {"platform": "web", "subscription": public, "language": "en_GB"},
                {"platform": "ios", "token": IOS_3, "app_id": tenant.app_id},
            ],
        },
        {
            "identifiers": {"external_id": "w-2"},
            "devices": [
                {"platform": "web", "subscription": web_subscription("https://127.0.0.1/x")}
            ],
        },
        {"identifiers": {"external_id": "w-3"}, "events": ["install"]},
    ]
    path = tmp_path / "people.jsonl"
    text = "\n".join(json.dumps(line) for line in lines[:2]) + "\n\n{not json\n"
    path.write_text(text + json.dumps(lines[2]) + "\n")

    result = run_import(server.data_dir, tenant.app_id, path, "--json")
    assert result.returncode == 1
    reasons = complaints(result)
    assert reasons[0].startswith("line 2: devices[0].subscription.endpoint is refused: 127.0.0.1")
    assert reasons[1].startswith("line 4: not JSON:")
    assert reasons[2].startswith("line 5: events are not imported")
    counts = summary(result)
    assert (counts["rows"], counts["rejected"], counts["devices"]["new"]) == (4, 3, 2)

    found = api(
        server, tenant, f"/api/v1/apps/{tenant.app_id}/subscribers?phone_number=%2B31612345678"
    )
    (subscriber,) = found["subscribers"]
    assert subscriber["identifiers"] == {"external_id": "w-1", "phone_number": "+31612345678"}
    listed = api(server, tenant, f"/api/v1/devices?app_id={tenant.app_id}")["devices"]
    web = next(d for d in listed if d["platform"] == "web")
    assert (web["address_hint"], web["language"]) == ("https://8.8.8.8", "en-GB")
    assert {d["subscriber_id"] for d in listed} == {subscriber["id"]}


def test_nothing_is_imported_when_the_file_or_the_app_is_wrong(tmp_path: Path) -> None:
    account = json.loads(run_cli(["account", "create", "acme", "--json"], tmp_path).stdout)
    app = make_app(tmp_path, account["id"])
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("external_id,favourite_colour\nu-1,blue\n")
    result = run_import(tmp_path, app, bad_header)
    assert result.returncode == 2
    assert "column 'favourite_colour' is not an import column" in result.stderr
    good = tmp_path / "good.txt"
    good.write_text('{"identifiers": {"external_id": "u-1"}}\n')
    result = run_import(tmp_path, app, good)
    assert result.returncode == 2 and "--format csv or --format ndjson" in result.stderr
    result = run_import(tmp_path, "no-such-app", good, "--format", "ndjson")
    assert result.returncode == 2 and "No app no-such-app" in result.stderr
    counted = run_cli(
        ["subscribers", "import", "--app", app, str(good), "--format", "ndjson"], tmp_path
    )
    assert counted.returncode == 0, counted.stderr
    assert "1 new" in counted.stdout and complaints(counted) == []


def test_help_explains_the_formats_and_the_exit_status(tmp_path: Path) -> None:
    result = run_cli(["subscribers", "import", "--help"], tmp_path, {"COLUMNS": "120"})
    assert result.returncode == 0
    for words in (
        "CSV",
        "NDJSON",
        "INSIDER.<key>",
        "d_<name>, c_<name>",
        "device_language",
        "Running the same file again changes nothing",
        "Exit status: 0 when every row was imported; 1 when some rows were rejected",
        "external_id,email,language,c_plan,platform,token",
        "--rejects",
        "--quiet",
    ):
        assert words in result.stdout, words


def _read(fd: int) -> bytes:
    """What the terminal shows next; nothing once the command has closed it."""
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: every writer has closed the terminal
        return b""


def test_a_terminal_gets_a_progress_bar(tmp_path: Path) -> None:
    account = json.loads(run_cli(["account", "create", "acme", "--json"], tmp_path).stdout)
    app = make_app(tmp_path, account["id"])
    path = tmp_path / "many.csv"
    path.write_text(
        "external_id,platform,token\n" + "".join(f"u-{n},ios,{n:064x}\n" for n in range(1200))
    )
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pushgate", "subscribers", "import", "--app", app, str(path)],
        env=cli_env(tmp_path, {"COLUMNS": "120"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    shown = b""
    try:
        while chunk := _read(controller):
            shown += chunk
        stdout, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    bar = shown.decode(errors="replace")
    assert "importing" in bar and "100%" in bar and "1,200 rows" in bar
    assert "1,200 new" in stdout
    quiet = run_import(tmp_path, app, path, "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_on_postgresql(tmp_path: Path, postgres_database_url: str) -> None:
    env = {"PUSHGATE_DATABASE_URL": postgres_database_url}
    created = run_cli(["account", "create", "acme", "--json"], tmp_path, env)
    assert created.returncode == 0, created.stderr
    app = make_app(tmp_path, json.loads(created.stdout)["id"], env)
    path = tmp_path / "subscribers.csv"
    path.write_text(CSV)
    first = run_import(tmp_path, app, path, "--json", "--batch-size", "2", env=env)
    assert first.returncode == 1
    assert summary(first)["subscribers"] == {"new": 3, "updated": 0, "unchanged": 0}
    again = run_import(tmp_path, app, path, "--json", env=env)
    assert summary(again)["subscribers"] == {"new": 0, "updated": 0, "unchanged": 3}
    assert summary(again)["devices"] == {"new": 0, "updated": 0, "unchanged": 3}


DOCUMENTED_DATA_DIR = "/home/you/.local/share/pushgate"


def _normalized(output: str, app: str) -> str:
    output = output.replace(app, "<APP_ID>")
    output = re.sub(r"in \d+\.\d s \([\d,]+ rows/s\)", "in 0.0 s (... rows/s)", output)
    return re.sub(
        r'"seconds":[\d.]+,"rows_per_second":\d+', '"seconds":...,"rows_per_second":...', output
    )


def test_the_documented_examples_run_as_written(
    server: ServerProcess, tenant: Tenant, tmp_path: Path
) -> None:
    text = (ROOT / "docs" / "audience.md").read_text()
    section = text.split("## 6. Importing subscribers", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```bash\n(.*?)```\n\n```\n(.*?)```", section, re.S)
    assert len(examples) == 2
    env = cli_env(server.data_dir)
    env.update(
        APP_ID=tenant.app_id,
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    for script, expected in examples:
        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        shown = result.stdout.replace(str(server.data_dir.resolve()), DOCUMENTED_DATA_DIR)
        assert _normalized(shown, tenant.app_id).strip() == expected.strip()


def test_an_import_stopped_by_the_database_is_completed_by_running_it_again(
    tmp_path: Path,
) -> None:
    account = json.loads(run_cli(["account", "create", "acme", "--json"], tmp_path).stdout)
    app = make_app(tmp_path, account["id"])
    path = tmp_path / "subscribers.csv"
    path.write_text(
        "external_id,platform,token\n" + "".join(f"u-{n},ios,{n:064x}\n" for n in range(6))
    )
    database = sqlite3.connect(tmp_path / "pushgate.db")
    database.execute(
        "CREATE TRIGGER full_disk BEFORE INSERT ON subscribers WHEN NEW.external_id = 'u-3' "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    database.commit()
    stopped = run_import(tmp_path, app, path, "--batch-size", "2")
    assert stopped.returncode == 3
    assert "\n".join(complaints(stopped)).startswith(
        "The import stopped at a database error after 2 rows, which are kept (run the import "
        "again to complete it): IntegrityError: database or disk is full"
    )
    assert database.execute("SELECT external_id FROM subscribers ORDER BY id").fetchall() == [
        ("u-0",),
        ("u-1",),
    ]
    database.execute("DROP TRIGGER full_disk")
    database.commit()
    database.close()
    completed = run_import(tmp_path, app, path, "--json")
    assert completed.returncode == 0, completed.stderr
    assert summary(completed)["subscribers"] == {"new": 4, "updated": 0, "unchanged": 2}
    assert summary(completed)["devices"] == {"new": 4, "updated": 0, "unchanged": 2}


async def test_the_bulk_endpoint_registers_up_to_a_thousand_devices_once(
    http: httpx2.AsyncClient, server: ServerProcess, tenant: Tenant
) -> None:
    app_id = tenant.app_id
    entries: list[dict[str, Any]] = [
        {
            "identifiers": {"external_id": f"bulk-{n}"},
            "language": "de",
            "tags": ["bulk"],
            "devices": [{"platform": "ios", "token": f"{n:064x}"}],
        }
        for n in range(1000)
    ]
    entries[7] = {"identifiers": {"email": "not-an-address"}}
    path = f"/api/v1/apps/{app_id}/subscribers/import"
    resp = await http.post(path, headers=tenant.bearer, json={"entries": entries})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["entries"] == 1000
    assert body["subscribers"] == {"new": 999, "updated": 0, "unchanged": 0}
    assert body["devices"] == {"new": 999, "updated": 0, "unchanged": 0}
    assert [r["entry"] for r in body["rejected"]] == [7]
    assert "email" in body["rejected"][0]["reason"]
    again = (await http.post(path, headers=tenant.bearer, json={"entries": entries})).json()
    assert again["devices"] == {"new": 0, "updated": 0, "unchanged": 999}
    found = await http.get(
        f"/api/v1/apps/{app_id}/subscribers",
        headers=tenant.bearer,
        params={"external_id": "bulk-3"},
    )
    assert found.status_code == 200, found.text
    too_many = await http.post(path, headers=tenant.bearer, json={"entries": entries + entries})
    assert too_many.status_code == 400
    stranger = new_account(server.data_dir)
    foreign = await http.post(path, headers=stranger.bearer, json={"entries": entries[:1]})
    assert foreign.status_code == 404
