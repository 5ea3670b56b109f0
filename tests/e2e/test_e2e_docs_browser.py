"""docs/browser.md runs as written against a real server, and answers what it shows."""

from __future__ import annotations

import re
from pathlib import Path

from e2e_support import new_account, run_bash_doc

from pushgate.testing.server import ServerProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "browser.md"


def test_browser_doc_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    tenant = new_account(server.data_dir)
    output = run_bash_doc(server, DOC, tmp_path, tenant.user_token)
    # The page's plain blocks are what its bash blocks print, in order.
    blocks = re.findall(r"```(\w*)\n(.*?)```", DOC.read_text(), re.S)
    shown = [body for language, body in blocks if not language]
    outputs = [part for part in output.split("-----\n") if part.strip()]
    assert outputs == shown, output
