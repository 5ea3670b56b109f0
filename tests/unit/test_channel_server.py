"""The channel server's refusals, without a network: a storm of upgrade requests past
MAX_OPENING is answered 503 at once; the frames it writes are websockets' framing."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from pushgate.channel import server as server_module
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
