"""The documentation's copy-paste examples work as written."""

from __future__ import annotations

from pathlib import Path

from docs_support import (
    ROOT,
    activated_here,
    bash_blocks,
    bash_blocks_from_text,
    check_first_notification_output,
    check_quickstart_output,
    readme_section,
    run_script,
)
from e2e_support import CHROMIUM, CHROMIUM_ARGS, require_chromium

from pushgate.testing.server import ServerProcess, cli_env


def test_quickstart_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    activated_here(tmp_path)
    env = cli_env(server.data_dir)
    env["PUSHGATE"] = server.url
    result = run_script("\n".join(bash_blocks(ROOT / "docs" / "quickstart.md")), tmp_path, env)
    check_quickstart_output(result)


def test_readme_first_notification_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    activated_here(tmp_path)
    env = cli_env(server.data_dir, {"PUSHGATE_PORT": str(server.port)})
    (block,) = bash_blocks_from_text(readme_section("Send your first notification"))
    check_first_notification_output(run_script(block, tmp_path, env))


def test_ci_runs_the_readme_test_command() -> None:
    commands = bash_blocks_from_text(readme_section("Quick start"))
    assert len(commands) == 2, "the quick start holds exactly two commands"
    serve, test = commands
    assert "pushgate serve" in serve
    ci = (ROOT / ".ci" / "run").read_text()
    assert test.strip() in ci
    assert "PUSHGATE_REQUIRE_SERVICES=1" in ci


def test_api_docs_render_in_a_browser_without_network(server: ServerProcess) -> None:
    """/docs draws the API description in headless Chromium when every request beyond the
    server itself is refused (its assets are served by Pushgate)."""
    require_chromium()
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
