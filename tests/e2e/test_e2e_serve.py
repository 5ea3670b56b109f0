"""What `pushgate serve` tells a person: the URL once it is true, a busy port and what to
change, the page at that URL, and which data it works on."""

from __future__ import annotations

from pathlib import Path

import httpx2

from pushgate import __version__
from pushgate.testing.server import ServerProcess, run_cli


def test_listening_is_printed_once_it_is_true(server: ServerProcess) -> None:
    output = server.output()
    assert f"Pushgate listening on {server.url}" in output
    assert output.index("Application startup complete") < output.index("Pushgate listening")
    assert f"data directory: {server.data_dir.resolve()}" in output


def test_a_busy_port_names_the_option_that_changes_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    busy = ["serve", "--host", "127.0.0.1", "--port", str(server.port)]
    other = run_cli(busy, tmp_path / "other", timeout=30)
    assert other.returncode == 2
    assert "listening" not in other.stdout
    assert f"Cannot listen on 127.0.0.1:{server.port}: the port is in use" in other.stderr
    assert "--port N (or PUSHGATE_PORT=N)" in other.stderr
    assert "A Pushgate server on another data directory is running" in other.stderr

    same = run_cli(busy, server.data_dir, timeout=30)
    assert same.returncode == 2
    assert "A Pushgate server on this data directory is already running" in same.stderr


def test_the_printed_url_shows_a_page(server: ServerProcess) -> None:
    page = httpx2.get(server.url + "/", timeout=10.0, trust_env=False)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f"Pushgate <small>{__version__}</small>" in page.text
    assert 'href="/docs"' in page.text and 'href="/openapi.json"' in page.text
    head = httpx2.head(server.url + "/", timeout=10.0, trust_env=False)
    assert head.status_code == 200


def test_health_names_the_data_without_revealing_it(server: ServerProcess) -> None:
    health = httpx2.get(server.url + "/api/v1/health", timeout=10.0, trust_env=False).json()
    assert health["status"] == "ok" and health["version"] == __version__
    assert len(health["data_id"]) == 16
    assert str(server.data_dir) not in str(health)


def test_account_create_says_when_the_server_runs_on_other_data(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = {"PUSHGATE_PORT": str(server.port)}
    elsewhere = run_cli(["account", "create", "Acme"], tmp_path, env)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert f"Data directory: {tmp_path.resolve()}" in elsewhere.stderr
    assert f"The server at {server.url} works on another data directory" in elsewhere.stderr
    assert f"{server.url}/v1/apps/add" in elsewhere.stdout

    here = run_cli(["account", "create", "Acme", "--json"], server.data_dir, env)
    assert here.returncode == 0, here.stderr
    assert "another data directory" not in here.stderr
    assert f"Data directory: {server.data_dir.resolve()}" in here.stderr

    nobody = run_cli(["account", "create", "Acme"], tmp_path, {"PUSHGATE_PORT": "1"})
    assert "No Pushgate server answers at http://127.0.0.1:1" in nobody.stderr
