"""`pushgate doctor` as an operator runs it: what it checks, and the fixes it names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pushgate.testing.server import create_account, run_cli


def checks(data_dir: Path, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    result = run_cli(["doctor", "--json"], data_dir, env)
    found = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, found


def named(found: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (check,) = [c for c in found if c["name"] == name]
    return check


def test_a_healthy_data_dir_passes_and_stored_credentials_are_parsed(tmp_path: Path) -> None:
    account = create_account(tmp_path, "doctor")
    made = run_cli(["app", "create", "shop", "--account", str(account["id"]), "--json"], tmp_path)
    assert made.returncode == 0, made.stderr
    app_id = json.loads(made.stdout.splitlines()[-1])["id"]
    code, found = checks(tmp_path)
    assert code == 0, found
    assert {c["status"] for c in found} <= {"ok", "warn"}
    assert named(found, "settings")["status"] == "ok"
    assert named(found, "data dir")["status"] == "ok"
    assert "(newest)" in named(found, "database")["detail"]
    # Every app gets a Web Push key pair when it is made: decrypted and parsed again.
    assert named(found, f"credentials {app_id} web") == {
        "name": f"credentials {app_id} web",
        "status": "ok",
        "detail": "parses",
        "fix": "",
    }
    assert named(found, "redis")["detail"].startswith("not configured")
    assert named(found, "open files")["status"] in ("ok", "warn")
    human = run_cli(["doctor"], tmp_path)
    assert human.returncode == 0 and "[ok  ] database" in human.stdout


def test_problems_are_named_with_their_fix(tmp_path: Path) -> None:
    assert run_cli(["migrate"], tmp_path).returncode == 0
    run_cli(["account", "create", "x"], tmp_path)  # makes the secret key
    (tmp_path / "secret.key").chmod(0o644)
    tmp_path.chmod(0o755)
    code, found = checks(tmp_path)
    assert code == 1
    key = named(found, "secret key")
    assert key["status"] == "fail" and key["fix"] == f"chmod 600 {tmp_path / 'secret.key'}"
    assert named(found, "data dir")["fix"] == f"chmod 700 {tmp_path}"

    code, found = checks(tmp_path, {"PUSHGATE_QUEUE_URL": "redis://127.0.0.1:1/0"})
    assert code == 1 and named(found, "redis")["status"] == "fail"

    code, found = checks(tmp_path, {"PUSHGATE_PORT": "99999"})
    assert code == 1 and named(found, "settings")["status"] == "fail"
    assert "port" in named(found, "settings")["detail"]


def test_redis_and_the_clock_against_it(tmp_path: Path, redis_url: str) -> None:
    assert run_cli(["migrate"], tmp_path).returncode == 0
    code, found = checks(tmp_path, {"PUSHGATE_QUEUE_URL": redis_url})
    assert named(found, "redis")["status"] == "ok", found
    clock = named(found, "clock")
    assert clock["status"] == "ok" and "against Redis" in clock["detail"]


@pytest.mark.parametrize("options", ["", "?prepared_statement_cache_size=50"])
def test_postgresql_the_clock_against_it_and_job_notices(
    tmp_path: Path, postgres_database_url: str, options: str
) -> None:
    """With a URL option that only SQLAlchemy's adapter takes, too: workers listen for job
    notices on a connection asyncpg opens from the same URL."""
    env = {"PUSHGATE_DATABASE_URL": postgres_database_url + options}
    assert run_cli(["migrate"], tmp_path, env).returncode == 0
    code, found = checks(tmp_path, env)
    assert code == 0, found
    assert named(found, "database")["detail"].startswith("postgresql")
    assert "against the database server" in named(found, "clock")["detail"]
    notices = named(found, "job notices")
    assert notices["status"] == "ok" and "heard" in notices["detail"], notices
