"""The framing of ``transports/http2.py``'s client against h2's server side, in memory: the
cases the loopback tests of ``test_http2_sender.py`` do not reach (CONTINUATION, padding,
PING, informational answers, HPACK table size changes, the server's window setting)."""

from __future__ import annotations

import asyncio
from typing import Any

from h2.events import (
    DataReceived,
    PingAckReceived,
    RequestReceived,
    StreamEnded,
)
from h2.settings import SettingCodes
from hpack import NeverIndexedHeaderTuple

from pushgate.transports.h2_overrides import H2Protocol, h2_config
from pushgate.transports.http import ProviderResponse
from pushgate.transports.http2 import _Connection


class Pool:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def wake(self, *, everyone: bool = False) -> None: ...

    def forget(self, connection: Any) -> None: ...

    def discard(self, connection: Any) -> None: ...


class Wire:
    """The client's transport: what it writes, kept for the server."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def take(self) -> bytes:
        data = bytes(self.data)
        self.data.clear()
        return data


class Pair:
    def __init__(self, settings: dict[int, int] | None = None) -> None:
        self.wire = Wire()
        self.client = _Connection(Pool(asyncio.get_running_loop()), 100)  # type: ignore[arg-type]
        self.server = H2Protocol(h2_config(client_side=False))
        self.server.initiate_connection()
        if settings:
            self.server.update_settings(settings)
        self.client.connection_made(self.wire)  # type: ignore[arg-type]
        self.events: list[Any] = []
        self.pump()

    def pump(self) -> None:
        for _ in range(4):
            self.client._flush()
            self.events += self.server.receive_data(self.wire.take())
            data = self.server.data_to_send()
            if data:
                self.client.data_received(data)

    def request(self, path: bytes, body: bytes = b"", **extra: bytes) -> Any:
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"example"),
            NeverIndexedHeaderTuple(b":path", path),
            *((name.replace("_", "-").encode(), value) for name, value in extra.items()),
        ]
        stream = self.client.start(headers, body, asyncio.get_running_loop().time() + 10)
        self.pump()
        return stream

    def received(self) -> list[RequestReceived]:
        return [event for event in self.events if isinstance(event, RequestReceived)]


async def test_a_header_block_larger_than_a_frame_goes_in_continuations() -> None:
    pair = Pair()
    token = b"bearer " + b"x" * 40_000
    stream = pair.request(b"/3/device/aa", authorization=token)
    [request] = pair.received()
    assert dict(request.headers)[b"authorization"] == token
    pair.server.send_headers(request.stream_id, [(b":status", b"200")], end_stream=True)
    pair.pump()
    assert (await stream.future).status == 200


async def test_a_padded_answer_a_ping_and_an_informational_answer() -> None:
    pair = Pair()
    stream = pair.request(b"/3/device/bb", b'{"aps":{}}')
    [request] = pair.received()
    assert [e.data for e in pair.events if isinstance(e, DataReceived)] == [b'{"aps":{}}']
    assert any(isinstance(e, StreamEnded) for e in pair.events)
    server = pair.server
    server.ping(b"12345678")
    server.send_headers(request.stream_id, [(b":status", b"103"), (b"link", b"</x>")])
    server.send_headers(request.stream_id, [(b":status", b"400"), (b"apns-id", b"A-1")])
    server.send_data(
        request.stream_id, b'{"reason":"BadDeviceToken"}', end_stream=True, pad_length=9
    )
    pair.pump()
    answer: ProviderResponse = await stream.future
    assert answer.status == 400
    assert answer.headers["apns-id"] == "A-1"
    assert answer.body == b'{"reason":"BadDeviceToken"}'
    assert any(isinstance(e, PingAckReceived) for e in pair.events)
    assert not pair.client.streams


async def test_a_header_table_size_change_and_a_small_window() -> None:
    pair = Pair({SettingCodes.HEADER_TABLE_SIZE: 0, SettingCodes.INITIAL_WINDOW_SIZE: 10})
    body = b"b" * 100
    streams = [pair.request(b"/3/device/%02d" % i, body, apns_topic=b"t") for i in range(3)]
    requests = pair.received()
    assert [dict(r.headers)[b":path"] for r in requests] == [
        b"/3/device/%02d" % i for i in range(3)
    ]
    assert all(dict(r.headers)[b"apns-topic"] == b"t" for r in requests)
    for _ in range(30):  # the server gives the window back as it reads
        for event in list(pair.events):
            if isinstance(event, DataReceived) and event.flow_controlled_length:
                pair.server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        pair.events = [e for e in pair.events if not isinstance(e, DataReceived)]
        pair.pump()
    ended = {e.stream_id for e in pair.events if isinstance(e, StreamEnded)}
    assert ended == {r.stream_id for r in requests}
    for request in requests:
        pair.server.send_headers(request.stream_id, [(b":status", b"200")], end_stream=True)
    pair.pump()
    assert [(await s.future).status for s in streams] == [200, 200, 200]
