"""Insider faces: notifications accepted per second through the mobile batch endpoint (20 per
request) next to Instapush's single post on the same server in the same run, and web push
campaign requests per second for a 10,000-subscriber app with an attribute target.

One ``pushgate serve`` (SQLite, the embedded default, workers in the process) on a temp data
dir, loopback only. Set-up (not timed):

- app S (Instapush): one event, one channel device;
- app M (Insider mobile): 20 subscribers by e-mail, one channel device each, and an
  insider-mobile key with a quota no run reaches;
- app W (Insider web): ``--web-subscribers`` (10,000) subscribers with one web push
  subscription each, imported with ``pushgate subscribers import``; each has
  ``d_wp_browser`` one of 10 browsers, so a target of one browser selects 10 %. Their
  endpoints are a sink in a process of its own: a TLS server on loopback that answers every
  push 201 without reading it (no decryption), so a delivery costs the server what a real
  one does and the receiver almost nothing.

Phases, each closed-loop with ``--concurrency`` keep-alive connections for ``--duration``
seconds (and at most ``--max-requests`` requests):

1. single - ``POST /v1/post`` to app S: notifications accepted per second (201s);
2. batch  - ``POST /api/v2/notification/user`` with 20 notifications, one per subscriber of
            app M: notifications accepted per second = 200 answers with 20 successes x 20;
            the ratio to phase 1 is the target (>= 5);
3. web    - ``POST /v2/single/campaign_id`` with ``target {d_wp_browser: [one browser]}``:
            campaigns accepted per second (200 answers), and deliveries they made.

The server's own CPU seconds per accepted notification are shown for 1 and 2. Between phases
the benchmark waits until the server has fanned out what it accepted (no job left), so one
phase's backlog does not slow the next.

    .venv/bin/python -m benchmarks.insider
    .venv/bin/python -m benchmarks.insider --duration 5 --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sqlite3
import sys
import time
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks.harness.http import closed_loop_phase, raw_post
from benchmarks.harness.report import add_output_options, print_targets, run_and_report, target
from benchmarks.harness.server import OwnServer, free_port

BATCH = 20
BROWSERS = (
    "Edg",
    "Chrome",
    "Firefox",
    "Safari",
    "Opera",
    "Brave",
    "Vivaldi",
    "Yandex",
    "UC",
    "Arc",
)


class _Sink(asyncio.Protocol):
    """Answers each HTTP/1.1 request 201 once its body has arrived."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r", at)
                length = int(head[at + 15 : stop if stop >= 0 else len(head)])
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")


