"""`pushgate app` and `pushgate send` as a new user meets them: an app from the command line,
a notification to its devices, and its deliveries followed to their final state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
from e2e_support import new_account, unique

from pushgate.testing.server import ServerProcess, cli_env, run_cli


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    record: dict[str, object] = json.loads(result.stdout)
    return record


def test_app_create_list_show_delete(tmp_path: Path) -> None:
    first = new_account(tmp_path)
    only = _json(run_cli(["app", "create", "Shop", "--json"], tmp_path))
    assert only["account_id"] == first.account_id and only["title"] == "Shop"
    assert isinstance(only["secret"], str) and only["secret"]

    second = new_account(tmp_path)
    several = run_cli(["app", "create", "Blog"], tmp_path)
    assert several.returncode == 2 and "--account" in several.stderr
    blog = _json(
        run_cli(["app", "create", "Blog", "--account", str(second.account_id), "--json"], tmp_path)
    )

    listed = run_cli(["app", "list", "--json"], tmp_path)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(row["id"], row["account_id"]) for row in rows] == [
        (only["id"], first.account_id),
        (blog["id"], second.account_id),
    ]
    assert all("secret" not in row for row in rows)
    table = run_cli(["app", "list", "--account", str(second.account_id)], tmp_path)
    assert str(blog["id"]) in table.stdout and str(only["id"]) not in table.stdout

    shown = _json(run_cli(["app", "show", str(only["id"]), "--json"], tmp_path))
    assert shown == only
    human = run_cli(["app", "show", str(only["id"])], tmp_path)
    assert str(only["secret"]) in human.stdout and "title" in human.stdout

    deleted = _json(run_cli(["app", "delete", str(only["id"]), "--yes", "--json"], tmp_path))
    assert deleted == {"id": only["id"], "deleted": True}
    gone = run_cli(["app", "show", str(only["id"])], tmp_path)
    assert gone.returncode == 1
    assert f"No app {only['id']} (see `pushgate app list`)" in gone.stderr


def test_an_unknown_app_points_to_the_command_that_lists_apps(tmp_path: Path) -> None:
    new_account(tmp_path)
    for args in (
        ["send", "--app", "nope", "--message", "hi"],
        ["credentials", "show", "nope"],
        ["app", "show", "nope"],
        ["deliveries", "counts", "--app", "nope"],
        ["key", "list", "--app", "nope"],
    ):
        result = run_cli(args, tmp_path)
        assert result.returncode == 1, args
        assert "No app nope" in result.stderr, args
        assert "(see `pushgate app list`)" in result.stderr, args


def _listener(server: ServerProcess, user_token: str, out: Path) -> subprocess.Popen[str]:
    with out.open("w") as stdout:
        return subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "pushgate", "listen", "--server", server.url]
            + ["--user-token", user_token, "--count", "1", "--json"],
            env=cli_env(server.data_dir),
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            text=True,
        )


def _wait_registered(server: ServerProcess, user_token: str) -> None:
    """Until the listener has its device (what is sent after that reaches it)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        devices = httpx2.get(
            f"{server.url}/api/v1/devices",
            headers={"Authorization": f"Bearer {user_token}"},
            timeout=10.0,
            trust_env=False,
        ).json()["devices"]
        if devices:
            return
        time.sleep(0.1)
    raise AssertionError("the listener registered no device in 20 s")


def test_send_prints_the_id_and_waits_for_the_final_state(
    server: ServerProcess, tmp_path: Path
) -> None:
    tenant = new_account(server.data_dir)
    app = _json(
        run_cli(
            ["app", "create", unique("shop"), "--account", str(tenant.account_id), "--json"],
            server.data_dir,
        )
    )
    received = tmp_path / "received.ndjson"
    listener = _listener(server, tenant.user_token, received)
    try:
        _wait_registered(server, tenant.user_token)
        env = {"PUSHGATE_PORT": str(server.port)}
        sent = run_cli(
            ["send", "--app", str(app["id"]), "--title", "Hi", "--message", "Your order shipped"]
            + ["--data", "order=42", "--wait", "--json", "--timeout", "20"],
            server.data_dir,
            env,
        )
        summary = _json(sent)
        assert summary["settled"] is True and summary["total"] == 1
        assert summary["deliveries"] == {
            "queued": 0,
            "sent": 0,
            "delivered": 1,
            "opened": 0,
            "failed": 0,
            "expired": 0,
            "capped": 0,
        }
        assert "another data directory" not in sent.stderr
        assert listener.wait(20) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    notification = json.loads(received.read_text().splitlines()[0])
    assert notification["message"] == "Your order shipped"
    assert notification["data"] == {"order": "42"}

    plain = run_cli(["send", "--app", str(app["id"]), "--message", "again"], server.data_dir)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == str(int(summary["id"]) + 1)  # type: ignore[call-overload]

    # The device is offline now: its delivery waits in the backlog, and --wait gives up.
    waited = run_cli(
        ["send", "--app", str(app["id"]), "--message", "later", "--wait", "--timeout", "1"],
        server.data_dir,
        env,
    )
    assert waited.returncode == 1
    assert "queued" in waited.stdout and "Not final after 1 s" in waited.stderr


def test_send_checks_its_options_as_the_api_does(tmp_path: Path) -> None:
    new_account(tmp_path)
    app = _json(run_cli(["app", "create", "Shop", "--json"], tmp_path))
    empty = run_cli(["send", "--app", str(app["id"]), "--message", ""], tmp_path)
    assert empty.returncode == 2 and "--message:" in empty.stderr
    bad = run_cli(["send", "--app", str(app["id"]), "--message", "x", "--data", "x"], tmp_path)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    big = run_cli(
        ["send", "--app", str(app["id"]), "--message", "x", "--data", "k=" + "v" * 5000],
        tmp_path,
    )
    assert big.returncode == 2 and "larger than 4096 bytes" in big.stderr
    assert os.path.exists(tmp_path / "pushgate.db")
