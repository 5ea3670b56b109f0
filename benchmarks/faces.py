"""Every vendor face's send endpoint next to the no-op floor, as the Instapush post is measured
(issue 13, target 8: "every vendor face's send endpoint is measured the same way").

One ``pushgate serve`` (SQLite, the embedded default, workers in the process) and, in the same
run, closed-loop phases of ``--duration`` seconds with ``--concurrency`` keep-alive connections,
one connected channel device (a raw WebSocket client in a process of its own), and every
request a notification to that device:

1. floor          - ``POST /api/v1/ping``, the no-op endpoint of the same server stack;
2. instapush      - ``POST /v1/post`` (201);
3. insider-mobile - ``POST /api/v2/notification/user`` with ONE notification to the device's
                    user by e-mail (200 with the user among the successes);
4. push-api-v2    - ``POST /api/v2/push?format=json`` to the user by e-mail (200 with
                    ``DevicesTargeted`` 1);
5. push-express   - ``POST /api/b/v2/send/instant`` to the app (201; the server runs with
                    ``PUSHGATE_INSTANT_DELAY_SECONDS=0``, so the sending is due at once
                    instead of the vendor's 2 minutes later);
6. floor again    - the floor is the mean of 1 and 6 (the machine drifts over a run).

Insider web push v2 (``POST /v2/single/campaign_id``) sends to web push subscriptions only,
never to a channel device, so it has no place here; ``benchmarks/insider.py`` measures it
against a loopback push service.

Each request's text carries its sequence number and send time, so the device's client counts
what it received (every accepted request exactly once: the loss check at the end) and the
post-to-device latency of each phase. Between phases the benchmark waits until the device has
everything accepted so far, so one phase's backlog does not slow the next.

Target (printed PASS/FAIL, the exit code is 0 whatever it says): accepted requests/s >= 0.7 x
the floor for each face; nothing accepted is lost.

    .venv/bin/python -m benchmarks.faces
    .venv/bin/python -m benchmarks.faces --duration 4 --json-out faces.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import HarnessError
from benchmarks.harness.http import check, http_request
from benchmarks.harness.machine import machine_info, source_version
from benchmarks.harness.report import (
    add_output_options,
    fmt,
    pct,
    print_targets,
    run_and_report,
    target,
    utc_now,
)
from benchmarks.harness.server import LOOP, OwnServer
from benchmarks.ingest import (
    EVENT,
    INSTAPUSH_BODY,
    SENT,
    SEQ,
    TARGET_RATIO,
    LoadSpec,
    ReceiverProcess,
    body_parts,
    measured_load,
    phase_summary,
    wait_delivered,
)

EMAIL = "bench@bench.example"
FACES = ("instapush", "insider-mobile", "push-api-v2", "push-express")


@dataclass(frozen=True)
class Face:
    """How one face's send request is made: path, headers, the body around the sequence
    number and the send time (``ingest.body_parts``), and its accepting status."""

    name: str
    path: str
    headers: dict[str, str]
    body: tuple[bytes, bytes, bytes]
    accepted_status: int


def _setup(server: OwnServer) -> tuple[str, dict[str, Face]]:
    """An app with one channel device of a user known by e-mail, and what each face needs to
    send to it. Returns the device's token and the faces."""
    account = server.account()
    post = account.post
    event = {"title": EVENT, "trackers": ["seq", "t"], "message": "bench {seq} at {t}"}
    app_id, creds = account.instapush_app("bench", event)
    device = post("/api/v1/devices", {"platform": "channel", "app_id": app_id, "email": EMAIL})
    quota = 10_000_000
    mobile_key = post(
        "/api/v1/keys", {"kind": "insider-mobile", "app_id": app_id, "per_minute": quota}
    )["key"]
    v2 = post("/api/v1/keys", {"kind": "push-api-v2", "app_id": app_id, "per_minute": quota})
    px_key = post("/api/v1/keys", {"kind": "push-express", "per_minute": quota})["key"]
    number = check(
        *http_request("GET", server.url, f"/api/v1/apps/{app_id}", account.auth, None), "app"
    )["number"]

    text = f"bench {SEQ} at {SENT}"  # what the device's client reads a notification by
    mobile = body_parts(
        {
            "api_key": mobile_key,
            "notifications": [
                {
                    "identifiers": {"INSIDER.email": EMAIL},
                    "camp_id": 1,
                    "camp_name": "bench",
                    "title": "bench",
                    "message": text,
                }
            ],
        }
    )
    push_api_v2 = body_parts(
        {
            "UserEmail": EMAIL,
            "Title": "bench",
            "Body": text,
            "CompanyId": v2["company_id"],
            "IntegrationKey": v2["key"],
        }
    )
    push_express = body_parts(
        {
            "name": "bench",
            "filters": {"app_ids_include": [number]},
            "push": {
                "default_lang": "en",
                "translations": [{"language": "en", "title": "bench", "text": text}],
            },
        }
    )
    faces = {
        "instapush": Face("instapush", "/v1/post", creds, INSTAPUSH_BODY, 201),
        "insider-mobile": Face("insider-mobile", "/api/v2/notification/user", {}, mobile, 200),
        "push-api-v2": Face("push-api-v2", "/api/v2/push?format=json", {}, push_api_v2, 200),
        "push-express": Face(
            "push-express",
            "/api/b/v2/send/instant",
            {"Authorization": f"Bearer {px_key}"},
            push_express,
            201,
        ),
    }
    return str(device["device_token"]), faces


