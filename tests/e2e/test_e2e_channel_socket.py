"""The device channel's own WebSocket server (channel.server): pings and the dead-peer cut,
fragmented reports, the message size limit, and connections counted by the connection
limit. The clients are real: websockets' asyncio client, and a raw socket driven by
websockets' sans-I/O client protocol where the test must misbehave (never answer a ping)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
import pytest
from e2e_support import (
    ServerFactory,
    make_tenant,
    post_ok,
    register_device,
    wait_delivery_status,
    ws_connect,
    ws_recv,
    ws_until_ready,
    ws_url,
)
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

PING = {"PUSHGATE_WEBSOCKET_PING_SECONDS": "1"}


async def _silent_client(
    url: str,
) -> tuple[ClientProtocol, asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that completes the handshake and then never writes again (no pongs)."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri)
    reader, writer = await asyncio.open_connection(uri.host, uri.port)
    protocol.send_request(protocol.connect())
    for chunk in protocol.data_to_send():
        writer.write(chunk)
    await writer.drain()
    return protocol, reader, writer


async def test_a_device_that_never_answers_pings_is_cut(make_server: ServerFactory) -> None:
    server = make_server(env=PING)
    async with httpx2.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as http:
        tenant = await make_tenant(http, server.data_dir)
        device = await register_device(http, tenant)
    protocol, reader, writer = await _silent_client(ws_url(server, device["device_token"]))
    opcodes: list[Opcode] = []
    started = time.monotonic()
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            break
        protocol.receive_data(data)
        opcodes += [e.opcode for e in protocol.events_received() if isinstance(e, Frame)]
    writer.close()
    # ready (text), then a ping left unanswered, then the cut: within two ping intervals.
    assert opcodes[0] is Opcode.TEXT and Opcode.PING in opcodes
    assert time.monotonic() - started < 5


async def test_a_device_that_answers_pings_stays_and_gets_live_notifications(
    make_server: ServerFactory,
) -> None:
    server = make_server(env=PING)
    async with httpx2.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as http:
        tenant = await make_tenant(http, server.data_dir)
        device = await register_device(http, tenant)
        async with ws_connect(server, token=device["device_token"]) as ws:
            await ws_until_ready(ws)
            await asyncio.sleep(3.5)  # several ping rounds, answered by the client
            notification_id = await post_ok(http, tenant)
            message = await ws_recv(ws)
            assert message["id"] == notification_id
            # An ack in three fragments is one report.
            ack = json.dumps({"type": "ack", "ids": [notification_id]})
            await ws.send(iter([ack[:5], ack[5:12], ack[12:]]))
            await wait_delivery_status(http, tenant, notification_id, "delivered")


async def test_an_oversized_message_closes_with_1009(make_server: ServerFactory) -> None:
    server = make_server()
    async with httpx2.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as http:
        tenant = await make_tenant(http, server.data_dir)
        device = await register_device(http, tenant)
    async with ws_connect(server, token=device["device_token"]) as ws:
        await ws_until_ready(ws)
        await ws.send("x" * (70 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_channel_connections_count_towards_the_connection_limit(
    make_server: ServerFactory,
) -> None:
    server = make_server(env={"PUSHGATE_MAX_CONNECTIONS": "3"})
    async with httpx2.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as http:
        tenant = await make_tenant(http, server.data_dir)
        token = (await register_device(http, tenant))["device_token"]
    async with ws_connect(server, token=token) as first, ws_connect(server, token=token) as second:
        await ws_until_ready(first)
        await ws_until_ready(second)
        async with ws_connect(server, token=token) as third:
            await ws_until_ready(third)
            # a fourth connection of any kind is refused while three are open
            async with httpx2.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as h:
                resp = await h.get("/api/v1/health")
            assert resp.status_code == 503
        # one closed: room again
        await asyncio.sleep(0.3)
        async with httpx2.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as h:
            assert (await h.get("/api/v1/health")).status_code == 200
