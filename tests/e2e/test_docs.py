"""The documentation's copy-paste examples work as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pushgate.testing.server import ServerProcess, cli_env

ROOT = Path(__file__).resolve().parents[2]


def bash_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown.read_text(), flags=re.DOTALL)


def test_quickstart_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    script = "set -euo pipefail\n" + "\n".join(bash_blocks(ROOT / "docs" / "quickstart.md"))
    env = cli_env(server.data_dir)
    env["PUSHGATE"] = server.url
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"msg":"App Created Successfully"' in result.stdout
    assert '"msg":"Event Created Succesfully"' in result.stdout
    assert '"msg":"Notification Sent Succesfully"' in result.stdout
    assert "signups: ann@example.com has signed up from NL" in result.stdout
    assert '"delivered":1' in result.stdout


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = bash_blocks_from_text(quick_start)
    assert len(commands) == 2, "the quick start holds exactly two commands"
    serve, test = commands
    assert "pushgate serve" in serve
    ci = (ROOT / ".ci" / "run").read_text()
    assert test.strip() in ci
    assert "PUSHGATE_REQUIRE_SERVICES=1" in ci


def bash_blocks_from_text(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)]


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_api_docs_render_in_a_browser_without_network(server: ServerProcess) -> None:
    """/docs draws the API description in headless Chromium when every request beyond the
    server itself is refused (its assets are served by Pushgate)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)"
        if os.environ.get("PUSHGATE_REQUIRE_SERVICES") == "1":
            raise AssertionError(message)
        import pytest

        pytest.skip(message)
    from playwright.sync_api import Route, sync_playwright

    outside: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.goto(f"{server.url}/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert "/api/v1/devices" in " ".join(paths)
        finally:
            browser.close()
    assert outside == []
