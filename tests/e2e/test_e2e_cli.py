"""The command line as a user meets it: help texts, migrate, account create and list."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pushgate.testing.server import run_cli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["serve", "migrate", "account", "listen", "credentials", "--data-dir"]),
        (["serve"], ["--host", "--port"]),
        (["account"], ["create", "list"]),
        (["account", "create"], ["NAME", "--json"]),
        (["listen"], ["--server", "--user-token", "--json", "--count"]),
        (["credentials"], ["set", "show", "delete", "generate-vapid", "encrypted"]),
        (["credentials", "set"], ["APP_ID", "PLATFORM", "--file", "--key-id", "--topic"]),
    ],
)
def test_every_command_explains_itself(
    tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    result = run_cli([*args, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for word in expected:
        assert word in result.stdout


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    result = run_cli(["migrate"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    tables = {
        row[0]
        for row in sqlite3.connect(tmp_path / "pushgate.db").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert {"accounts", "apps", "events", "devices", "notifications", "deliveries"} <= tables
    assert run_cli(["migrate"], tmp_path).returncode == 0  # idempotent


def test_account_create_and_list(tmp_path: Path) -> None:
    created = run_cli(["account", "create", "Acme", "--json"], tmp_path)
    assert created.returncode == 0, created.stderr
    account = json.loads(created.stdout)
    assert account["name"] == "Acme" and len(account["user_token"]) == 32

    human = run_cli(["account", "create", "Beta"], tmp_path)
    assert human.returncode == 0
    assert "User token:" in human.stdout and "x-instapush-token" in human.stdout

    listed = run_cli(["account", "list", "--json"], tmp_path)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["name"] for row in rows] == ["Acme", "Beta"]
    assert account["user_token"] not in listed.stdout  # masked unless asked for
    shown = run_cli(["account", "list", "--json", "--show-tokens"], tmp_path)
    assert account["user_token"] in shown.stdout

    table = run_cli(["account", "list"], tmp_path)
    assert "Acme" in table.stdout and "Beta" in table.stdout


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    empty = run_cli(["account", "create", "  "], tmp_path)
    assert empty.returncode == 2
    assert "1-200 characters" in empty.stderr
    bad_server = run_cli(["listen", "--server", "ftp://x", "--user-token", "t"], tmp_path)
    assert bad_server.returncode == 2
    assert "http://" in bad_server.stderr
    bad_setting = run_cli(["migrate"], tmp_path, {"PUSHGATE_PORT": "not-a-port"})
    assert bad_setting.returncode == 2
    assert "port" in bad_setting.stderr.lower()


def test_credentials_print_a_table_or_json(tmp_path: Path) -> None:
    run_cli(["account", "create", "Acme"], tmp_path)
    app = json.loads(run_cli(["app", "create", "Shop", "--json"], tmp_path).stdout)["id"]
    upload = tmp_path / "hms.json"
    upload.write_text(json.dumps({"app_id": "101234567", "client_secret": "s3cret"}))
    human = run_cli(["credentials", "set", app, "huawei", "-f", str(upload)], tmp_path)
    assert human.returncode == 0, human.stderr
    assert "{" not in human.stdout and "101234567" in human.stdout
    assert "s3cret" not in human.stdout
    as_json = run_cli(["credentials", "set", app, "huawei", "-f", str(upload), "--json"], tmp_path)
    assert json.loads(as_json.stdout)["public"]["app_id"] == "101234567"
    vapid = run_cli(["credentials", "generate-vapid", app, "--json"], tmp_path)
    assert json.loads(vapid.stdout)["platform"] == "web"
    deleted = run_cli(["credentials", "delete", app, "huawei", "--json"], tmp_path)
    assert json.loads(deleted.stdout) == {"app_id": app, "platform": "huawei", "deleted": True}
    migrated = run_cli(["migrate", "--json"], tmp_path)
    assert json.loads(migrated.stdout)["up_to_date"] is True


def test_every_data_command_names_its_data_directory(tmp_path: Path) -> None:
    for args in (
        ["migrate"],
        ["account", "list"],
        ["app", "list"],
        ["deliveries", "counts"],
        ["key", "list", "--account", "1"],
    ):
        result = run_cli(args, tmp_path)
        assert f"Data directory: {tmp_path.resolve()}" in result.stderr, args
