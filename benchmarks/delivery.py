"""Provider delivery benchmark: ONE notification to N devices of one push platform, through
the real provider transports, to the local fakes of ``pushgate.testing``.

One run, all on loopback, per provider (``--provider webpush|apns|fcm|all``):

1. setup     - the fakes start, each in its own process (fork) so none shares a GIL with the
               server or with this process; ``pushgate serve`` starts on a temp dir (SQLite and
               the embedded queue unless ``--database-url``) trusting the fakes' CA; per
               provider an account, an app, its credentials (minted by the fake; Web Push: the
               app's generated VAPID key, subscriptions made by the fake with its public key)
               and N devices (and subscribers) registered through the bulk registration,
               ``POST /api/v1/apps/{app}/subscribers/import``, 1,000 per request (not measured);
2. baselines - in this process, against the same fake process:
               webpush: the bare RFC 8291 ``encrypt`` in a single-thread loop over the same N
               subscriptions and payload (the encryption ceiling, no I/O), and a plain loop of
               ``pywebpush.webpush(...)`` (what a Python team writes today; bounded by
               ``--pywebpush-max`` messages and ``--pywebpush-seconds``);
               apns: the bare ``Http2Sender`` sending the same N requests (500 in flight, as
               the server's transport does) - no Pushgate around it;
               fcm: FCM's own sender (``NegotiatedSender``: HTTP/2 when the fake offers it
               in ALPN, as FakeFcm and FCM do, else ``Http1Sender``) sending the same N
               requests (64 in flight);
3. pushgate  - per repeat, a new ``POST /api/v1/notifications``; the time from sending the
               post until the fake has received all N AND ``GET /apps/{app}/delivery-counts``
               shows all N more deliveries ``sent`` -> deliveries/s = N / that time. The fake
               process polls its own count every 2 ms and reports when it saw the first and
               the last; this process polls the counts (every 20 ms) only after the fake has
               everything, so the polling does not load the server during the delivery.

Targets (printed PASS/FAIL; exit code 0 whatever they say, 2 only when the harness fails):
webpush >= 5,000 deliveries/s, >= 0.6 x the encryption ceiling and >= 10 x the pywebpush loop;
apns >= 10,000 deliveries/s; fcm >= 5,000 deliveries/s. APNs and FCM also report the ratio to
their bare-sender baseline (no target on it).

    .venv/bin/python -m benchmarks.delivery                        # all three, 5,000 devices
    .venv/bin/python -m benchmarks.delivery --provider apns --devices 10000 --repeats 5
    .venv/bin/python -m benchmarks.delivery --provider webpush --json-out webpush.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import HarnessError
from benchmarks.harness.child import Child
from benchmarks.harness.http import check, http_request
from benchmarks.harness.machine import (
    cpu_seconds_pid,
    cpu_seconds_self,
    machine_busy,
    machine_info,
    source_version,
)
from benchmarks.harness.report import (
    add_output_options,
    fmt,
    pct,
    print_targets,
    run_and_report,
    utc_now,
)
from benchmarks.harness.server import LOOP, Clock, run_loop
from benchmarks.harness.stats import median
from pushgate.testing.server import ServerProcess, create_account
from pushgate.testing.tls import local_ca

PROVIDERS = ("webpush", "apns", "fcm")
PLATFORM = {"webpush": "web", "apns": "ios", "fcm": "android"}
TARGET_RATE = {"webpush": 5_000.0, "apns": 10_000.0, "fcm": 5_000.0}
TARGET_CEILING_RATIO = 0.6  # webpush: x the bare encryption loop
TARGET_PYWEBPUSH_RATIO = 10.0  # webpush: x the pywebpush loop
APNS_TOPIC = "com.example.bench"
MESSAGE = {"title": "Delivery benchmark", "message": "Your order #A-1234 has shipped"}
DATA = {"order": "A-1234", "kind": "shipping"}
IMPORT_BATCH = 1000  # entries per bulk registration request
APNS_CONCURRENCY = 500  # what transports/registry.py gives the APNs transport
FCM_CONCURRENCY = 64  # PUSHGATE_PROVIDER_CONNECTIONS default
COUNTS_POLL_S = 0.02


# --------------------------------------------------------------------------------------------
# The fakes, each in a process of its own, driven over a pipe
# --------------------------------------------------------------------------------------------


def _fake_entry(pipe: Any, kind: str) -> None:
    """Run one fake until told to stop. Commands: info, subscribe, count, wait, stop."""
    from pushgate.testing.fake_apns import FakeApns
    from pushgate.testing.fake_fcm import FakeFcm
    from pushgate.testing.fake_webpush import FakeWebPush

    fake: Any
    count: Callable[[], int]
    if kind == "webpush":
        fake = FakeWebPush()
        count = lambda: fake.received_count  # noqa: E731
        refused = lambda: fake.refused  # noqa: E731
    elif kind == "apns":
        fake = FakeApns(keep_requests=False)
        count = lambda: fake.received_count  # noqa: E731
        refused = lambda: 0  # noqa: E731 - refused requests are counted as received
    else:
        fake = FakeFcm()
        count = lambda: fake.received_count  # noqa: E731
        refused = lambda: 0  # noqa: E731
    fake.start()
    try:
        while True:
            cmd, args = pipe.recv()
            if cmd == "stop":
                break
            try:
                if cmd == "info":
                    info: dict[str, Any] = {"url": fake.url, "ca_file": str(fake.ca_file)}
                    if kind == "apns":
                        info["credentials"] = fake.credentials(topic=APNS_TOPIC)
                    else:
                        info["credentials"] = fake.credentials()
                    if kind == "webpush":
                        info["public_key"] = fake.public_key
                    pipe.send(("ok", info))
                elif cmd == "subscribe":
                    key, n = args
                    pipe.send(("ok", [fake.subscribe(key) for _ in range(n)]))
                elif cmd == "count":
                    pipe.send(("ok", (count(), refused())))
                elif cmd == "wait":
                    target, start, timeout = args
                    deadline = time.monotonic() + timeout
                    first = None
                    while True:
                        c = count()
                        now = time.monotonic()
                        if first is None and c > start:
                            first = now
                        if c >= target or now >= deadline:
                            break
                        time.sleep(0.002)
                    pipe.send(
                        (
                            "ok",
                            {
                                "reached": c >= target,
                                "count": c,
                                "first": first,
                                "last": now,
                                "refused": refused(),
                            },
                        )
                    )
                else:
                    pipe.send(("error", f"unknown command {cmd!r}"))
            except Exception as exc:  # report anything to the parent
                pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        fake.stop()
        pipe.close()


class FakeProcess(Child):
    def __init__(self, kind: str) -> None:
        super().__init__(f"fake {kind}", _fake_entry, kind)
        self.kind = kind
        self.info: dict[str, Any] = self.call("info", timeout=60)

    def close(self, command: str | None = "stop", grace: float = 10.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send(command or "stop")
        self.join(grace)


# --------------------------------------------------------------------------------------------
# Setup through Pushgate's API
# --------------------------------------------------------------------------------------------


def ios_token() -> str:
    return secrets.token_hex(32)


def android_token() -> str:
    return secrets.token_urlsafe(120).replace("-", "_")[:152]


def register_devices(
    base: str, user_token: str, app_id: str, platform: str, addresses: list[Any], deadline: float
) -> int:
    """Register one device (and a subscriber) per address through the bulk registration,
    ``POST /api/v1/apps/{app}/subscribers/import``, 1,000 per request."""
    auth = {"Authorization": f"Bearer {user_token}"}
    path = f"/api/v1/apps/{app_id}/subscribers/import"
    done = 0
    for start in range(0, len(addresses), IMPORT_BATCH):
        left = deadline - time.monotonic()
        if left <= 0:
            raise HarnessError(f"time limit reached while registering ({done} done)")
        entries = []
        for i in range(start, min(start + IMPORT_BATCH, len(addresses))):
            device: dict[str, Any] = {"platform": platform, "name": f"bench-{i}"}
            device["subscription" if platform == "web" else "token"] = addresses[i]
            entries.append({"identifiers": {"external_id": f"bench-{i}"}, "devices": [device]})
        body = orjson.dumps({"entries": entries})
        answer = check(*http_request("POST", base, path, auth, body, timeout=min(120, left)), path)
        if answer["rejected"]:
            raise HarnessError(f"register {platform} devices: {answer['rejected'][:3]}")
        done += int(answer["devices"]["new"])
    return done


class Tenant:
    """One account with one app, for one provider (a notification reaches every device of the
    account, so each provider gets its own)."""

    def __init__(self, server: ServerProcess, name: str, env: dict[str, str]) -> None:
        self.base = server.url
        self.user_token = str(create_account(server.data_dir, name, env)["user_token"])
        self.bearer = {"Authorization": f"Bearer {self.user_token}"}
        app = check(
            *http_request(
                "POST",
                self.base,
                "/v1/apps/add",
                {"x-instapush-token": self.user_token},
                orjson.dumps({"title": f"bench {name}"}),
            ),
            "apps/add",
        )
        self.app_id = str(app["id"])

    def put_credentials(self, platform: str, credentials: dict[str, Any]) -> None:
        path = f"/api/v1/apps/{self.app_id}/credentials/{platform}"
        check(*http_request("PUT", self.base, path, self.bearer, orjson.dumps(credentials)), path)

    def vapid_public_key(self) -> str:
        path = f"/api/v1/apps/{self.app_id}/web-push/public-key"
        return str(
            check(*http_request("GET", self.base, path, self.bearer, None), path)["public_key"]
        )

    def counts(self) -> dict[str, int]:
        path = f"/api/v1/apps/{self.app_id}/delivery-counts"
        data = check(*http_request("GET", self.base, path, self.bearer, None), path, ok=(200,))
        return {k: int(v) for k, v in data["counts"].items()}

    def post(self, seq: int) -> int:
        body = {"app_id": self.app_id, **MESSAGE, "data": {**DATA, "seq": seq}}
        status, data = http_request(
            "POST", self.base, "/api/v1/notifications", self.bearer, orjson.dumps(body)
        )
        return int(check(status, data, "POST /api/v1/notifications")["id"])


# --------------------------------------------------------------------------------------------
# Baselines (in this process; the fake is in its own)
# --------------------------------------------------------------------------------------------


def _content(seq: int) -> Any:
    from pushgate.transports.base import Content

    now = int(time.time() * 1000)
    return Content(
        notification_id=1_000_000 + seq,
        account_id=1,
        app_key="bench",
        event=None,
        title=MESSAGE["title"],
        message=MESSAGE["message"],
        data_json=orjson.dumps({**DATA, "seq": seq}).decode(),
        created_ms=now,
        expires_ms=now + 86_400_000,
    )


def encryption_ceiling(subscriptions: list[dict[str, Any]]) -> dict[str, Any]:
    """The bare RFC 8291 ``encrypt`` over the same subscriptions and payload, one thread."""
    from pushgate.transports.webpush import parse_subscription, payload
    from pushgate.transports.webpush_crypto import encrypt

    parsed = [parse_subscription(orjson.dumps(s).decode()) for s in subscriptions]
    plaintext = orjson.dumps(payload(_content(0)))
    cpu0 = cpu_seconds_self()
    t0 = time.perf_counter()
    for s in parsed:
        encrypt(plaintext, s.p256dh, s.auth, ua_key=s.key)
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds_self() - cpu0
    return {
        "messages": len(parsed),
        "seconds": round(seconds, 4),
        "per_s": round(len(parsed) / seconds, 1),
        "cpu_us_per_message": round(cpu / len(parsed) * 1e6, 1),
        "plaintext_bytes": len(plaintext),
    }


def pywebpush_loop(
    fake: FakeProcess, max_messages: int, max_seconds: float, log: Any
) -> dict[str, Any]:
    """A plain loop of ``pywebpush.webpush`` to subscriptions of the fake (made with the fake's
    own VAPID key, which pywebpush signs with on every call, from a PEM file)."""
    import requests
    from pywebpush import webpush

    from pushgate.transports.webpush import payload

    creds = fake.info["credentials"]
    subs = fake.call("subscribe", None, max_messages, timeout=120)
    data = orjson.dumps(payload(_content(0))).decode()
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(creds["private_key"])
        key_file = f.name
    session = requests.Session()
    session.verify = fake.info["ca_file"]
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats verify=
    sent = failed = 0
    first_error = None
    statuses: dict[str, int] = {}
    try:
        start_count = fake.call("count")[0]
        cpu0 = (cpu_seconds_self(), fake.cpu())
        t0 = time.perf_counter()
        for sub in subs:
            if time.perf_counter() - t0 >= max_seconds:
                break
            try:
                resp = webpush(
                    sub,
                    data,
                    vapid_private_key=key_file,
                    vapid_claims={"sub": creds["subject"]},
                    requests_session=session,
                    ttl=3600,
                )
            except Exception as exc:  # WebPushException, requests errors: count, go on
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                failed += 1
                continue
            code = str(getattr(resp, "status_code", "?"))
            statuses[code] = statuses.get(code, 0) + 1
            if code in ("200", "201", "202"):
                sent += 1
            else:
                failed += 1
        seconds = time.perf_counter() - t0
        cpu = _cpu_pct(cpu0, fake, seconds)
        received = fake.call("count")[0] - start_count
    finally:
        session.close()
        os.unlink(key_file)
    log(f"  pywebpush loop: {sent} sent in {seconds:.2f} s ({sent / seconds:,.0f}/s)")
    if first_error:
        log(f"  pywebpush errors ({failed}), first: {first_error}")
    return {
        "messages": sent + failed,
        "sent": sent,
        "failed": failed,
        "statuses": statuses,
        "first_error": first_error,
        "cpu_pct": cpu,
        "received_by_fake": received,
        "seconds": round(seconds, 3),
        "per_s": round(sent / seconds, 1) if seconds else None,
    }


def _cpu_pct(cpu0: tuple[float, float | None], fake: FakeProcess, wall: float) -> dict:
    """CPU of this process (the bare sender) and of the fake since ``cpu0``, % of a core."""
    me, other = cpu_seconds_self() - cpu0[0], fake.cpu()
    return {
        "sender": round(100 * me / wall, 1),
        "fake": round(100 * (other - cpu0[1]) / wall, 1)
        if other is not None and cpu0[1] is not None
        else None,
    }


async def _bare_round(
    sender: Any, fake: FakeProcess, build: Callable[[], list[Any]], concurrency: int
) -> dict:
    """One timed round of a bare sender: the requests are built inside the timed part, as the
    transport builds them per device."""
    cpu0 = (cpu_seconds_self(), fake.cpu())
    t0 = time.perf_counter()
    requests_ = build()
    good = await _bare_send(sender, requests_, concurrency, 200)
    seconds = time.perf_counter() - t0
    cpu = _cpu_pct(cpu0, fake, seconds)
    return {
        "ok": good,
        "seconds": round(seconds, 4),
        "per_s": round(len(requests_) / seconds, 1),
        "cpu_pct": cpu,
        # CPU of the sending process (this one) per request
        "sender_cpu_us_per_request": round(cpu["sender"] / 100 * seconds / len(requests_) * 1e6, 1),
    }


async def _bare_send(sender: Any, requests_: list[Any], concurrency: int, ok: int) -> int:
    """Send the requests with ``concurrency`` workers; how many were answered ``ok``."""
    it = iter(requests_)
    good = 0

    async def worker() -> None:
        nonlocal good
        for request in it:
            response = await sender.send(request)
            if response.status == ok:
                good += 1

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests_)))))
    return good


async def _bare_apns(fake: FakeProcess, tokens: list[str], repeats: int) -> list[dict]:
    info = fake.info
    from pushgate.domain.credentials import ApnsCredentials
    from pushgate.transports.apns import (
        build_request,
        encode_payload,
        provider_token,
        request_headers,
    )
    from pushgate.transports.base import Target
    from pushgate.transports.http2 import Http2Sender

    creds = ApnsCredentials.parse(info["credentials"])
    sender = Http2Sender(ca_file=Path(info["ca_file"]), timeout_seconds=10.0)
    rounds = []
    try:
        bearer = provider_token(creds, time.time())
        for r in range(repeats):
            content = _content(r)
            body = encode_payload(content)
            assert isinstance(body, bytes)
            headers = request_headers(creds, content, bearer)
            rounds.append(
                await _bare_round(
                    sender,
                    fake,
                    lambda: [
                        build_request(info["url"], Target(i, t), headers, body)  # noqa: B023
                        for i, t in enumerate(tokens)
                    ],
                    APNS_CONCURRENCY,
                )
            )
    finally:
        await sender.close()
    return rounds


async def _bare_fcm(
    fake: FakeProcess, tokens: list[str], repeats: int, concurrency: int = FCM_CONCURRENCY
) -> list[dict]:
    info = fake.info
    from pushgate.domain.credentials import STORED, FcmCredentials
    from pushgate.transports.fcm import (
        message_tail,
        payload,
        send_body,
        send_headers,
        send_url,
        token_request,
    )
    from pushgate.transports.http import ProviderRequest
    from pushgate.transports.oauth import fetch_grant
    from pushgate.transports.registry import fcm_sender

    creds = FcmCredentials.parse(info["credentials"], STORED)  # (token_uri: the fake's)
    sender = fcm_sender(  # the FCM transport's own
        ca_file=Path(info["ca_file"]), timeout_seconds=10.0, max_connections=concurrency
    )
    rounds = []
    try:
        grant = await fetch_grant(sender, token_request(creds, int(time.time())), "FCM")
        url = send_url(info["url"], creds.project_id)
        headers = send_headers(grant.access_token)
        for r in range(repeats):
            tail = message_tail(payload(_content(r), int(time.time() * 1000)))
            rounds.append(
                await _bare_round(
                    sender,
                    fake,
                    lambda: [
                        ProviderRequest("POST", url, headers, send_body(t, tail))  # noqa: B023
                        for t in tokens
                    ],
                    concurrency,
                )
            )
    finally:
        await sender.close()
    return rounds


# --------------------------------------------------------------------------------------------
# Pushgate rounds
# --------------------------------------------------------------------------------------------


def pushgate_rounds(
    tenant: Tenant,
    fake: FakeProcess,
    n: int,
    repeats: int,
    server_pid: int | None,
    clock: Clock,
    round_timeout: float,
    log: Any,
) -> list[dict[str, Any]]:
    rounds = []
    for r in range(repeats):
        clock.check(f"round {r + 1}")
        timeout = max(1.0, min(round_timeout, clock.left()))
        before, _ = fake.call("count")
        sent_before = tenant.counts().get("sent", 0)
        cpu0 = (cpu_seconds_pid(server_pid), fake.cpu(), machine_busy(), cpu_seconds_self())
        t0 = time.monotonic()
        nid = tenant.post(r)
        t_posted = time.monotonic()
        fake.send("wait", before + n, before, timeout)
        got = fake.result(timeout + 30)
        counts: dict[str, int] = {}
        t_sent = None
        while True:  # the server marks a delivery sent after the fake answered it
            counts = tenant.counts()
            now = time.monotonic()
            if counts.get("sent", 0) >= sent_before + n:
                t_sent = now
                break
            if now - t0 >= timeout:
                break
            time.sleep(COUNTS_POLL_S)
        cpu1 = (cpu_seconds_pid(server_pid), fake.cpu(), machine_busy(), cpu_seconds_self())
        wall = time.monotonic() - t0
        done = got["reached"] and t_sent is not None
        end = max(got["last"], t_sent) if done and t_sent is not None else None
        seconds = end - t0 if end is not None else None

        def pct(i: int, cpu0: tuple = cpu0, cpu1: tuple = cpu1, wall: float = wall) -> Any:
            a, b = cpu0[i], cpu1[i]
            return round(100 * (b - a) / wall, 1) if a is not None and b is not None else None

        def per(i: int, cpu0: tuple = cpu0, cpu1: tuple = cpu1) -> Any:
            a, b = cpu0[i], cpu1[i]
            return round(1e6 * (b - a) / n, 1) if a is not None and b is not None else None

        row = {
            "notification_id": nid,
            "complete": done,
            "received_by_fake": got["count"] - before,
            "refused_by_fake": got["refused"],
            "sent": counts.get("sent", 0) - sent_before,
            "counts": counts,
            "post_ms": round((t_posted - t0) * 1000, 1),
            "first_at_fake_ms": round((got["first"] - t0) * 1000, 1) if got["first"] else None,
            "all_at_fake_ms": round((got["last"] - t0) * 1000, 1) if got["reached"] else None,
            "all_sent_ms": round((t_sent - t0) * 1000, 1) if t_sent is not None else None,
            "seconds": round(seconds, 4) if seconds is not None else None,
            "deliveries_per_s": round(n / seconds, 1) if seconds else None,
            "cpu_pct": {"server": pct(0), "fake": pct(1), "bench": pct(3), "machine": pct(2)},
            # CPU seconds of the process over the round / the round's deliveries
            "cpu_us_per_delivery": {"server": per(0), "fake": per(1)},
            "wall_s": round(wall, 4),
        }
        cpu = row["cpu_pct"]
        if None not in cpu.values():
            others = cpu["machine"] - cpu["server"] - cpu["fake"] - cpu["bench"]
            cpu["others"] = round(others, 1)
        rounds.append(row)
        if done:
            log(
                f"  round {r + 1}: {n:,} in {seconds:.3f} s = {n / seconds:,.0f}/s "
                f"(fake has all at {row['all_at_fake_ms']} ms, all sent at "
                f"{row['all_sent_ms']} ms; server {row['cpu_pct']['server']}% CPU = "
                f"{row['cpu_us_per_delivery']['server']} us/delivery, "
                f"fake {row['cpu_pct']['fake']}%)"
            )
        else:
            log(
                f"  round {r + 1}: INCOMPLETE after {timeout:.0f} s: fake got "
                f"{row['received_by_fake']} of {n}, sent {row['sent']}, counts {counts}"
            )
            # later rounds would start with a backlog
            break
    return rounds


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class Profiler:
    """``py-spy record`` attached to the server process for the Pushgate rounds only (not
    the setup); raw stacks, 200 samples/s. Stopped with SIGINT, when py-spy writes its file."""

    def __init__(self, spy: str, pid: int, out: Path) -> None:
        self.out = out
        command = [spy, "record", "--format", "raw", "-r", "200", "--pid", str(pid),
                   "-o", str(out)]  # fmt: skip
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)  # attached before the first round
        if self._proc.poll() is not None:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise HarnessError(f"py-spy could not attach to the server: {err[-500:]}")

    def stop(self) -> None:
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def run_provider(
    kind: str,
    args: argparse.Namespace,
    server: ServerProcess,
    fake: FakeProcess,
    env: dict[str, str],
    clock: Clock,
    log: Any,
) -> dict[str, Any]:
    n = args.devices
    platform = PLATFORM[kind]
    out: dict[str, Any] = {"provider": kind, "platform": platform, "devices": n}
    log(f"[{kind}] setup: account, app, credentials, {n:,} {platform} devices ...")
    tenant = Tenant(server, f"bench-{kind}", env)
    if kind == "webpush":
        addresses: list[Any] = fake.call("subscribe", tenant.vapid_public_key(), n, timeout=300)
    else:
        tenant.put_credentials(platform, fake.info["credentials"])
        addresses = [ios_token() if kind == "apns" else android_token() for _ in range(n)]
    t0 = time.perf_counter()
    registered = register_devices(
        server.url, tenant.user_token, tenant.app_id, platform, addresses, clock.deadline
    )
    if registered != n:
        raise HarnessError(f"registered {registered} new devices of {n}")
    reg = time.perf_counter() - t0
    out["registration"] = {"seconds": round(reg, 2), "per_s": round(n / reg, 1)}
    log(f"  registered in {reg:.1f} s ({n / reg:,.0f}/s)")

    clock.check(f"{kind} baselines")
    base: dict[str, Any] = {}
    if kind == "webpush":
        log("  baseline: bare encryption loop ...")
        base["encryption_ceiling"] = encryption_ceiling(addresses)
        log(f"  encryption ceiling: {base['encryption_ceiling']['per_s']:,.0f}/s")
        if args.pywebpush_max > 0:
            log(
                f"  baseline: pywebpush loop (<= {args.pywebpush_max} messages, "
                f"<= {args.pywebpush_seconds:.0f} s) ..."
            )
            base["pywebpush"] = pywebpush_loop(
                fake, args.pywebpush_max, min(args.pywebpush_seconds, clock.left()), log
            )
    else:
        what = "Http2Sender" if kind == "apns" else "NegotiatedSender (HTTP/2)"
        log(f"  baseline: bare {what}, same requests, {args.repeats} x {n:,} ...")
        if kind == "apns":
            rounds = run_loop(_bare_apns(fake, addresses, args.repeats))
        else:  # as many connections as the server's transport gets
            conns = args.provider_connections or FCM_CONCURRENCY
            rounds = run_loop(_bare_fcm(fake, addresses, args.repeats, conns))
        base["bare_sender"] = {
            "sender": what,
            "rounds": rounds,
            "median_per_s": median([x["per_s"] for x in rounds], 1),
            "median_cpu_us_per_request": median(
                [x["sender_cpu_us_per_request"] for x in rounds], 1
            ),
        }
        log(f"  bare {what}: median {base['bare_sender']['median_per_s']:,.0f}/s")
    out["baselines"] = base

    clock.check(f"{kind} rounds")
    log(f"  pushgate: {args.repeats} notifications x {n:,} devices ...")
    profiler = None
    if args.profile and server.pid is not None:
        spy = args.py_spy or shutil.which("py-spy")
        if spy is None:
            raise HarnessError("--profile needs py-spy (on PATH, or --py-spy)")
        out_path = Path(f"delivery-{kind}.pyspy.txt").resolve()
        log(f"  py-spy attached to the server for the rounds (profile: {out_path})")
        profiler = Profiler(spy, server.pid, out_path)
        out["profile"] = str(out_path)
    try:
        out["rounds"] = pushgate_rounds(
            tenant, fake, n, args.repeats, server.pid, clock, args.round_timeout, log
        )
    finally:
        if profiler is not None:
            profiler.stop()
    out["median_server_cpu_us_per_delivery"] = median(
        [x["cpu_us_per_delivery"]["server"] for x in out["rounds"] if x["complete"]], 1
    )
    rates = [x["deliveries_per_s"] for x in out["rounds"]]
    out["median_deliveries_per_s"] = median(rates, 1) if all(rates) else None
    out["best_deliveries_per_s"] = max((v for v in rates if v), default=None)
    out["targets"] = _targets(kind, out, n)
    return out


def _targets(kind: str, r: dict[str, Any], n: int) -> list[dict[str, Any]]:
    med = r["median_deliveries_per_s"]
    complete = all(x["complete"] for x in r["rounds"]) and len(r["rounds"]) > 0
    shown = f"{med:,.0f}/s" if med else "incomplete"
    t = [
        {
            "target": f"{kind}: >= {TARGET_RATE[kind]:,.0f} deliveries/s",
            "measured": f"median {shown} ({len(r['rounds'])} repeats x {n:,} devices)",
            "value": med,
            "pass": bool(complete and med and med >= TARGET_RATE[kind]),
        }
    ]
    b = r["baselines"]
    if kind == "webpush":
        ceiling = b["encryption_ceiling"]["per_s"]
        ratio = med / ceiling if med and ceiling else None
        t.append(
            {
                "target": f"webpush: >= {TARGET_CEILING_RATIO} x bare encryption ceiling",
                "measured": f"{shown} vs ceiling {ceiling:,.0f}/s = "
                + (f"{ratio:.2f} x" if ratio else "-"),
                "value": round(ratio, 3) if ratio else None,
                "pass": bool(complete and ratio and ratio >= TARGET_CEILING_RATIO),
            }
        )
        pw = b.get("pywebpush")
        if pw:
            pw_rate = pw["per_s"]
            ratio = med / pw_rate if med and pw_rate else None
            t.append(
                {
                    "target": f"webpush: >= {TARGET_PYWEBPUSH_RATIO:.0f} x pywebpush loop",
                    "measured": f"{shown} vs pywebpush {pw_rate:,.0f}/s = "
                    + (f"{ratio:.1f} x" if ratio else "-"),
                    "value": round(ratio, 2) if ratio else None,
                    "pass": bool(complete and ratio and ratio >= TARGET_PYWEBPUSH_RATIO),
                }
            )
    else:
        bm = b["bare_sender"]["median_per_s"]
        ratio = med / bm if med and bm else None
        r["ratio_to_bare_sender"] = round(ratio, 3) if ratio else None
    return t


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    clock = Clock(args.time_limit)
    kinds = list(PROVIDERS) if args.provider == "all" else [args.provider]
    result: dict[str, Any] = {
        "benchmark": "delivery",
        "date": utc_now(),
        "source": source_version(),
        "machine": machine_info(LOOP),
        "config": {
            "providers": kinds,
            "devices": args.devices,
            "repeats": args.repeats,
            "database_url": args.database_url,
            "time_limit_s": args.time_limit,
            "provider_connections": args.provider_connections,
            "fakes": "one process per fake (fork), none in this process",
        },
        "providers": {},
    }
    ca = local_ca()  # created before forking: every fake serves a certificate of this one CA
    fakes: dict[str, FakeProcess] = {}
    server: ServerProcess | None = None
    data_dir = Path(tempfile.mkdtemp(prefix="pushgate-bench-delivery-"))
    try:
        for kind in kinds:
            log(f"starting fake {kind} (own process) ...")
            fakes[kind] = FakeProcess(kind)
        env = {
            "PUSHGATE_PROVIDER_CA_FILE": str(ca.ca_file),
            # The fakes listen on loopback: the egress policy and the FCM token_uri check
            # must let the server reach them.
            "PUSHGATE_EGRESS_ALLOW": "127.0.0.0/8",
            "PUSHGATE_FCM_TOKEN_HOSTS": "127.0.0.1",
        }
        if "apns" in fakes:
            env["PUSHGATE_APNS_URL"] = fakes["apns"].info["url"]
        if "fcm" in fakes:
            env["PUSHGATE_FCM_URL"] = fakes["fcm"].info["url"]
        if args.database_url:
            env["PUSHGATE_DATABASE_URL"] = args.database_url
        if args.provider_connections:
            env["PUSHGATE_PROVIDER_CONNECTIONS"] = str(args.provider_connections)
        log("starting pushgate serve ...")
        server = ServerProcess(data_dir, env).start()
        result["server_pid"] = server.pid
        for kind in kinds:
            clock.check(kind)
            try:
                result["providers"][kind] = run_provider(
                    kind, args, server, fakes[kind], env, clock, log
                )
            except HarnessError as exc:
                log(f"[{kind}] harness error: {exc}")
                result["providers"][kind] = {"provider": kind, "error": str(exc), "targets": []}
            if not server.running:
                raise HarnessError(f"the server died:\n{server.output()[-3000:]}")
    except Exception:
        if server is not None:
            log(server.output()[-3000:])
        raise
    finally:
        if server is not None:
            result["server_exit"] = server.stop()
        for fake in fakes.values():
            fake.close()
        if args.keep_data:
            result["server_log_dir"] = str(data_dir)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(ca.ca_file.parent, ignore_errors=True)
    result["targets"] = [t for p in result["providers"].values() for t in p["targets"]]
    return result


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\nPushgate provider delivery benchmark  {r['date']}  nproc={m['nproc']}  "
        f"python {m['python']}  source {r.get('source')}"
    )
    c = r["config"]
    print(
        f"devices={c['devices']} repeats={c['repeats']} database="
        f"{c['database_url'] or 'SQLite (default)'}; {c['fakes']}\n"
    )
    for kind, p in r["providers"].items():
        if "error" in p:
            print(f"{kind}: harness error: {p['error']}\n")
            continue
        print(
            f"{kind} ({p['platform']}, {p['devices']:,} devices; registration "
            f"{p['registration']['seconds']} s)"
        )
        hdr = (
            f"  {'round':<7}{'deliv/s':>10}{'total s':>9}{'post ms':>9}{'1st ms':>9}"
            f"{'fake all':>10}{'all sent':>10}{'srv CPU':>9}{'fake CPU':>9}{'others':>8}"
            f"{'srv us/dlv':>11}"
        )
        print(hdr)
        for i, x in enumerate(p["rounds"], 1):
            cpu = x["cpu_pct"]
            print(
                f"  {i:<7}{fmt(x['deliveries_per_s']):>10}{fmt(x['seconds']):>9}"
                f"{fmt(x['post_ms']):>9}{fmt(x['first_at_fake_ms']):>9}"
                f"{fmt(x['all_at_fake_ms']):>10}{fmt(x['all_sent_ms']):>10}"
                f"{pct(cpu['server']):>9}{pct(cpu['fake']):>9}{pct(cpu.get('others')):>8}"
                f"{fmt(x['cpu_us_per_delivery']['server']):>11}"
            )
            if not x["complete"]:
                print(f"         incomplete: counts {x['counts']}")
        print(
            f"  median {fmt(p['median_deliveries_per_s'])}/s, best "
            f"{fmt(p['best_deliveries_per_s'])}/s; server CPU per delivery: median "
            f"{fmt(p['median_server_cpu_us_per_delivery'])} us"
        )
        b = p["baselines"]
        if "encryption_ceiling" in b:
            e = b["encryption_ceiling"]
            print(
                f"  baseline: bare RFC 8291 encrypt, one thread: {fmt(e['per_s'])}/s = "
                f"{fmt(e['cpu_us_per_message'])} us CPU each "
                f"({e['messages']:,} messages, {e['plaintext_bytes']} B payload)"
            )
        if "pywebpush" in b:
            w = b["pywebpush"]
            print(
                f"  baseline: pywebpush.webpush loop: {fmt(w['per_s'])}/s ({w['sent']} sent "
                f"in {w['seconds']} s, statuses {w['statuses']})"
            )
        if "bare_sender" in b:
            s = b["bare_sender"]
            per = ", ".join(fmt(x["per_s"]) for x in s["rounds"])
            cpu = s["rounds"][-1]["cpu_pct"]
            print(
                f"  baseline: bare {s['sender']}, same requests: median "
                f"{fmt(s['median_per_s'])}/s ({per}; last round: sender "
                f"{pct(cpu['sender'])} CPU, fake {pct(cpu['fake'])}); Pushgate = "
                f"{fmt(p.get('ratio_to_bare_sender'))} x; sender CPU per request: median "
                f"{fmt(s['median_cpu_us_per_request'])} us"
            )
        print()
    for kind, p in r["providers"].items():
        busy = [x["cpu_pct"].get("others") or 0 for x in p.get("rounds", [])]
        if busy and max(busy) > 25:
            print(f"WARNING: other processes used up to {max(busy):.0f}% CPU during {kind} "
                  "rounds: the machine was not quiet, figures are disturbed")  # fmt: skip
    print_targets(r["targets"], heading="targets:")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--provider", choices=(*PROVIDERS, "all"), default="all")
    ap.add_argument("--devices", type=int, default=5000, help="devices (default 5000)")
    ap.add_argument("--repeats", type=int, default=3, help="notifications (default 3)")
    ap.add_argument("--database-url", help="PUSHGATE_DATABASE_URL (default: SQLite in temp dir)")
    ap.add_argument("--provider-connections", type=int, help="PUSHGATE_PROVIDER_CONNECTIONS")
    ap.add_argument("--pywebpush-max", type=int, default=500, help="pywebpush loop messages")
    ap.add_argument("--pywebpush-seconds", type=float, default=15.0, help="pywebpush loop cap")
    ap.add_argument("--round-timeout", type=float, default=120.0, help="max s per round")
    ap.add_argument("--time-limit", type=float, default=900.0, help="max s for the whole run")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy record to the server for the rounds (not the setup); writes "
        "delivery-<provider>.pyspy.txt (raw stacks) in the current directory",
    )
    ap.add_argument("--py-spy", help="the py-spy executable (default: py-spy on PATH)")
    add_output_options(ap)
    args = ap.parse_args(argv)
    if not 1 <= args.devices <= 50_000 or not 1 <= args.repeats <= 20:
        ap.error("devices must be 1..50000 and repeats 1..20")
    return run_and_report(args, run, print_table)


if __name__ == "__main__":
    sys.exit(main())
