"""Operating a real server process: request ids, JSON access lines, the final-failure line,
Prometheus metrics (protected, by route template), readiness."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e_support import (
    NO_THROTTLE,
    ServerFactory,
    add_app,
    make_tenant,
    new_account,
    post_ok,
    register_device,
)
from prometheus_client.parser import text_string_to_metric_families

from pushgate.testing.server import ServerProcess, free_port

TOKEN = "metrics-token-0123456789"


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[ServerProcess]:
    env = {
        **NO_THROTTLE,
        "PUSHGATE_METRICS_TOKEN": TOKEN,
        "PUSHGATE_METRICS_PORT": str(metrics_port),
    }
    with ServerProcess(tmp_path_factory.mktemp("operations"), env) as srv:
        yield srv


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    lines = []
    for line in server.output().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def wait_for_line(server: ServerProcess, match: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in json_lines(server) if match(line)]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            pytest.fail(f"no such log line; the log ends:\n{server.output()[-3000:]}")
        await asyncio.sleep(0.1)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples(text).items() if n == name and wanted <= set(have))


async def scrape(http: httpx2.AsyncClient) -> str:
    resp = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


# --------------------------------------------------------------------------- request ids, logs


async def test_a_request_id_is_honoured_or_made_and_every_answer_carries_it(
    http: httpx2.AsyncClient,
) -> None:
    resp = await http.get("/api/v1/health", headers={"X-Request-Id": "client-id.42"})
    assert resp.headers["x-request-id"] == "client-id.42"
    made = (await http.get("/api/v1/health")).headers["x-request-id"]
    other = (await http.get("/api/v1/health")).headers["x-request-id"]
    assert made and other and made != other
    # An id unfit for a log line (too long, or with characters of its own) is replaced.
    for unfit in ("x" * 65, 'a"b', "a b"):
        resp = await http.get("/api/v1/health", headers={"X-Request-Id": unfit})
        assert resp.headers["x-request-id"] != unfit
    # Error answers, written by the face the request belongs to, carry it too.
    resp = await http.get("/v1/nothing-here", headers={"X-Request-Id": "lost-1"})
    assert resp.status_code == 404 and resp.headers["x-request-id"] == "lost-1"


async def test_one_json_access_line_per_request_with_its_id_and_no_secret(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant)
    secret_token = device["device_token"]
    await http.get(
        "/api/v1/channel/poll",
        params={"token": secret_token},
        headers={"X-Request-Id": "poll-1"},
    )
    line = await wait_for_line(server, lambda line: line.get("request_id") == "poll-1")
    assert line["logger"] == "pushgate.access" and line["level"] == "info"
    assert line["method"] == "GET" and line["status"] == 200 and line["face"] == "native"
    assert line["path"] == "/api/v1/channel/poll?token=[redacted]"
    assert isinstance(line["ms"], float) and line["ts"].endswith("Z")
    assert secret_token not in server.output()
    assert tenant.app_secret not in server.output()
    # The post's line names the notification it accepted: one notification can be
    # followed from its request to its deliveries.
    resp = await http.post(
        "/v1/post",
        headers={**tenant.app_headers, "X-Request-Id": "post-1"},
        json={"event": "signups", "trackers": {"email": "a@example.com", "country": "NL"}},
    )
    assert resp.status_code == 201
    line = await wait_for_line(server, lambda line: line.get("request_id") == "post-1")
    assert line["notification_id"] == int(resp.headers["x-pushgate-notification-id"])
    assert line["face"] == "instapush" and line["status"] == 201
    requests = [line for line in json_lines(server) if line.get("request_id") == "post-1"]
    assert len(requests) == 1


async def test_a_delivery_that_failed_for_good_is_one_line_with_its_reason(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    resp = await http.post(
        "/api/v1/devices",
        headers=tenant.bearer,
        json={"platform": "huawei", "app_id": tenant.app_id, "token": "A" * 64},
    )
    assert resp.status_code == 201, resp.text
    device_id = resp.json()["id"]
    resp = await http.post(
        "/api/v1/notifications",
        headers=tenant.bearer,
        json={"app_id": tenant.app_id, "message": "hello"},
    )
    assert resp.status_code == 201, resp.text
    notification_id = resp.json()["id"]
    line = await wait_for_line(
        server,
        lambda line: (
            line.get("logger") == "pushgate.delivery"
            and line.get("notification_id") == notification_id
        ),
    )
    assert line["level"] == "warning" and line["device_id"] == device_id
    assert line["transport"] == "huawei" and line["status"] == "failed"
    assert line["reason"].startswith("InvalidCertificate")
    text = await scrape(http)
    assert value(text, "pushgate_deliveries_total", transport="huawei") >= 1
    assert value(text, "pushgate_notifications_accepted_total", face="native") >= 1


# --------------------------------------------------------------------------- metrics


async def test_metrics_need_the_token_and_count_requests_by_route_template(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    assert (await http.get("/metrics")).status_code == 401
    wrong = await http.get("/metrics", headers={"Authorization": "Bearer wrong-token-000000"})
    assert wrong.status_code == 401
    tenant = await make_tenant(http, server.data_dir)
    before = await scrape(http)
    accepted = value(before, "pushgate_notifications_accepted_total", face="instapush")
    ids = [await post_ok(http, tenant) for _ in range(3)]
    for notification_id in (ids[0], 987654321):
        await http.get(f"/api/v1/notifications/{notification_id}/deliveries", headers=tenant.bearer)
    text = await scrape(http)
    name = "pushgate_http_request_duration_seconds_count"
    posted = value(text, name, face="instapush", route="/v1/post", method="POST", status="2xx")
    assert posted >= 3
    template = "/api/v1/notifications/{notification_id}/deliveries"
    assert value(text, name, route=template, method="GET", face="native") >= 2
    assert "987654321" not in text and f"/notifications/{ids[0]}/" not in text
    assert value(text, "pushgate_notifications_accepted_total", face="instapush") == accepted + 3
    assert value(text, "pushgate_group_commit_batch_size_count") >= 3
    assert value(text, "pushgate_queue_depth", queue="fanout") >= 0
    assert ("pushgate_queue_depth", frozenset({("queue", "fanout")})) in samples(text)
    assert value(text, "process_cpu_seconds_total") > 0


async def test_scrape_time_gauges_of_queues_pools_and_http2(http: httpx2.AsyncClient) -> None:
    found = samples(await scrape(http))
    for queue in ("fanout", "deliver.ios", "deliver.android"):
        age = found[("pushgate_queue_oldest_job_age_seconds", frozenset({("queue", queue)}))]
        assert 0 <= age < 60
    # SQLite: a write engine and a read engine, each with its pool.
    for engine in ("write", "read"):
        in_use = found[
            ("pushgate_db_pool_checked_out_connections", frozenset({("engine", engine)}))
        ]
        assert 0 <= in_use <= 20
    # APNs and FCM are the HTTP/2 transports; nothing is in flight to them here.
    http2 = {frozenset({("transport", "ios")}), frozenset({("transport", "android")})}
    for labels in http2:
        assert found[("pushgate_provider_http2_streams_in_flight", labels)] == 0
    assert not any(
        name == "pushgate_provider_http2_streams_in_flight" and labels not in http2
        for name, labels in found
    )


async def test_a_scheduled_notification_observes_the_scheduler_lag(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant)
    before = await scrape(http)
    count = value(before, "pushgate_scheduler_lag_seconds_count")
    total = value(before, "pushgate_scheduler_lag_seconds_sum")
    when = time.time() + 0.5
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"
    resp = await http.post(
        "/api/v1/notifications",
        headers=tenant.bearer,
        json={"app_id": tenant.app_id, "message": "later", "send_at": stamp},
    )
    assert resp.status_code == 201, resp.text
    deadline = time.monotonic() + 10
    while value(text := await scrape(http), "pushgate_scheduler_lag_seconds_count") == count:
        assert time.monotonic() < deadline, "the scheduled notification was not fanned out"
        await asyncio.sleep(0.2)
    assert value(text, "pushgate_scheduler_lag_seconds_count") == count + 1
    assert 0 <= value(text, "pushgate_scheduler_lag_seconds_sum") - total < 5


async def test_metrics_on_their_own_port(http: httpx2.AsyncClient, metrics_port: int) -> None:
    async with httpx2.AsyncClient(timeout=5.0, trust_env=False) as client:
        url = f"http://127.0.0.1:{metrics_port}"
        assert (await client.get(f"{url}/metrics")).status_code == 401
        resp = await client.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 200
        assert "pushgate_http_request_duration_seconds" in resp.text
        assert (await client.get(f"{url}/other")).status_code == 404


async def test_channel_connections_are_counted(
    http: httpx2.AsyncClient, server: ServerProcess
) -> None:
    from e2e_support import ws_connect, ws_recv, ws_until_ready

    tenant = await make_tenant(http, server.data_dir)
    device = await register_device(http, tenant)
    before = await scrape(http)
    frames = value(before, "pushgate_channel_frames_sent_total")
    sent = value(before, "pushgate_channel_bytes_sent_total")
    async with ws_connect(server, device["device_token"]) as ws:
        _, ready = await ws_until_ready(ws)
        ready_bytes = len(json.dumps(ready, separators=(",", ":")))
        text = await scrape(http)
        assert value(text, "pushgate_channel_connected_devices") >= 1
        assert value(text, "pushgate_channel_frames_sent_total") >= frames + 1
        assert value(text, "pushgate_channel_bytes_sent_total") >= sent + ready_bytes
        notification_id = await post_ok(http, tenant)
        message = await ws_recv(ws)
        assert message["id"] == notification_id, message
        text = await scrape(http)
        assert value(text, "pushgate_channel_frames_sent_total") >= frames + 2
        assert value(text, "pushgate_channel_bytes_sent_total") >= sent + ready_bytes + 20


async def test_sse_frames_are_counted(http: httpx2.AsyncClient, server: ServerProcess) -> None:
    from e2e_support import with_timeout

    tenant = await make_tenant(http, server.data_dir)
    token = (await register_device(http, tenant, "sse"))["device_token"]
    before = await scrape(http)
    frames = value(before, "pushgate_channel_frames_sent_total")
    sent = value(before, "pushgate_channel_bytes_sent_total")
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx2.Timeout(10.0, read=30.0)
    async with http.sse("/api/v1/channel/sse", headers=headers, timeout=timeout) as source:
        events = source.__aiter__()
        ready = await with_timeout(anext(events), 5.0, "the ready event")
        assert ready.event == "ready"
        text = await scrape(http)
        await events.aclose()
    assert value(text, "pushgate_channel_frames_sent_total") >= frames + 1
    wire = len("event: ready\ndata: \n\n") + len(ready.data)
    assert value(text, "pushgate_channel_bytes_sent_total") >= sent + wire


def test_metrics_and_access_lines_are_off_unless_asked_for(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    srv = make_server(env={"PUSHGATE_LOG_LEVELS": "pushgate.access=warning"})
    with httpx2.Client(base_url=srv.url, timeout=5.0, trust_env=False) as client:
        assert client.get("/metrics").status_code == 404
        client.get("/api/v1/health", headers={"X-Request-Id": "quiet-1"})
    time.sleep(0.3)
    assert "quiet-1" not in srv.output()


# --------------------------------------------------------------------------- readiness


async def test_ready_checks_the_database(http: httpx2.AsyncClient) -> None:
    resp = await http.get("/api/v1/ready")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "ready", "checks": {"database": "ok"}}


# --------------------------------------------------------------------------- Grafana dashboard

DASHBOARD = Path(__file__).parents[2] / "docs" / "ops" / "grafana-dashboard.json"
SERIES = re.compile(r"\b((?:pushgate|process)_[a-z0-9_]+)\b")


def exposed_series(text: str) -> set[str]:
    """Every series name the exposition declares, whether or not it has samples yet."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


async def test_every_series_of_the_grafana_dashboard_exists(http: httpx2.AsyncClient) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions.append(dashboard["templating"]["list"][1]["query"])
    used = {name for expr in expressions for name in SERIES.findall(expr)}
    assert len(used) >= 10
    missing = used - exposed_series(await scrape(http))
    assert not missing, f"the dashboard uses series that /metrics does not have: {missing}"


def test_ready_checks_redis_when_it_carries_the_queue(
    make_server: ServerFactory, redis_url: str, redis_prefix: str
) -> None:
    srv = make_server(env={"PUSHGATE_QUEUE_URL": redis_url, "PUSHGATE_QUEUE_PREFIX": redis_prefix})
    with httpx2.Client(base_url=srv.url, timeout=5.0, trust_env=False) as client:
        resp = client.get("/api/v1/ready")
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"] == {"database": "ok", "redis": "ok"}
