"""Push API v2: requests per second in JSON and in XML next to Instapush's single post on the
same server in the same run, and how long the server takes to refuse XML attack bodies.

One ``pushgate serve`` (SQLite, workers in the process) on a temp data dir, loopback only.
Set-up (not timed): an app with an Instapush event and one channel device, a user with one
channel device, and a push-api-v2 key with a quota no run reaches. Phases, each closed-loop
with ``--concurrency`` keep-alive connections for ``--duration`` seconds:

1. single - ``POST /v1/post``;
2. json   - ``POST /api/v2/push?format=json`` with a JSON body naming the user by e-mail;
3. xml    - the same request in XML (DataContract style), answered in XML.

Then each attack body (billion laughs, quadratic blow-up, external entity) is sent
``--attack-rounds`` times one after another; the time from sending to the 400 is reported
(median and max; the target is 50 ms) with the server's peak memory before and after.

    .venv/bin/python -m benchmarks.push_api_v2
    .venv/bin/python -m benchmarks.push_api_v2 --duration 5 --json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import orjson

from benchmarks.harness.http import StatusConn, closed_loop_phase, raw_post
from benchmarks.harness.machine import peak_rss_kib
from benchmarks.harness.report import add_output_options, print_targets, run_and_report, target
from benchmarks.harness.server import OwnServer

XSI = "http://www.w3.org/2001/XMLSchema-instance"
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol">'
    + b"".join(
        b'<!ENTITY %s "%s">' % (b"a" * (n + 1), (b"&" + b"a" * n + b";") * 10) for n in range(1, 9)
    )
    + b']><Push xmlns:i="'
    + XSI.encode()
    + b'"><Title>&aaaaaaaaa;</Title></Push>'
)
QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "' + b"x" * 100_000 + b'">]>'
    b'<Push xmlns:i="' + XSI.encode() + b'"><Title>' + b"&a;" * 20_000 + b"</Title></Push>"
)
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<Push xmlns:i="' + XSI.encode() + b'"><Title>&x;</Title></Push>'
)


def _setup(server: OwnServer) -> dict[str, Any]:
    account = server.account()
    post = account.post
    event = {"title": "order", "trackers": ["n"], "message": "order {n}"}
    app_id, creds = account.instapush_app("bench", event)
    post("/api/v1/devices", {"platform": "channel", "app_id": app_id})
    post("/api/v1/devices", {"platform": "channel", "app_id": app_id, "email": "ann@bench.example"})
    key = post("/api/v1/keys", {"kind": "push-api-v2", "app_id": app_id, "per_minute": 10_000_000})
    return {"creds": creds, "key": key["key"], "company": key["company_id"]}


def _xml(fields: dict[str, Any]) -> bytes:
    parts = "".join(
        f"<{k}>{'true' if v is True else 'false' if v is False else v}</{k}>"
        for k, v in sorted(fields.items())
    )
    return (f'<PushRequest xmlns:i="{XSI}" xmlns="urn:bench">{parts}</PushRequest>').encode()


async def _attacks(port: int, rounds: int) -> dict[str, dict[str, float]]:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(StatusConn, "127.0.0.1", port)
    found: dict[str, dict[str, float]] = {}
    for name, body in (
        ("billion_laughs", BILLION_LAUGHS),
        ("quadratic_blowup", QUADRATIC),
        ("external_entity", EXTERNAL),
    ):
        times = []
        request = raw_post("/api/v2/push", {"Content-Type": "application/xml"}, body)
        for _ in range(rounds):
            started = time.perf_counter()
            status = await conn.request(request)
            times.append((time.perf_counter() - started) * 1000)
            if status != 400:
                raise RuntimeError(f"{name}: HTTP {status}, expected 400")
        found[name] = {
            "median_ms": round(statistics.median(times), 2),
            "max_ms": round(max(times), 2),
            "bytes": len(body),
        }
    if conn.transport is not None:
        conn.transport.close()
    return found


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    server = OwnServer(keep_dir=args.keep_data)
    server.start()
    try:
        ctx = _setup(server)
        pid = server.proc.pid if server.proc else None
        fields = {
            "UserEmail": "ann@bench.example",
            "Title": "Your order",
            "Body": "It shipped",
            "Sound": True,
            "ExpirySecs": 3600,
            "CompanyId": ctx["company"],
            "IntegrationKey": ctx["key"],
        }
        phases = {
            "single": [
                raw_post(
                    "/v1/post",
                    ctx["creds"],
                    orjson.dumps({"event": "order", "trackers": {"n": "1"}}),
                )
            ],
            "json": [raw_post("/api/v2/push?format=json", {}, orjson.dumps(fields))],
            "xml": [raw_post("/api/v2/push", {"Content-Type": "application/xml"}, _xml(fields))],
        }
        result: dict[str, Any] = {"concurrency": args.concurrency, "duration": args.duration}
        server.settle(60)
        for name, requests in phases.items():
            log(f"phase {name}")
            statuses, elapsed, cpu, ok = closed_loop_phase(
                server.port, pid, requests, args.concurrency, args.duration, args.max_requests
            )
            result[name] = {
                "requests_per_s": round(ok / elapsed, 1),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "server_cpu_ms_per_request": round(1000 * cpu / ok, 3) if ok else None,
                "settle_seconds": round(server.settle(120), 1),
            }
        single = result["single"]["requests_per_s"]
        for name in ("json", "xml"):
            result[name]["vs_single"] = round(result[name]["requests_per_s"] / single, 2)
        log("attack bodies")
        before = peak_rss_kib(pid)
        result["attacks"] = asyncio.run(_attacks(server.port, args.attack_rounds))
        result["peak_rss_kib"] = {"before_attacks": before, "after_attacks": peak_rss_kib(pid)}
        worst = max(a["max_ms"] for a in result["attacks"].values())
        result["target_attacks_50ms"] = "PASS" if worst <= 50 else "FAIL"
        result["targets"] = [
            target(
                "each XML attack body answered 400 within 50 ms",
                f"slowest {worst} ms",
                worst <= 50,
                worst,
            )
        ]
        return result
    finally:
        server.stop()


def print_table(r: dict[str, Any]) -> None:
    print(f"Push API v2, concurrency {r['concurrency']}, {r['duration']} s per phase")
    print(f"{'phase':<8} {'req/s':>9} {'vs single':>10} {'cpu ms/req':>11}  statuses")
    for name in ("single", "json", "xml"):
        p = r[name]
        print(
            f"{name:<8} {p['requests_per_s']:>9} {p.get('vs_single', 1.0):>10} "
            f"{p['server_cpu_ms_per_request'] or '-':>11}  {p['statuses']}"
        )
    for name, a in r["attacks"].items():
        times = f"{a['median_ms']} ms median, {a['max_ms']} max"
        print(f"{name:<18} {a['bytes']:>8} bytes: 400 in {times}")
    print(f"server peak RSS (KiB): {r['peak_rss_kib']}")
    print_targets(r["targets"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=100_000)
    ap.add_argument("--attack-rounds", type=int, default=50)
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.attack_rounds < 1:
        ap.error("concurrency, duration and attack-rounds must be positive")
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
