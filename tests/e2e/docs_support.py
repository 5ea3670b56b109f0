"""The documentation's examples as a script: its ``bash`` blocks, run in order, and what
their output must show. Used by test_docs.py (this test run's install) and
test_fresh_install.py (a new virtual environment, as a newcomer makes it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bash_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown.read_text(), flags=re.DOTALL)


def activated_here(directory: Path) -> None:
    """A ``.venv/bin/activate`` in ``directory`` that puts this test run's ``pushgate`` on
    PATH, as the README's virtual environment does (tests/e2e/test_fresh_install.py runs the
    same documents in a real one)."""
    activate = directory / ".venv" / "bin" / "activate"
    activate.parent.mkdir(parents=True, exist_ok=True)
    activate.write_text(f'export PATH="{Path(sys.executable).parent}{os.pathsep}$PATH"\n')


def run_script(
    script: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def check_quickstart_output(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert '"msg":"App Created Successfully"' in result.stdout
    assert '"msg":"Event Created Succesfully"' in result.stdout
    assert '"msg":"Notification Sent Succesfully"' in result.stdout
    assert "signups: ann@example.com has signed up from NL" in result.stdout
    assert '"delivered":1' in result.stdout
    # Every answer on a line of its own.
    assert all(line.count('"msg"') <= 1 for line in result.stdout.splitlines())


def check_first_notification_output(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "Hello: It works" in result.stdout
    assert "delivered" in result.stdout and "Notification" in result.stdout


def bash_blocks_from_text(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)]
