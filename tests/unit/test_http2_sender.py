"""``Http2Sender`` against real loopback servers: the fake APNs, and tiny servers that stay
silent or speak only HTTP/1.1."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from h2.events import RequestReceived

from pushgate.domain.credentials import ApnsCredentials
from pushgate.testing.fake_apns import FakeApns
from pushgate.testing.fake_server import FakeHttpServer, FakeRequest, FakeResponse
from pushgate.testing.tls import local_ca
from pushgate.transports.apns import provider_token
from pushgate.transports.h2_overrides import H2Protocol, h2_config
from pushgate.transports.http import ProviderRequest, ProviderResponse
from pushgate.transports.http2 import (
    Http2ConnectionLost,
    Http2Error,
    Http2Sender,
    _Connection,
)


class Apns:
    """A fake APNs with credentials, and requests to it."""

    def __init__(self, fake: FakeApns) -> None:
        self.fake = fake
        self.credentials = ApnsCredentials.parse(fake.credentials())
        self.jwt = provider_token(self.credentials, time.time())

    def request(self, index: int, body: bytes = b'{"aps":{"alert":"hi"}}') -> ProviderRequest:
        headers = {
            "authorization": f"bearer {self.jwt}",
            "apns-topic": self.credentials.topic,
            "apns-push-type": "alert",
        }
        return ProviderRequest("POST", f"{self.fake.url}/3/device/{index:064x}", headers, body)


@pytest.fixture
async def apns() -> AsyncIterator[Apns]:
    async with FakeApns(max_concurrent_streams=8) as fake:
        yield Apns(fake)


@pytest.fixture
async def sender() -> AsyncIterator[Http2Sender]:
    sender = Http2Sender(ca_file=local_ca().ca_file, timeout_seconds=5)
    yield sender
    await sender.close()


async def test_many_requests_share_one_connection_below_the_stream_limit(
    apns: Apns, sender: Http2Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    most = 0
    start = _Connection.start

    def counting(self: _Connection, *args: Any) -> Any:
        nonlocal most
        stream = start(self, *args)
        most = max(most, len(self.streams))
        return stream

    monkeypatch.setattr(_Connection, "start", counting)
    responses = await asyncio.gather(*(sender.send(apns.request(i)) for i in range(200)))
    assert {response.status for response in responses} == {200}
    assert all(len(response.headers["apns-id"]) == 36 for response in responses)
    assert most == 8  # the server's SETTINGS_MAX_CONCURRENT_STREAMS; the rest waited
    assert apns.fake.connection_count == 1
    assert sorted(r.token for r in apns.fake.requests) == [f"{i:064x}" for i in range(200)]


async def test_the_configured_stream_cap_and_a_pool_of_connections(apns: Apns) -> None:
    sender = Http2Sender(ca_file=local_ca().ca_file, connections=3, max_streams=4)
    try:
        responses = await asyncio.gather(*(sender.send(apns.request(i)) for i in range(100)))
    finally:
        await sender.close()
    assert {response.status for response in responses} == {200}
    assert apns.fake.connection_count == 3
    per_connection = collections.Counter(r.connection_id for r in apns.fake.requests)
    assert len(per_connection) == 3


async def test_a_body_larger_than_the_flow_control_windows(apns: Apns, sender: Http2Sender) -> None:
    big = b'{"aps":{},"x":"' + b"y" * 3_000_000 + b'"}'  # the fake's windows are 1 MiB
    response = await sender.send(apns.request(1, big))
    assert response.status == 413
    assert response.body == b'{"reason":"PayloadTooLarge"}'
    assert response.headers["content-type"] == "application/json"
    assert (await sender.send(apns.request(2))).status == 200


async def test_goaway_retries_unprocessed_streams_on_a_new_connection(
    apns: Apns, sender: Http2Sender
) -> None:
    apns.fake.goaway_after(50)
    responses = await asyncio.gather(*(sender.send(apns.request(i)) for i in range(300)))
    assert {response.status for response in responses} == {200}
    delivered = collections.Counter(r.token for r in apns.fake.delivered)
    assert sorted(delivered) == [f"{i:064x}" for i in range(300)]
    assert set(delivered.values()) == {1}  # nothing lost, nothing twice
    assert apns.fake.connection_count == 2
    first = [r for r in apns.fake.requests if r.connection_id == 1]
    assert len(first) >= 50


async def test_goaway_on_an_idle_connection(apns: Apns, sender: Http2Sender) -> None:
    assert (await sender.send(apns.request(1))).status == 200
    await asyncio.to_thread(apns.fake.send_goaway)
    await asyncio.sleep(0.05)
    assert (await sender.send(apns.request(2))).status == 200
    assert apns.fake.connection_count == 2


async def test_a_dropped_connection_fails_its_requests_and_the_next_one_reconnects(
    apns: Apns, sender: Http2Sender
) -> None:
    assert (await sender.send(apns.request(0))).status == 200
    apns.fake.drop_next()
    with pytest.raises(Http2ConnectionLost):
        await sender.send(apns.request(1))
    assert (await sender.send(apns.request(2))).status == 200
    assert apns.fake.connection_count == 2
    assert [r.status for r in apns.fake.requests] == [200, 0, 200]


async def test_close_fails_what_is_in_flight_and_the_sender_can_be_used_again(
    apns: Apns, sender: Http2Sender
) -> None:
    assert (await sender.send(apns.request(0))).status == 200
    await sender.close()
    assert (await sender.send(apns.request(1))).status == 200
    assert apns.fake.connection_count == 2


class Silent(asyncio.Protocol):
    """Speaks HTTP/2 but never answers a request."""

    received: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.h2 = H2Protocol(h2_config(client_side=False))
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, RequestReceived):
                Silent.received.append(event.stream_id or 0)
        self.transport.write(self.h2.data_to_send())


async def test_a_request_without_an_answer_times_out() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Silent, "127.0.0.1", 0, ssl=local_ca().server_context(("h2",))
    )
    port = server.sockets[0].getsockname()[1]
    sender = Http2Sender(ca_file=local_ca().ca_file, timeout_seconds=0.3, max_streams=1)
    request = ProviderRequest("POST", f"https://127.0.0.1:{port}/x", {}, b"{}")
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await sender.send(request)
        assert time.monotonic() - started < 2
        # the timed-out stream gave its slot back: the next one times out too, not waits
        with pytest.raises(TimeoutError):
            await sender.send(request)
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()


async def test_a_server_without_http2_is_refused() -> None:
    async def handle(request: FakeRequest) -> FakeResponse:
        return FakeResponse(200)

    async with FakeHttpServer(handle) as server:
        sender = Http2Sender(ca_file=local_ca().ca_file)
        try:
            with pytest.raises(Http2Error, match="does not speak HTTP/2"):
                await sender.send(ProviderRequest("POST", f"{server.url}/x"))
        finally:
            await sender.close()


async def test_no_server_is_an_os_error(sender: Http2Sender) -> None:
    with pytest.raises(OSError):
        await sender.send(ProviderRequest("POST", "https://127.0.0.1:9/x"))


async def test_a_cancelled_request_gives_its_stream_back() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Silent, "127.0.0.1", 0, ssl=local_ca().server_context(("h2",))
    )
    port = server.sockets[0].getsockname()[1]
    sender = Http2Sender(ca_file=local_ca().ca_file, timeout_seconds=0.3, max_streams=1)
    request = ProviderRequest("POST", f"https://127.0.0.1:{port}/x", {}, b"{}")
    Silent.received = []
    try:
        first = asyncio.create_task(sender.send(request))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # it got the one stream and waited for an answer
            await sender.send(request)
        assert time.monotonic() - started >= 0.25
        assert Silent.received == [1, 3]  # the second request had a stream: the first's
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()


async def test_streams_in_flight_counts_requests_awaiting_an_answer(apns: Apns) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Silent, "127.0.0.1", 0, ssl=local_ca().server_context(("h2",))
    )
    port = server.sockets[0].getsockname()[1]
    sender = Http2Sender(ca_file=local_ca().ca_file, timeout_seconds=0.5, connections=2)
    silent = ProviderRequest("POST", f"https://127.0.0.1:{port}/x", {}, b"{}")
    try:
        assert sender.streams_in_flight() == 0
        waiting = [asyncio.create_task(sender.send(silent)) for _ in range(3)]
        # An answered request on another origin is not in flight any more.
        assert (await sender.send(apns.request(1))).status == 200
        await asyncio.sleep(0.1)
        assert sender.streams_in_flight() == 3
        for outcome in await asyncio.gather(*waiting, return_exceptions=True):
            assert isinstance(outcome, TimeoutError)
        assert sender.streams_in_flight() == 0
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()


async def test_send_all_answers_in_order_past_the_stream_limit_and_through_goaway(
    apns: Apns, sender: Http2Sender
) -> None:
    """``send_all`` starts what fits in the free slots at once and sends the rest through
    ``send``; a GOAWAY's unprocessed streams are retried; nothing lost, nothing twice."""
    assert (await sender.send(apns.request(10_000))).status == 200  # connected: slots known
    apns.fake.goaway_after(60)
    requests = [apns.request(i) for i in range(300)]
    requests.append(ProviderRequest("POST", "ftp://nowhere/x"))
    answers = await sender.send_all(requests, 16)
    assert [a.status for a in answers[:300] if isinstance(a, ProviderResponse)] == [200] * 300
    assert isinstance(answers[300], ValueError)
    delivered = collections.Counter(r.token for r in apns.fake.delivered)
    assert sorted(delivered) == sorted([f"{i:064x}" for i in range(300)] + [f"{10_000:064x}"])
    assert set(delivered.values()) == {1}
    assert apns.fake.connection_count == 2


async def test_send_all_timeouts_and_cancelling_give_the_streams_back() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Silent, "127.0.0.1", 0, ssl=local_ca().server_context(("h2",))
    )
    port = server.sockets[0].getsockname()[1]
    sender = Http2Sender(ca_file=local_ca().ca_file, timeout_seconds=0.3, max_streams=2)
    request = ProviderRequest("POST", f"https://127.0.0.1:{port}/x", {}, b"{}")
    try:
        answers = await sender.send_all([request] * 3, 4)
        assert [type(answer) for answer in answers] == [TimeoutError] * 3
        assert sender.streams_in_flight() == 0
        task = asyncio.create_task(sender.send_all([request] * 2, 4))
        await asyncio.sleep(0.1)
        assert sender.streams_in_flight() == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sender.streams_in_flight() == 0
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