def _check_bodies(server: OwnServer, faces: dict[str, Face]) -> bytes:
    """One request of each face before any load (sequence numbers 0, 1, ...), so a body the
    face refuses is a harness error with its answer rather than a phase of errors. Returns
    what was accepted, a byte per sequence number."""
    for seq, face in enumerate(faces.values()):
        a, b, c = face.body
        body = b"%s%d%s%d%s" % (a, seq, b, time.time_ns(), c)
        status, data = http_request("POST", server.url, face.path, face.headers, body)
        if status != face.accepted_status:
            raise HarnessError(f"{face.name}: HTTP {status}: {data!r}")
        if face.name == "insider-mobile" and EMAIL not in str(data):
            raise HarnessError(f"{face.name}: the user is not among the successes: {data!r}")
        if face.name == "push-api-v2" and data.get("DevicesTargeted") != 1:
            raise HarnessError(f"{face.name}: not one device targeted: {data!r}")
    return b"\x01" * len(faces)


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    server = OwnServer(keep_dir=args.keep_data)
    server.env["PUSHGATE_INSTANT_DELAY_SECONDS"] = "0"
    rx: ReceiverProcess | None = None
    result: dict[str, Any] = {
        "benchmark": "faces",
        "date": utc_now(),
        "source": source_version(),
        "machine": machine_info(LOOP),
        "config": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "max_requests": args.max_requests,
            "faces": args.faces,
        },
    }
    server.start()
    try:
        log("set-up: app, event, keys, one channel device")
        device_token, faces = _setup(server)
        checked = _check_bodies(server, faces)
        rx = ReceiverProcess(0.05, True)
        conn_info = rx.call("connect", "127.0.0.1", server.port, [device_token], 60.0, timeout=90)
        if conn_info["connected"] != 1:
            raise HarnessError(f"the device did not connect: {conn_info!r}")
        pid = server.proc.pid if server.proc else None
        accepted_all = bytearray(checked)

        def load(path: str, headers: dict[str, str], duration: float, face: Face | None) -> Any:
            spec = LoadSpec(
                host="127.0.0.1", port=server.port, path=path, headers=headers,
                concurrency=args.concurrency, duration=duration, max_posts=args.max_requests,
                rate=0, seq_start=len(accepted_all),
            )  # fmt: skip
            if face is not None:
                spec.body, spec.accepted_status = face.body, face.accepted_status
            r, cpu = measured_load(spec, pid, rx)  # type: ignore[arg-type]
            summary = phase_summary(r, cpu)
            if face is not None:
                first = len(accepted_all)
                accepted_all.extend(r.accepted_map)
                assert rx is not None
                delivered, waited = wait_delivered(rx, bytes(accepted_all), args.drain_timeout)
                summary["drain_after_s"] = round(waited, 3)
                summary["post_to_device_ms"] = {
                    k: (round(v, 3) if isinstance(v, float) else v)
                    for k, v in rx.call("latency", first, len(accepted_all)).items()
                }
                summary["lost_so_far"] = delivered["expected"] - delivered["received"]
            return summary

        log("warm-up: 1 s of each endpoint")
        load("/api/v1/ping", {}, 1.0, None)
        for name in args.faces:
            load(faces[name].path, faces[name].headers, 1.0, faces[name])

        log(f"floor: POST /api/v1/ping, {args.duration} s")
        result["floor_before"] = load("/api/v1/ping", {}, args.duration, None)
        result["faces"] = {}
        for name in args.faces:
            face = faces[name]
            log(f"{name}: POST {face.path}, {args.duration} s")
            result["faces"][name] = load(face.path, face.headers, args.duration, face)
        log(f"floor again: POST /api/v1/ping, {args.duration} s")
        result["floor_after"] = load("/api/v1/ping", {}, args.duration, None)

        floor = (result["floor_before"]["ok_per_s"] + result["floor_after"]["ok_per_s"]) / 2
        result["floor_per_s"] = round(floor, 1)
        assert rx is not None
        counts, waited = wait_delivered(rx, bytes(accepted_all), args.drain_timeout)
        result["loss"] = {
            "accepted": accepted_all.count(1),
            "received": counts["received"],
            "lost": counts["expected"] - counts["received"],
            "duplicates": counts["duplicates"],
            "unexpected": counts["unexpected"],
            "bad_messages": counts["bad_messages"],
            "reconnects": counts["reconnects"],
            "waited_s": round(waited, 3),
        }
        targets = []
        for name, phase in result["faces"].items():
            phase["vs_floor"] = round(phase["accepted_per_s"] / floor, 3) if floor else None
            targets.append(
                target(
                    f"{name}: accepted requests/s >= {TARGET_RATIO} x the floor, 1 device",
                    f"{phase['accepted_per_s']:,.0f}/s vs floor {floor:,.0f}/s = "
                    f"{phase['vs_floor']} x",
                    phase["vs_floor"] is not None and phase["vs_floor"] >= TARGET_RATIO,
                    phase["vs_floor"],
                )
            )
        loss = result["loss"]
        targets.append(
            target(
                "nothing accepted is lost, nothing delivered twice",
                f"lost {loss['lost']} of {loss['accepted']}, duplicates {loss['duplicates']}",
                loss["lost"] == 0 and loss["duplicates"] == 0,
            )
        )
        result["targets"] = targets
        return result
    finally:
        if rx is not None:
            rx.close()
        server.stop()


