"""docs/audience.md runs as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from e2e_support import new_account

from pushgate.testing.server import ServerProcess, cli_env

ROOT = Path(__file__).resolve().parents[2]


def test_audience_doc_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    tenant = new_account(server.data_dir)
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "audience.md").read_text(), re.S)
    script = "set -euo pipefail\n" + "\necho '-----'\n".join(blocks)
    env = cli_env(server.data_dir)
    env.update(
        PUSHGATE=server.url,
        USER_TOKEN=tenant.user_token,
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    parts = result.stdout.split("-----\n")
    _setup, apps, subscriber, search, send, key, cli_key, stats = parts[:8]
    assert apps.startswith('{"apps":[{"id":"') and '"title":"Shop"' in apps
    assert '"identifiers":{"external_id":"u-42","email":"ann@example.com"}' in subscriber
    assert '"c_birthday":{"date":"1990-05-01T00:00:00Z"}' in subscriber
    assert search.strip() == "[{'external_id': 'u-42', 'email': 'ann@example.com'}]"
    assert re.fullmatch(r'\{"id":\d+\}\n', send)
    assert key.strip() == "push-api-v2 pgk_ ['203.0.113.0/24'] True"
    assert cli_key.strip() == "insider-mobile ['198.51.100.7/32']"
    targeted, campaign = stats.strip().split("\n")
    assert targeted == "2 1"
    assert campaign.startswith("Welcome 1 ['capped', 'delivered', 'expired', 'failed',")
