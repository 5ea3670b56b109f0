"""The channel server without a network: a storm of upgrade requests past MAX_OPENING is
answered 503 at once; the frames it writes are websockets' framing; the live frames a
connection is given in one loop turn go out in one write, in order, before anything after."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from pushgate.channel import server as server_module
from pushgate.channel.connection import ChannelConnection
from pushgate.channel.hub import Hub, Outgoing
from pushgate.channel.server import ChannelServer, text_frame


class Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_upgrades_past_the_opening_limit_are_refused_at_once() -> None:
    channel = ChannelServer(SimpleNamespace(hub=Hub()), 60, [])  # type: ignore[arg-type]
    channel._opening = server_module.MAX_OPENING
    transport = Transport()
    connections: set[Any] = set()
    channel.upgrade(transport, {"path": "/api/v1/channel/ws", "headers": []}, connections)  # type: ignore[arg-type]
    head, _, body = transport.written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"Retry-After: 1" in head
    assert json.loads(body)["error"]["code"] == "unavailable"
    assert transport.closed and not connections


def test_a_notification_frame_is_built_once_and_parses_as_text() -> None:
    channel = ChannelServer(SimpleNamespace(hub=Hub()), 0, [])  # type: ignore[arg-type]
    item = Outgoing(1, b'{"type":"notification"}' * 10)
    frame = channel.frame_of(item)
    assert channel.frame_of(item) is frame
    assert frame == text_frame(item.payload)
    client = Protocol(Side.CLIENT)
    client.receive_data(frame)
    [received] = client.events_received()
    assert isinstance(received, Frame) and received.opcode is Opcode.TEXT
    assert received.data == item.payload


async def test_the_client_behind_a_trusted_proxy_is_the_forwarded_one() -> None:
    hub = SimpleNamespace(hub=Hub())
    scope = {
        "type": "http",
        "path": "/api/v1/channel/ws",
        "client": ("127.0.0.1", 40000),
        "headers": [(b"x-forwarded-for", b"203.0.113.9")],
    }
    trusting = ChannelServer(hub, 0, ["127.0.0.1/32"])  # type: ignore[arg-type]
    assert (await trusting._client_of(scope))["client"][0] == "203.0.113.9"
    assert scope["client"] == ("127.0.0.1", 40000)  # the request's own scope is left as it was
    untrusting = ChannelServer(hub, 0, [])  # type: ignore[arg-type]
    assert (await untrusting._client_of(scope))["client"][0] == "127.0.0.1"


class CountingTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.closed = True


def _open_connection() -> tuple[ChannelConnection, CountingTransport, list[tuple[int, int]]]:
    recorded: list[tuple[int, int]] = []
    pipeline = SimpleNamespace(record_sent_to=lambda ids, n: recorded.extend((d, n) for d in ids))
    channel = ChannelServer(SimpleNamespace(hub=Hub(), pipeline=pipeline), 0, [])  # type: ignore[arg-type]
    transport = CountingTransport()
    connection = ChannelConnection(channel, transport, set())  # type: ignore[arg-type]
    connection.ws = Protocol(Side.SERVER)
    connection.session = SimpleNamespace(device_id=7)  # type: ignore[assignment]
    return connection, transport, recorded


def _frames(written: bytes) -> list[Frame]:
    client = Protocol(Side.CLIENT)
    client.receive_data(written)
    return [event for event in client.events_received() if isinstance(event, Frame)]


async def test_live_frames_of_one_loop_turn_go_out_in_one_write_in_order() -> None:
    connection, transport, recorded = _open_connection()
    items = [Outgoing(n, b'{"n":%d}' % n) for n in (1, 2, 3)]
    for item in items:
        connection.deliver(item)
    assert transport.writes == 0  # not yet: at the loop's next turn
    await asyncio.sleep(0)
    assert transport.writes == 1
    assert [frame.data for frame in _frames(transport.written)] == [i.payload for i in items]
    assert recorded == [(7, 1), (7, 2), (7, 3)]


async def test_a_close_after_live_frames_goes_out_after_them() -> None:
    connection, transport, _ = _open_connection()
    connection.deliver(Outgoing(1, b'{"n":1}'))
    connection.close(1001, "going away")
    await asyncio.sleep(0)
    frames = _frames(transport.written)
    assert [frame.opcode for frame in frames] == [Opcode.TEXT, Opcode.CLOSE]
    connection.connection_lost(None)  # the close timer is cancelled
