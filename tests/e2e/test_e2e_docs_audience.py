"""docs/audience.md runs as written against a real server."""

from __future__ import annotations

import re
from pathlib import Path

from e2e_support import new_account, run_bash_doc

from pushgate.testing.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def test_audience_doc_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    tenant = new_account(server.data_dir)
    output = run_bash_doc(server, ROOT / "docs" / "audience.md", tmp_path, tenant.user_token)
    parts = output.split("-----\n")
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
