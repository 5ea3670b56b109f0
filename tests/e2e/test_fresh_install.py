"""The README's quick start, its first notification and docs/quickstart.md as a newcomer
types them: in a copy of the checkout, in a new virtual environment made by the README's own
install command (dependencies from the package registry), with nothing of this test run on
PATH. Skips when the package registry cannot be reached, except under
PUSHGATE_REQUIRE_SERVICES=1, where that fails."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docs_support import (
    ROOT,
    bash_blocks,
    bash_blocks_from_text,
    check_first_notification_output,
    check_quickstart_output,
    readme_section,
    run_script,
)

from pushgate.testing.server import free_port

INSTALL_SECONDS = 600
# What pip says when it cannot reach the package registry.
UNREACHABLE = (
    "Could not fetch URL",
    "Max retries exceeded",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
)


def copy_checkout(target: Path) -> None:
    """The checkout's files (tracked, and new ones not ignored): what a clone would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def newcomer_env(data_dir: Path, port: int) -> dict[str, str]:
    """This environment without our virtual environment and PUSHGATE_* settings, with a data
    directory and port of its own."""
    ours = {str(Path(sys.executable).parent), str(Path(sys.prefix) / "bin")}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PUSHGATE_") and key not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PATH"] = os.pathsep.join(
        entry for entry in env.get("PATH", "").split(os.pathsep) if entry not in ours
    )
    env["PUSHGATE_DATA_DIR"] = str(data_dir)
    env["PUSHGATE_PORT"] = str(port)
    env["PUSHGATE"] = f"http://127.0.0.1:{port}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def install(commands: list[str], clone: Path, env: dict[str, str]) -> None:
    result = run_script("\n".join(commands), clone, env, timeout=INSTALL_SECONDS)
    if result.returncode == 0:
        return
    said = result.stdout + result.stderr
    if any(sign in said for sign in UNREACHABLE):
        message = f"the package registry cannot be reached:\n{said[-2000:]}"
        if os.environ.get("PUSHGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    pytest.fail(f"the README's install command failed:\n{said[-4000:]}")


def wait_listening(server: subprocess.Popen[bytes], log: Path, url: str) -> None:
    deadline = time.monotonic() + 60
    while f"Pushgate listening on {url}" not in log.read_text(errors="replace"):
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"pushgate serve did not say it listens on {url}:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.mark.timeout(INSTALL_SECONDS + 180)
def test_a_newcomer_installs_serves_and_sends(tmp_path: Path) -> None:
    clone = tmp_path / "pushgate"
    copy_checkout(clone)
    port = free_port()
    env = newcomer_env(tmp_path / "data", port)
    install_block, _tests = bash_blocks_from_text(readme_section("Quick start"))
    # One command of steps joined by `&&` (or one step a line).
    *setup, serve = [step.strip() for step in re.split(r"&&|\n", install_block) if step.strip()]
    assert serve == "pushgate serve", "the quick start ends by starting the server"
    activate = [line for line in setup if "activate" in line]
    install([line for line in setup if line not in activate], clone, env)

    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(  # noqa: S603 - the README's own commands
            ["bash", "-c", "set -e\n" + "\n".join([*activate, serve])],
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_listening(server, log, env["PUSHGATE"])
        (first,) = bash_blocks_from_text(readme_section("Send your first notification"))
        check_first_notification_output(run_script(first, clone, env, timeout=180))
        quickstart = "\n".join(bash_blocks(clone / "docs" / "quickstart.md"))
        check_quickstart_output(run_script(quickstart, clone, env, timeout=180))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
