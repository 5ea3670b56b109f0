"""Cost of the per-request observation (request id, access line, request metric), paired.

Two applications in one process, one with the ``RequestObserver`` middleware and one without
it, answer ``POST /api/v1/ping`` in alternating batches (in process: no sockets, no HTTP
parsing), so that whatever else the machine does hits both alike. Prints the median CPU time
per request of each and the median of the paired differences.

    .venv/bin/python -m benchmarks.observe_cost              # access line on (the default)
    .venv/bin/python -m benchmarks.observe_cost --no-access  # pushgate.access=warning
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

from benchmarks.harness.report import (
    Log,
    add_output_options,
    print_targets,
    run_and_report,
    utc_now,
)
from pushgate.app import create_app
from pushgate.config import Settings
from pushgate.observability.logs import configure_logging
from pushgate.observability.requests import RequestObserver

BODY = b'{"x":1}'
HEADERS = [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"7")]


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/ping",
        "raw_path": b"/api/v1/ping",
        "query_string": b"",
        "headers": HEADERS,
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
        "asgi": {"version": "3.0"},
        "state": {},
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def send(message: Any) -> None:
    pass


async def measure(rounds: int, batch: int) -> dict[str, float]:
    observed = create_app(Settings(data_dir=tempfile.mkdtemp(prefix="pg-observed-")))
    bare = create_app(Settings(data_dir=tempfile.mkdtemp(prefix="pg-bare-")))
    bare.user_middleware = [m for m in bare.user_middleware if m.cls is not RequestObserver]
    apps = {"observed": observed, "bare": bare}
    times: dict[str, list[float]] = {name: [] for name in apps}
    async with observed.router.lifespan_context(observed), bare.router.lifespan_context(bare):
        for _ in range(rounds):
            for name, app in apps.items():
                started = time.process_time()
                for _ in range(batch):
                    await app(scope(), receive, send)
                times[name].append((time.process_time() - started) / batch * 1e6)
            await asyncio.sleep(0)  # the access log's flush
    warm = rounds // 8
    observed_us, bare_us = times["observed"][warm:], times["bare"][warm:]
    return {
        "observed_us": statistics.median(observed_us),
        "bare_us": statistics.median(bare_us),
        "cost_us": statistics.median(o - b for o, b in zip(observed_us, bare_us, strict=True)),
    }


def run(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    # The access lines go to stderr: keep them off the terminal.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    levels = {"pushgate.access": "WARNING"} if args.no_access else {}
    configure_logging("info", levels, "json")
    return {
        "benchmark": "observe_cost",
        "date": utc_now(),
        "access_line": not args.no_access,
        "rounds": args.rounds,
        "batch": args.batch,
        "paired_rounds": args.rounds - args.rounds // 8,
        **asyncio.run(measure(args.rounds, args.batch)),
        "targets": [],
    }


def print_table(r: dict[str, Any]) -> None:
    access = "on" if r["access_line"] else "off"
    print(
        f"access line {access}: with the observer {r['observed_us']:.1f} us/request, "
        f"without {r['bare_us']:.1f} us/request, paired difference "
        f"{r['cost_us']:.1f} us/request (median of {r['paired_rounds']})"
    )
    print_targets(r["targets"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-access", action="store_true", help="pushgate.access=warning")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=1000)
    add_output_options(parser, keep_data=False)
    return run_and_report(parser.parse_args(argv), run, print_table)


if __name__ == "__main__":
    raise SystemExit(main())