def _sink_main(port: int, cert: str, key: str) -> None:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(
            _Sink, "127.0.0.1", port, ssl=context
        )
        await server.serve_forever()

    asyncio.run(serve())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _setup(server: OwnServer, web_subscribers: int, sink_port: int) -> dict[str, Any]:
    account = server.account()
    post = account.post
    event = {"title": "order", "trackers": ["n"], "message": "order {n} shipped"}
    single, creds = account.instapush_app("single", event)
    post("/api/v1/devices", {"platform": "channel", "app_id": single})

    mobile = post("/api/v1/apps", {"title": "mobile"})["id"]
    for n in range(BATCH):
        body = {"platform": "channel", "app_id": mobile, "email": f"user{n}@bench.example"}
        post("/api/v1/devices", body)
    mobile_key = post(
        "/api/v1/keys", {"kind": "insider-mobile", "app_id": mobile, "per_minute": 10_000_000}
    )["key"]

    web = post("/api/v1/apps", {"title": "web"})["id"]
    web_key = post("/api/v1/keys", {"kind": "insider-web", "app_id": web, "per_minute": 10_000_000})
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    keys = {"p256dh": _b64(point), "auth": _b64(os.urandom(16))}
    lines = [
        orjson.dumps(
            {
                "identifiers": {"external_id": f"w{n}"},
                "attributes": {"d_wp_browser": BROWSERS[n % len(BROWSERS)]},
                "devices": [
                    {
                        "platform": "web",
                        "subscription": {
                            "endpoint": f"https://127.0.0.1:{sink_port}/push/{n}",
                            "keys": keys,
                        },
                    }
                ],
            }
        )
        for n in range(web_subscribers)
    ]
    path = server.dir / "web.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    started = time.monotonic()
    server.pushgate("subscribers", "import", "--app", web, str(path), "--json", "--quiet")
    return {
        "token": account.token,
        "single": creds,
        "mobile_key": mobile_key,
        "web_key": web_key["key"],
        "partner": web_key["partner_id"],
        "web_app": web,
        "import_seconds": round(time.monotonic() - started, 1),
    }


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    import multiprocessing

    from pushgate.testing.tls import local_ca

    ca = local_ca()
    sink_port = free_port()
    sink = multiprocessing.get_context("fork").Process(
        target=_sink_main, args=(sink_port, str(ca.cert_file), str(ca.key_file)), daemon=True
    )
    sink.start()
    server = OwnServer(keep_dir=args.keep_data)
    server.env["PUSHGATE_EGRESS_ALLOW"] = "127.0.0.0/8"
    server.env["PUSHGATE_PROVIDER_CA_FILE"] = str(ca.ca_file)
    server.start()
    try:
        log("set-up: apps, devices, keys, web subscribers")
        ctx = _setup(server, args.web_subscribers, sink_port)
        db = server.dir / "pushgate.db"
        pid = server.proc.pid if server.proc else None
        result: dict[str, Any] = {
            "concurrency": args.concurrency,
            "duration": args.duration,
            "web_subscribers": args.web_subscribers,
            "import_seconds": ctx["import_seconds"],
        }
        server.settle(120)

        singles = [
            raw_post(
                "/v1/post",
                ctx["single"],
                orjson.dumps({"event": "order", "trackers": {"n": str(n)}}),
            )
            for n in range(100)
        ]
        items = [
            {
                "identifiers": {"INSIDER.email": f"user{n}@bench.example"},
                "camp_id": 1,
                "camp_name": "bench",
                "title": "Your order",
                "message": "It shipped",
                "android": {"channel_id": 1},
                "ios": {"thread-id": 1, "badge": 1},
            }
            for n in range(BATCH)
        ]
        batch = [
            raw_post(
                "/api/v2/notification/user",
                {},
                orjson.dumps({"api_key": ctx["mobile_key"], "notifications": items}),
            )
        ]
        web = [
            raw_post(
                "/v2/single/campaign_id",
                {"Authorization": f"Bearer {ctx['web_key']}"},
                orjson.dumps(
                    {
                        "partner_id": ctx["partner"],
                        "title": "Winter sale",
                        "description": "Everything half price",
                        "link": "https://shop.example.com/sale",
                        "ttl": "3600",
                        "include_unengaged": True,
                        "target": {"attribute": "d_wp_browser", "values": [browser]},
                    }
                ),
            )
            for browser in BROWSERS
        ]
        phases = (
            ("single", singles, 1, args.max_requests),
            ("batch", batch, BATCH, args.max_requests),
            ("web", web, 1, args.web_max_requests),
        )
        for name, requests, per_request, limit in phases:
            log(f"phase {name}")
            statuses, elapsed, cpu, ok = closed_loop_phase(
                server.port, pid, requests, args.concurrency, args.duration, limit
            )
            accepted = ok * per_request
            settle = server.settle(args.settle_timeout)
            result[name] = {
                "requests_per_s": round(ok / elapsed, 1),
                "notifications_per_s": round(accepted / elapsed, 1),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "server_cpu_ms_per_notification": round(1000 * cpu / accepted, 3)
                if accepted
                else None,
                "settle_seconds": round(settle, 1),
            }
        with sqlite3.connect(db, timeout=30) as conn:
            (web_deliveries,) = conn.execute(
                "SELECT count(*) FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
                " JOIN apps a ON a.id = n.app_id WHERE a.app_key = ?",
                (ctx["web_app"],),
            ).fetchone()
        result["web"]["deliveries"] = web_deliveries
        single_rate = result["single"]["notifications_per_s"]
        ratio = result["batch"]["notifications_per_s"] / single_rate if single_rate else None
        result["batch_vs_single"] = None if ratio is None else round(ratio, 2)
        result["target_batch_5x"] = "PASS" if ratio is not None and ratio >= 5 else "FAIL"
        result["targets"] = [
            target(
                "Insider mobile batches: notifications/s >= 5 x the single post's",
                f"{result['batch_vs_single']} x",
                ratio is not None and ratio >= 5,
                result["batch_vs_single"],
            )
        ]
        return result
    finally:
        server.stop()
        sink.terminate()


def print_table(r: dict[str, Any]) -> None:
    print(
        f"Insider faces, concurrency {r['concurrency']}, {r['duration']} s per phase; "
        f"{r['web_subscribers']} web subscribers imported in {r['import_seconds']} s"
    )
    print(f"{'phase':<8} {'req/s':>9} {'notif/s':>9} {'cpu ms/notif':>13}  statuses")
    for name in ("single", "batch", "web"):
        p = r[name]
        print(
            f"{name:<8} {p['requests_per_s']:>9} {p['notifications_per_s']:>9} "
            f"{p['server_cpu_ms_per_notification'] or '-':>13}  {p['statuses']}"
        )
    print(f"web campaigns made {r['web']['deliveries']} deliveries")
    print_targets(r["targets"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16, help="HTTP connections (default 16)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--max-requests", type=int, default=100_000, help="cap per phase")
    ap.add_argument("--web-max-requests", type=int, default=300, help="cap on web campaigns")
    ap.add_argument("--web-subscribers", type=int, default=10_000)
    ap.add_argument("--settle-timeout", type=float, default=300.0)
    add_output_options(ap)
    args = ap.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.web_subscribers < len(BROWSERS):
        ap.error("concurrency and duration must be positive, web-subscribers at least 10")
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
