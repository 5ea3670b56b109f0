"""Bulk registration: ``POST /api/v1/apps/{app_id}/subscribers/import`` with 1,000 new
subscribers and their iOS devices per request, one request after another on one connection,
against one ``pushgate serve`` (SQLite, the embedded default) on a temp data dir.

Reports devices registered per second (wall time of the requests) and the server's CPU time
per device. Target (issue 13): at least 5,000 devices/s on SQLite.

    .venv/bin/python -m benchmarks.bulk_registration
    .venv/bin/python -m benchmarks.bulk_registration --devices 50000 --json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

from benchmarks.harness.http import check, http_request
from benchmarks.harness.machine import cpu_seconds_pid
from benchmarks.harness.report import add_output_options, print_targets, run_and_report, target
from benchmarks.harness.server import OwnServer

TARGET = 5000.0
PER_REQUEST = 1000


def _entries(start: int, count: int) -> bytes:
    return orjson.dumps(
        {
            "entries": [
                {
                    "identifiers": {"external_id": f"u-{n}"},
                    "language": "en",
                    "country": "US",
                    "devices": [{"platform": "ios", "token": f"{n:064x}", "model": "iPhone"}],
                }
                for n in range(start, start + count)
            ]
        }
    )


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    server = OwnServer(keep_dir=args.keep_data)
    try:
        server.start()
        auth = {"Authorization": f"Bearer {server.create_account()}"}
        app = check(
            *http_request(
                "POST", server.url, "/api/v1/apps", auth, orjson.dumps({"title": "bulk"})
            ),
            "create app",
        )
        path = f"/api/v1/apps/{app['id']}/subscribers/import"
        bodies = [
            _entries(start, min(PER_REQUEST, args.devices - start))
            for start in range(0, args.devices, PER_REQUEST)
        ]
        pid = server.proc.pid if server.proc else None
        cpu_before = cpu_seconds_pid(pid) or 0.0
        started = time.perf_counter()
        registered = 0
        for body in bodies:
            answer = check(*http_request("POST", server.url, path, auth, body, timeout=120), path)
            if answer["rejected"]:
                raise RuntimeError(f"rejected entries: {answer['rejected'][:3]}")
            registered += answer["devices"]["new"]
        seconds = time.perf_counter() - started
        cpu = (cpu_seconds_pid(pid) or 0.0) - cpu_before
    finally:
        server.stop()
    rate = registered / seconds
    return {
        "devices": registered,
        "requests": len(bodies),
        "seconds": round(seconds, 2),
        "devices_per_s": round(rate),
        "server_cpu_us_per_device": round(cpu / registered * 1e6, 1),
        "target_devices_per_s": TARGET,
        "met": rate >= TARGET,
        "targets": [
            target(
                f"bulk registration >= {TARGET:,.0f} devices/s (SQLite)",
                f"{rate:,.0f} devices/s",
                rate >= TARGET,
                round(rate),
            )
        ],
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"bulk registration: {r['devices']} devices in {r['requests']} requests of 1,000")
    print(f"  {r['seconds']} s -> {r['devices_per_s']} devices/s")
    print(f"  server CPU per device: {r['server_cpu_us_per_device']} us")
    print_targets(r["targets"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=20_000, help="devices to register")
    add_output_options(ap)
    return run_and_report(ap.parse_args(argv), run, print_table)


if __name__ == "__main__":
    raise SystemExit(main())