def print_table(r: dict[str, Any]) -> None:
    print()
    print(
        f"Pushgate faces benchmark  {r['date']}  nproc={r['machine'].get('nproc')}  "
        f"source {r['source']}"
    )
    c = r["config"]
    print(f"concurrency={c['concurrency']} duration={c['duration_s']}s, one channel device")
    print()
    head = (
        f"{'phase':16} {'ok/s':>9} {'x floor':>8} {'acc p50':>9} {'acc p99':>9} "
        f"{'p2d p50':>9} {'p2d p99':>9} {'server':>7} {'CPU/req':>9}"
    )
    print(head)
    print("-" * len(head))
    rows = [("floor", r["floor_before"])]
    rows += list(r["faces"].items())
    rows.append(("floor again", r["floor_after"]))
    for name, p in rows:
        rate = p["accepted_per_s"] if name in r["faces"] else p["ok_per_s"]
        p2d = p.get("post_to_device_ms") or {}
        server = p["cpu"].get("server_cpu_pct")
        per_request = (
            f"{1e4 * server / rate:,.0f} us" if server is not None and rate else "-"
        )  # % of a core / (requests/s) -> us
        acc = p["latency_ms"]
        print(
            f"{name:16} {fmt(rate):>9} {fmt(p.get('vs_floor'), 'x'):>8} "
            f"{fmt(acc.get('p50'), 'ms'):>9} {fmt(acc.get('p99'), 'ms'):>9} "
            f"{fmt(p2d.get('p50'), 'ms'):>9} {fmt(p2d.get('p99'), 'ms'):>9} "
            f"{pct(server):>7} {per_request:>9}"
        )
    print(f"(floor: mean of the two floor phases, {r['floor_per_s']:,.1f} req/s)")
    loss = r["loss"]
    print(
        f"loss: {loss['accepted']} accepted, {loss['received']} received, lost {loss['lost']}, "
        f"duplicates {loss['duplicates']}, unexpected {loss['unexpected']}"
    )
    print()
    print_targets(r["targets"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--concurrency", type=int, default=64, help="HTTP connections (64)")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per phase (6)")
    ap.add_argument(
        "--max-requests", type=int, default=300_000, help="cap on requests per phase (300000)"
    )
    ap.add_argument(
        "--faces",
        nargs="+",
        choices=FACES,
        default=list(FACES),
        help="which faces, in this order (all)",
    )
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="max wait for delivery")
    add_output_options(ap)
    args = ap.parse_args(argv)
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
