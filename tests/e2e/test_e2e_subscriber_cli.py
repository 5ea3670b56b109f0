"""`pushgate subscribers show | search | delete` as a user runs them: the real command line on
the data directory of a real server, answering what the native API answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e_support import Tenant, new_account

from pushgate.testing.server import ServerProcess, cli_env, run_cli

IOS_1, IOS_2, IOS_3 = "ab" * 32, "cd" * 32, "ef" * 32
WIDE = {"COLUMNS": "200"}


def make_app(data_dir: Path, account_id: int) -> str:
    result = run_cli(["app", "create", "Shop", "--account", str(account_id), "--json"], data_dir)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["id"])


@pytest.fixture
def tenant(server: ServerProcess) -> Tenant:
    found = new_account(server.data_dir)
    found.app_id = make_app(server.data_dir, found.account_id)
    return found


def call(
    server: ServerProcess, tenant: Tenant, method: str, path: str, body: Any = None
) -> httpx2.Response:
    with httpx2.Client(base_url=server.url, timeout=10.0, trust_env=False) as client:
        return client.request(method, path, headers=tenant.bearer, json=body)


def upsert(server: ServerProcess, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = call(server, tenant, "PUT", f"/api/v1/apps/{tenant.app_id}/subscribers", body)
    assert response.status_code in (200, 201), response.text
    found: dict[str, Any] = response.json()
    return found


def register(server: ServerProcess, tenant: Tenant, token: str, external_id: str) -> int:
    body = {"platform": "ios", "token": token, "app_id": tenant.app_id, "external_id": external_id}
    response = call(server, tenant, "POST", "/api/v1/devices", body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def subscribers_cli(
    server: ServerProcess, *args: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``pushgate subscribers ARGS``; ``answer`` is typed at its prompt. Wide enough that
    usage errors keep their messages on one line."""
    if answer is None:
        return run_cli(["subscribers", *args], server.data_dir, WIDE)
    return subprocess.run(
        [sys.executable, "-m", "pushgate", "subscribers", *args],
        env=cli_env(server.data_dir, WIDE),
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


ANN = {
    "identifiers": {"external_id": "u-42", "email": "ann@example.com", "member_no": "A-17"},
    "language": "nl",
    "country": "NL",
    "timezone": "Europe/Amsterdam",
    "optins": {"email": True},
    "attributes": {"c_plan": "pro", "c_age": 42, "c_note": "[bold]not markup[/bold]"},
    "tags": ["vip"],
    "events": ["install"],
}


def test_show_and_search_answer_what_the_api_answers(server: ServerProcess, tenant: Tenant) -> None:
    ann = upsert(server, tenant, ANN)
    register(server, tenant, IOS_1, "u-42")
    account = str(tenant.account_id)
    by_api = call(server, tenant, "GET", f"/api/v1/subscribers/{ann['id']}").json()
    assert by_api["device_ids"] and by_api["events"][0]["name"] == "install"

    shown = subscribers_cli(server, "show", str(ann["id"]), "--account", account, "--json")
    assert json_lines(shown) == [by_api]

    table = subscribers_cli(server, "show", str(ann["id"]), "--account", account)
    assert table.returncode == 0, table.stderr
    for words in (
        f"Subscriber {ann['id']}",
        tenant.app_id,
        "external_id: u-42",
        "member_no: A-17",
        "email: yes",
        "sms: unknown",
        'c_plan: "pro"',
        "c_age: 42",
        '"[bold]not markup[/bold]"',
        "install: 1 (first",
        f"1: {by_api['device_ids'][0]}",
    ):
        assert words in table.stdout, words

    app = tenant.app_id
    for options in (
        ["--email", "ann@example.com"],
        ["--external-id", "u-42"],
        ["--identifier", "member_no=A-17"],
        ["--identifier", "INSIDER.member_no=A-17", "--email", "ANN@example.com"],
    ):
        found = subscribers_cli(server, "search", "--app", app, *options, "--json")
        assert json_lines(found) == [by_api], options
    found = subscribers_cli(server, "search", "--app", app, "--identifier", "member_no=A-17")
    assert found.returncode == 0 and "ann@example.com" in found.stdout

    nobody = subscribers_cli(server, "search", "--app", app, "--email", "bob@example.com")
    assert nobody.returncode == 1 and nobody.stdout == ""
    assert f"No subscriber of app {app} has these identifiers" in nobody.stderr

    other = new_account(server.data_dir)
    elsewhere = subscribers_cli(server, "show", str(ann["id"]), "--account", str(other.account_id))
    assert elsewhere.returncode == 1
    assert f"No subscriber {ann['id']} in this account" in elsewhere.stderr


def test_search_without_identifiers_lists_the_app_page_by_page(
    server: ServerProcess, tenant: Tenant
) -> None:
    made = [upsert(server, tenant, {"identifiers": {"external_id": f"p-{n}"}}) for n in range(3)]
    ids = [subscriber["id"] for subscriber in made]
    app = tenant.app_id

    first = json_lines(subscribers_cli(server, "search", "--app", app, "--limit", "2", "--json"))
    by_api = call(server, tenant, "GET", f"/api/v1/apps/{app}/subscribers?limit=2").json()
    assert first == by_api["subscribers"]
    assert [subscriber["id"] for subscriber in first] == ids[:2]
    rest = subscribers_cli(
        server, "search", "--app", app, "--after", str(ids[1]), "--limit", "2", "--json"
    )
    assert [subscriber["id"] for subscriber in json_lines(rest)] == ids[2:]

    table = subscribers_cli(server, "search", "--app", app, "--limit", "2")
    assert table.returncode == 0, table.stderr
    assert "external_id: p-0" in table.stdout and "external_id: p-1" in table.stdout
    assert "p-2" not in table.stdout
    assert f"add --after {ids[1]} for the next page" in table.stdout
    empty = subscribers_cli(server, "search", "--app", app, "--after", str(ids[2]))
    assert empty.returncode == 0
    assert empty.stdout.strip() == f"App {app} has no subscribers after id {ids[2]}."


def test_delete_erases_the_subscriber_with_its_devices(
    server: ServerProcess, tenant: Tenant
) -> None:
    ann = upsert(server, tenant, ANN)
    gone = {register(server, tenant, IOS_1, "u-42"), register(server, tenant, IOS_2, "u-42")}
    kept = register(server, tenant, IOS_3, "u-43")
    account = str(tenant.account_id)
    subscriber = str(ann["id"])

    refused = subscribers_cli(server, "delete", subscriber, "--account", account, answer="n\n")
    assert refused.returncode == 1
    assert (
        f"Erase subscriber {subscriber} (external_id=u-42, email=ann@example.com, "
        f"member_no=A-17) of app {tenant.app_id}: its profile, 2 devices and their deliveries?"
    ) in refused.stdout
    assert "Aborted" in refused.stderr
    assert call(server, tenant, "GET", f"/api/v1/subscribers/{subscriber}").status_code == 200

    deleted = subscribers_cli(server, "delete", subscriber, "--account", account, answer="y\n")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.endswith(f"[y/N]: Subscriber {subscriber} deleted, with 2 devices.\n")

    shown = subscribers_cli(server, "show", subscriber, "--account", account)
    assert shown.returncode == 1
    assert f"No subscriber {subscriber} in this account" in shown.stderr
    assert call(server, tenant, "GET", f"/api/v1/subscribers/{subscriber}").status_code == 404
    listed = call(server, tenant, "GET", f"/api/v1/devices?app_id={tenant.app_id}").json()
    assert [device["id"] for device in listed["devices"]] == [kept]
    assert not gone & {device["id"] for device in listed["devices"]}

    owner = call(
        server, tenant, "GET", f"/api/v1/apps/{tenant.app_id}/subscribers?external_id=u-43"
    )
    (bob,) = owner.json()["subscribers"]
    at_once = subscribers_cli(server, "delete", str(bob["id"]), "--account", account, "--yes")
    assert at_once.returncode == 0, at_once.stderr
    assert at_once.stdout == f"Subscriber {bob['id']} deleted, with 1 device.\n"
    again = subscribers_cli(server, "delete", str(bob["id"]), "--account", account, "--yes")
    assert again.returncode == 1 and f"No subscriber {bob['id']}" in again.stderr
    assert call(server, tenant, "GET", f"/api/v1/devices?app_id={tenant.app_id}").json() == {
        "devices": []
    }


def test_bad_input_is_refused_with_a_clear_message(server: ServerProcess, tenant: Tenant) -> None:
    upsert(server, tenant, {"identifiers": {"external_id": "c-1"}})
    upsert(server, tenant, {"identifiers": {"email": "cy@example.com"}})
    app = tenant.app_id
    for args, message in (
        (
            ["search", "--app", app, "--phone-number", "123"],
            "phone_number must be in international form",
        ),
        (["search", "--app", app, "--uuid", "nope"], "uuid must be a UUID"),
        (["search", "--app", app, "--identifier", "member_no"], "give it as KEY=VALUE"),
        (["search", "--app", app, "--identifier", "bad key!=1"], "an identifier name is"),
        (
            ["search", "--app", app, "--email", "a@example.com", "--identifier", "email=b@x.org"],
            "email is given twice",
        ),
        (
            ["search", "--app", app, "--external-id", "c-1", "--email", "cy@example.com"],
            "The identifiers name different subscribers",
        ),
        (["search", "--app", app, "--limit", "0"], "--limit"),
        (["show", "abc"], "SUBSCRIBER_ID"),
        (["show", "0"], "SUBSCRIBER_ID"),
        (["delete", "99999999999999999999", "--yes"], "larger than any id"),
        (["show", "1"], "choose one with --account ID or NAME"),
    ):
        result = subscribers_cli(server, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr

    missing = subscribers_cli(server, "search", "--app", "no-such-app")
    assert missing.returncode == 1 and "No app no-such-app" in missing.stderr
    no_account = subscribers_cli(server, "show", "1", "--account", "no-such-account")
    assert no_account.returncode == 1 and "No account 'no-such-account'" in no_account.stderr


def test_help_explains_each_command(tmp_path: Path) -> None:
    listed = run_cli(["subscribers", "--help"], tmp_path, WIDE)
    assert listed.returncode == 0
    for command in ("import", "show", "search", "delete"):
        assert command in listed.stdout
    for command, words in (
        ("show", ["SUBSCRIBER_ID", "--account", "--json", "GET /api/v1/subscribers"]),
        (
            "search",
            ["--app", "--email", "--phone-number", "--identifier", "KEY=VALUE", "--after"],
        ),
        ("delete", ["--yes", "erasure request", "cannot be undone", "Exit status 1"]),
    ):
        result = run_cli(["subscribers", command, "--help"], tmp_path, WIDE)
        assert result.returncode == 0, result.stderr
        for word in words:
            assert word in result.stdout, (command, word)
