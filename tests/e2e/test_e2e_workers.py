"""Several processes on Redis: two servers that hold the device connections and run no
workers, and two `pushgate worker` processes sharing the jobs through Redis Streams, on
PostgreSQL. Every notification reaches every channel device exactly once, and every push
delivery is attempted exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    ServerFactory,
    Tenant,
    add_app,
    add_event,
    client_for,
    deliveries,
    post_ok,
    register_device,
    ws_connect,
    ws_recv,
)

from pushgate.testing.server import WorkerProcess, create_account

POSTS = 120


@pytest.fixture
def shared_env(postgres_database_url: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        "PUSHGATE_DATABASE_URL": postgres_database_url,
        "PUSHGATE_QUEUE_URL": redis_url,
        "PUSHGATE_QUEUE_PREFIX": redis_prefix,
        "PUSHGATE_SECRET_KEY": "k" * 48,
        "PUSHGATE_JOB_LEASE_SECONDS": "5",
    }


async def test_two_workers_share_the_work_without_loss_or_repeats(
    make_server: ServerFactory, shared_env: dict[str, str], tmp_path: Path
) -> None:
    server = make_server(env={**shared_env, "PUSHGATE_RUN_WORKERS": "false"})
    other_server = make_server(env={**shared_env, "PUSHGATE_RUN_WORKERS": "false"})
    workers = [
        WorkerProcess(tmp_path / f"w{n}", shared_env, name=f"worker-{n}").start() for n in range(2)
    ]
    try:
        account = create_account(server.data_dir, "multi", shared_env)
        tenant = Tenant(data_dir=server.data_dir, user_token=account["user_token"])
        async with client_for(server) as http:
            await add_app(http, tenant)
            assert (await add_event(http, tenant)).status_code == 201
            channel = [await register_device(http, tenant, f"c{i}") for i in range(3)]
            for n in range(2):
                response = await http.post(
                    "/api/v1/devices",
                    headers=tenant.bearer,
                    json={
                        "platform": "ios",
                        "app_id": tenant.app_id,
                        "token": f"{n + 10:02x}" * 32,
                    },
                )
                assert response.status_code == 201, response.text

            received: list[Counter[int]] = [Counter() for _ in channel]

            async def listen(index: int, device: dict[str, Any]) -> None:
                # Devices spread over both servers: the channel reaches them in either.
                holder = server if index % 2 == 0 else other_server
                async with ws_connect(holder, token=device["device_token"]) as ws:
                    assert (await ws_recv(ws))["type"] == "ready"
                    connected.release()
                    while sum(received[index].values()) < POSTS:
                        message = await ws_recv(ws, timeout=20)
                        if message["type"] == "notification":
                            received[index][message["id"]] += 1
                            await ws.send(json.dumps({"type": "ack", "ids": [message["id"]]}))

            connected = asyncio.Semaphore(0)
            listeners = [asyncio.create_task(listen(i, d)) for i, d in enumerate(channel)]
            for _ in channel:
                await connected.acquire()
            posted = await asyncio.gather(
                *(post_ok(http, tenant, {"email": f"u{n}", "country": "NL"}) for n in range(POSTS))
            )
            await asyncio.wait_for(asyncio.gather(*listeners), 60)

            for counts in received:
                assert set(counts) == set(posted), "lost notifications"
                assert max(counts.values()) == 1, "a notification reached a device twice"
            # Push deliveries: one attempt each (this build has no provider credentials, so
            # each fails once with InvalidCertificate and is not retried).
            for notification_id in posted[:20]:
                for _ in range(100):
                    rows = [
                        r
                        for r in await deliveries(http, tenant, notification_id)
                        if r["transport"] == "ios"
                    ]
                    if len(rows) == 2 and all(r["status"] == "failed" for r in rows):
                        break
                    await asyncio.sleep(0.1)
                assert [r["attempts"] for r in rows] == [1, 1], rows
                assert all(r["reason"].startswith("InvalidCertificate") for r in rows)
        logs = [w.log_path.read_text() for w in workers]
        assert all("Traceback" not in log for log in logs), logs
    finally:
        for worker in workers:
            worker.stop()


async def test_a_killed_worker_leaves_its_jobs_to_the_other(
    make_server: ServerFactory, shared_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**shared_env, "PUSHGATE_JOB_LEASE_SECONDS": "1"}
    server = make_server(env={**env, "PUSHGATE_RUN_WORKERS": "false"})
    doomed, survivor = (
        WorkerProcess(tmp_path / f"w{n}", env, name=f"worker-{n}").start() for n in range(2)
    )
    try:
        account = create_account(server.data_dir, "killed", env)
        tenant = Tenant(data_dir=server.data_dir, user_token=account["user_token"])
        async with client_for(server) as http:
            await add_app(http, tenant)
            assert (await add_event(http, tenant)).status_code == 201
            device = await register_device(http, tenant, "survivor")
            posted: list[int] = []
            for n in range(POSTS):
                posted.append(await post_ok(http, tenant, {"email": f"k{n}", "country": "NL"}))
                if n == POSTS // 3:
                    doomed.kill()
            # Everything accepted reaches the device (possibly twice: at-least-once).
            received: set[int] = set()
            for _ in range(200):
                response = await http.get(
                    "/api/v1/channel/poll",
                    params={"since": 0, "limit": 1000},
                    headers={"Authorization": f"Bearer {device['device_token']}"},
                )
                received = {item["id"] for item in response.json()["notifications"]}
                if received >= set(posted):
                    break
                await asyncio.sleep(0.1)
            assert set(posted) - received == set()
    finally:
        doomed.kill()
        survivor.stop()
