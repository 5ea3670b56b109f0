"""``Http1Sender`` against real local servers: the fake HTTP/1.1 server (TLS and plain), a raw
asyncio server on the test's loop for answers the fake cannot give (chunked, until close,
HTTP/1.0) and for counting connections, and the provider transports against their fakes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import uvloop

from pushgate.domain.credentials import Credentials, FcmCredentials, VapidCredentials
from pushgate.domain.outcomes import Delivered, RetryLater, TokenInvalid
from pushgate.domain.push_options import PushOptions
from pushgate.testing.fake_fcm import FakeFcm
from pushgate.testing.fake_server import (
    DROP,
    Drop,
    FakeHttpServer,
    FakeRequest,
    FakeResponse,
    wait_until_async,
)
from pushgate.testing.fake_webpush import FakeWebPush
from pushgate.testing.tls import local_ca
from pushgate.transports import http1
from pushgate.transports.base import Content, Target
from pushgate.transports.fcm import FcmTransport
from pushgate.transports.http import ProviderRequest
from pushgate.transports.http1 import Http1ConnectionLost, Http1Sender
from pushgate.transports.webpush import WebPushTransport


def new_sender(*, timeout: float = 5.0, connections: int = 8) -> Http1Sender:
    return Http1Sender(
        ca_file=local_ca().ca_file, timeout_seconds=timeout, max_connections=connections
    )


@pytest.fixture
async def sender() -> AsyncIterator[Http1Sender]:
    sender = new_sender()
    yield sender
    await sender.close()


class Recorder:
    """A FakeHttpServer handler: records requests, answers by script (default 200 "ok"),
    after ``delay`` seconds unless ``finish`` cuts the wait short."""

    def __init__(self) -> None:
        self.requests: list[FakeRequest] = []
        self.script: list[FakeResponse | Drop] = []
        self.delay = 0.0
        self.busy = 0
        self.finished = threading.Event()
        self.lock = threading.Lock()

    async def __call__(self, request: FakeRequest) -> FakeResponse | Drop:
        with self.lock:
            self.requests.append(request)
            answer = self.script.pop(0) if self.script else None
            self.busy += 1
        try:
            until = time.monotonic() + self.delay
            while time.monotonic() < until and not self.finished.is_set():
                await asyncio.sleep(0.01)
        finally:
            with self.lock:
                self.busy -= 1
        if answer is not None:
            return answer
        return FakeResponse(200, b"ok:" + request.body, {"x-path": request.target})

    async def finish(self) -> None:
        """Let every handler still waiting answer (before the server stops)."""
        self.finished.set()
        assert await wait_until_async(lambda: self.busy == 0, 5)


@pytest.fixture(params=[True, False], ids=["tls", "plain"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeHttpServer, Recorder]]:
    recorder = Recorder()
    async with FakeHttpServer(recorder, tls=request.param) as server:
        yield server, recorder
        await recorder.finish()


def server_connections(server: FakeHttpServer) -> int:
    return len(server._connections)


# -- a raw server on the test's loop ---------------------------------------------------------

Answer = Callable[[bytes, bytes], Awaitable[tuple[list[bytes], bool] | None]]


class RawServer:
    """Reads requests (head and content-length body), answers with the pieces ``answer``
    returns (written with a pause between them), then closes if it says so; ``None`` closes
    without answering. Counts connections: accepted, open now, and the most open at once."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.accepted = 0
        self.open = 0
        self.peak = 0
        self.eofs = 0
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.eofs += 1
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head.split(b" ")[1])
                answer = await self.answer(head, body)
                if answer is None:
                    return
                pieces, close = answer
                for n, piece in enumerate(pieces):
                    if n:
                        await asyncio.sleep(0.01)
                    writer.write(piece)
                    await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.open -= 1
            self._handlers.discard(task)
            writer.close()


def fixed(*pieces: bytes, close: bool = False) -> Answer:
    async def answer(head: bytes, body: bytes) -> tuple[list[bytes], bool]:
        return list(pieces), close

    return answer


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


# -- round trips -----------------------------------------------------------------------------


async def test_status_headers_and_body_round_trip(
    served: tuple[FakeHttpServer, Recorder], sender: Http1Sender
) -> None:
    server, recorder = served
    response = await sender.send(
        ProviderRequest("POST", f"{server.url}/v1/send?x=1", {"TTL": "60"}, b"payload")
    )
    assert response.status == 200
    assert response.body == b"ok:payload"
    assert response.headers["x-path"] == "/v1/send?x=1"
    assert response.headers["content-length"] == "10"
    [received] = recorder.requests
    assert received.method == "POST" and received.target == "/v1/send?x=1"
    assert received.headers["host"] == f"127.0.0.1:{server.port}"
    assert received.headers["content-length"] == "7"
    assert received.headers["ttl"] == "60"
    assert received.body == b"payload"


async def test_error_answers_come_back_as_they_are(
    served: tuple[FakeHttpServer, Recorder], sender: Http1Sender
) -> None:
    server, recorder = served
    recorder.script = [FakeResponse(429, b'{"e":1}', {"Retry-After": "30", "X-Multi": "a"})]
    response = await sender.send(ProviderRequest("POST", f"{server.url}/p", {}, b"x"))
    assert response.status == 429
    assert response.retry_after() == 30
    assert response.headers["x-multi"] == "a"
    assert response.body == b'{"e":1}'


async def test_keep_alive_reuses_one_connection(
    served: tuple[FakeHttpServer, Recorder], sender: Http1Sender
) -> None:
    server, recorder = served
    for n in range(5):
        response = await sender.send(ProviderRequest("POST", f"{server.url}/{n}", {}, b"x"))
        assert response.status == 200
    assert server_connections(server) == 1
    assert sender.open_connections(server.url) == 1


async def test_a_get_and_an_empty_body() -> None:
    async with RawServer(fixed(b"HTTP/1.1 204 No Content\r\n\r\n")) as server:
        sender = new_sender()
        try:
            first = await sender.send(ProviderRequest("GET", server.url))
            second = await sender.send(ProviderRequest("GET", server.url + "/again"))
        finally:
            await sender.close()
    assert (first.status, first.body) == (204, b"")
    assert second.status == 204
    assert server.requests == [b"/", b"/again"]
    assert server.accepted == 1


async def test_a_chunked_answer_in_pieces_then_keep_alive() -> None:
    chunked = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n5\r\nhel",
        b"lo\r\n6\r\n world\r\n",
        b"0\r\n\r\n",
    ]
    async with RawServer(fixed(*chunked)) as server:
        sender = new_sender()
        try:
            first = await sender.send(ProviderRequest("POST", server.url, {}, b"x"))
            second = await sender.send(ProviderRequest("POST", server.url, {}, b"y"))
        finally:
            await sender.close()
    assert first.body == b"hello world" == second.body
    assert first.headers["x-a"] == "1, 2"
    assert server.accepted == 1


async def test_a_body_until_close() -> None:
    answer = [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ", b"it"]
    async with RawServer(fixed(*answer, close=True)) as server:
        sender = new_sender()
        try:
            first = await sender.send(ProviderRequest("POST", server.url, {}, b"x"))
            second = await sender.send(ProviderRequest("POST", server.url, {}, b"x"))
        finally:
            await sender.close()
    assert first.body == b"all of it" == second.body
    assert server.accepted == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0", "http-1.0-keep-alive"],
)
async def test_the_client_closes_when_the_answer_says_so(answer: bytes) -> None:
    async with RawServer(fixed(answer)) as server:  # the server itself keeps it open
        sender = new_sender()
        try:
            for _ in range(3):
                response = await sender.send(ProviderRequest("POST", server.url, {}, b"x"))
                assert response.body == b"ok"
            assert await wait_until_async(lambda: server.open == 0, 5)
            assert sender.open_connections(server.url) == 0
        finally:
            await sender.close()
    assert server.accepted == 3
    assert server.eofs == 3


async def test_connection_close_from_the_fake_server(
    served: tuple[FakeHttpServer, Recorder], sender: Http1Sender
) -> None:
    server, recorder = served
    closing = ProviderRequest("POST", f"{server.url}/a", {"Connection": "close"}, b"x")
    assert (await sender.send(closing)).status == 200
    assert await wait_until_async(lambda: server_connections(server) == 0, 5)
    assert (await sender.send(ProviderRequest("POST", f"{server.url}/b", {}, b"x"))).status == 200
    assert len(recorder.requests) == 2


async def test_a_garbled_answer_is_a_connection_error() -> None:
    async with RawServer(fixed(b"HTTP/1.1 OK 200\r\nnonsense\r\n\r\n")) as server:
        sender = new_sender()
        try:
            with pytest.raises(ConnectionError, match="invalid HTTP answer"):
                await sender.send(ProviderRequest("POST", server.url, {}, b"x"))
            assert sender.open_connections(server.url) == 0
        finally:
            await sender.close()


async def test_an_answer_nobody_asked_for_closes_the_connection() -> None:
    async with RawServer(fixed(OK + OK)) as server:
        sender = new_sender()
        try:
            for _ in range(2):
                response = await sender.send(ProviderRequest("GET", server.url))
                assert response.body == b"ok"
                assert await wait_until_async(lambda: server.open == 0, 5)
        finally:
            await sender.close()
    assert server.accepted == 2


# -- connections per origin ------------------------------------------------------------------


async def test_at_most_max_connections_per_origin() -> None:
    async def slow(head: bytes, body: bytes) -> tuple[list[bytes], bool]:
        await asyncio.sleep(0.02)
        return [OK], False

    async with RawServer(slow) as first, RawServer(slow) as second:
        sender = new_sender(connections=4)
        try:
            requests = [
                sender.send(ProviderRequest("POST", f"{server.url}/{n}", {}, b"x"))
                for n in range(60)
                for server in (first, second)
            ]
            responses = await asyncio.gather(*requests)
        finally:
            await sender.close()
    assert all(r.status == 200 for r in responses)
    assert first.peak == 4 and second.peak == 4
    assert first.accepted == 4 and second.accepted == 4


async def test_waiting_requests_are_served_in_order() -> None:
    gate = asyncio.Event()

    async def gated(head: bytes, body: bytes) -> tuple[list[bytes], bool]:
        if b"/first" in head:
            await gate.wait()
        return [OK], False

    async with RawServer(gated) as server:
        sender = new_sender(connections=1)
        try:
            tasks = [
                asyncio.create_task(sender.send(ProviderRequest("GET", server.url + "/first")))
            ]
            assert await wait_until_async(lambda: server.requests == [b"/first"], 5)
            for n in range(5):
                request = ProviderRequest("GET", f"{server.url}/{n}")
                tasks.append(asyncio.create_task(sender.send(request)))
                await asyncio.sleep(0.01)
            gate.set()
            await asyncio.gather(*tasks)
        finally:
            await sender.close()
    assert server.requests == [b"/first", b"/0", b"/1", b"/2", b"/3", b"/4"]
    assert server.accepted == 1


# -- failures --------------------------------------------------------------------------------


async def test_no_answer_in_time_is_a_timeout(served: tuple[FakeHttpServer, Recorder]) -> None:
    server, recorder = served
    sender = new_sender(timeout=0.3)
    try:
        recorder.delay = 2.0
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await sender.send(ProviderRequest("POST", f"{server.url}/slow", {}, b"x"))
        assert time.monotonic() - started < 1.5
        assert sender.open_connections(server.url) == 0  # its late answer belongs to nobody
        recorder.delay = 0.0
        assert (await sender.send(ProviderRequest("POST", server.url, {}, b"x"))).status == 200
    finally:
        await sender.close()


async def test_opening_the_connection_counts_in_the_timeout() -> None:
    async with RawServer(fixed(OK)) as server:  # a plain server never answers a TLS hello
        sender = new_sender(timeout=0.3)
        url = server.url.replace("http://", "https://")
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await sender.send(ProviderRequest("GET", url))
            assert time.monotonic() - started < 1.0
            assert sender.open_connections(url) == 0
        finally:
            await sender.close()


async def test_waiting_for_a_connection_counts_in_the_timeout() -> None:
    async def slow(head: bytes, body: bytes) -> tuple[list[bytes], bool]:
        await asyncio.sleep(0.6)
        return [OK], False

    async with RawServer(slow) as server:
        sender = new_sender(timeout=0.3, connections=1)
        try:
            first = asyncio.create_task(sender.send(ProviderRequest("GET", server.url + "/a")))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            with pytest.raises(TimeoutError):  # it gets the connection at 0.3 s, 0.1 s left
                await sender.send(ProviderRequest("GET", server.url + "/b"))
            assert time.monotonic() - started < 0.45
            with pytest.raises(TimeoutError):
                await first
        finally:
            await sender.close()


async def test_a_cancelled_request_gives_its_connection_up(
    served: tuple[FakeHttpServer, Recorder], sender: Http1Sender
) -> None:
    server, recorder = served
    recorder.delay = 0.5
    task = asyncio.create_task(sender.send(ProviderRequest("POST", server.url, {}, b"x")))
    assert await wait_until_async(lambda: len(recorder.requests) == 1, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sender.open_connections(server.url) == 0
    recorder.delay = 0.0
    assert (await sender.send(ProviderRequest("POST", server.url, {}, b"x"))).status == 200


async def test_a_dropped_connection_is_a_connection_error_and_not_sent_twice(
    served: tuple[FakeHttpServer, Recorder], sender: Http1Sender
) -> None:
    server, recorder = served
    recorder.script = [DROP]
    with pytest.raises(Http1ConnectionLost) as raised:
        await sender.send(ProviderRequest("POST", server.url, {}, b"x"))
    assert isinstance(raised.value, ConnectionError)
    assert len(recorder.requests) == 1  # a new connection: not retried
    assert (await sender.send(ProviderRequest("POST", server.url, {}, b"x"))).status == 200


async def test_an_unreachable_server_is_an_os_error(sender: Http1Sender) -> None:
    async with RawServer(fixed(OK)) as gone:
        url = gone.url
    with pytest.raises(OSError):
        await sender.send(ProviderRequest("POST", url, {}, b"x"))
    assert sender.open_connections(url) == 0


async def test_a_stale_keep_alive_connection_is_retried_once(
    served: tuple[FakeHttpServer, Recorder], sender: Http1Sender
) -> None:
    server, recorder = served
    assert (await sender.send(ProviderRequest("POST", server.url, {}, b"1"))).status == 200
    server.drop_connections()  # blocks this loop: the sender has not seen the close yet
    assert sender.open_connections(server.url) == 1
    response = await sender.send(ProviderRequest("POST", server.url, {}, b"2"))
    assert response.body == b"ok:2"
    assert [r.body for r in recorder.requests] == [b"1", b"2"]


async def test_a_reused_connection_is_retried_only_once(
    served: tuple[FakeHttpServer, Recorder], sender: Http1Sender
) -> None:
    server, recorder = served
    assert (await sender.send(ProviderRequest("POST", server.url, {}, b"1"))).status == 200
    recorder.script = [DROP, DROP]
    with pytest.raises(Http1ConnectionLost):
        await sender.send(ProviderRequest("POST", server.url, {}, b"2"))
    assert [r.body for r in recorder.requests] == [b"1", b"2", b"2"]


async def test_an_answer_cut_short_is_not_retried() -> None:
    async def cut(head: bytes, body: bytes) -> tuple[list[bytes], bool] | None:
        if b"/cut" in head:
            return [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok"], True
        return [OK], False

    async with RawServer(cut) as server:
        sender = new_sender()
        try:
            await sender.send(ProviderRequest("GET", server.url))
            with pytest.raises(Http1ConnectionLost) as raised:
                await sender.send(ProviderRequest("GET", server.url + "/cut"))
            assert raised.value.answer_started
        finally:
            await sender.close()
    assert server.requests == [b"/", b"/cut"]


# -- lifecycle -------------------------------------------------------------------------------


async def test_idle_connections_are_closed(
    served: tuple[FakeHttpServer, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    monkeypatch.setattr(http1, "IDLE_SECONDS", 0.2)
    monkeypatch.setattr(http1, "_TICK_SECONDS", 0.05)
    sender = new_sender()
    try:
        await asyncio.gather(
            *(sender.send(ProviderRequest("POST", server.url, {}, b"x")) for _ in range(3))
        )
        assert sender.open_connections(server.url) == 3
        assert await wait_until_async(lambda: server_connections(server) == 0, 5)
        assert sender.open_connections(server.url) == 0
        assert (await sender.send(ProviderRequest("POST", server.url, {}, b"x"))).status == 200
    finally:
        await sender.close()


async def test_close_ends_every_connection_and_the_sender_can_be_used_again(
    served: tuple[FakeHttpServer, Recorder],
) -> None:
    server, recorder = served
    sender = new_sender(connections=2)
    await asyncio.gather(
        *(sender.send(ProviderRequest("POST", server.url, {}, b"x")) for _ in range(2))
    )
    recorder.delay = 5.0
    in_flight = asyncio.create_task(sender.send(ProviderRequest("POST", server.url, {}, b"x")))
    assert await wait_until_async(lambda: len(recorder.requests) == 3, 5)
    await sender.close()
    with pytest.raises(ConnectionError):
        await in_flight
    assert await wait_until_async(lambda: server_connections(server) == 0, 5)
    recorder.delay = 0.0
    assert (await sender.send(ProviderRequest("POST", server.url, {}, b"x"))).status == 200
    await sender.close()
    await sender.close()


def test_under_uvloop(served: tuple[FakeHttpServer, Recorder]) -> None:
    server, _ = served

    async def main() -> list[bytes]:
        sender = new_sender(connections=4)
        try:
            responses = await asyncio.gather(
                *(
                    sender.send(ProviderRequest("POST", server.url, {}, b"%d" % n))
                    for n in range(50)
                )
            )
        finally:
            await sender.close()
        return [r.body for r in responses]

    assert uvloop.run(main()) == [b"ok:%d" % n for n in range(50)]


async def test_close_while_a_connection_is_being_opened() -> None:
    async with RawServer(fixed(OK)) as server:  # never answers the TLS hello
        sender = new_sender(timeout=0.5)
        url = server.url.replace("http://", "https://")
        opening = asyncio.create_task(sender.send(ProviderRequest("GET", url)))
        assert await wait_until_async(lambda: server.accepted == 1, 5)
        await sender.close()
        with pytest.raises(TimeoutError):
            await opening
        assert sender.open_connections(url) == 0


# -- the transports through this sender ------------------------------------------------------


class Source:
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def get(self, app_key: str | None, platform: str) -> Credentials | None:
        return self.credentials


def content() -> Content:
    now = int(time.time() * 1000)
    return Content(
        notification_id=7,
        account_id=1,
        app_key="app",
        event=None,
        title="Hello",
        message="World",
        data_json='{"order": 7}',
        created_ms=now,
        expires_ms=now + 600_000,
        options=PushOptions(collapse_key="c"),
    )


async def test_web_push_through_this_sender() -> None:
    async with FakeWebPush() as fake:
        transport = WebPushTransport(
            Source(VapidCredentials.parse(fake.credentials())), new_sender(connections=16)
        )
        try:
            devices = [Target(n, orjson.dumps(fake.subscribe()).decode()) for n in range(40)]
            fake.unregister(devices[3].address)
            outcomes = await transport.send(content(), devices)
            assert isinstance(outcomes[3], TokenInvalid)
            assert outcomes[:3] + outcomes[4:] == [Delivered()] * 39
            assert fake.wait_for(39)
            assert fake.messages[0].json()["body"] == "World"

            fake.fail_next(503, retry_after=20)
            [later] = await transport.send(content(), devices[:1])
            assert isinstance(later, RetryLater) and later.after_seconds == 20

            fake.drop_next(2)  # the reused connection is tried twice: once, then a new one
            [dropped] = await transport.send(content(), devices[:1])
            assert isinstance(dropped, RetryLater)
            assert dropped.reason.startswith("ConnectionFailed: ")
            assert await transport.send(content(), devices[:1]) == [Delivered()]
        finally:
            await transport.close()


async def test_fcm_through_this_sender() -> None:
    with FakeFcm() as fcm:
        credentials = FcmCredentials.parse(fcm.credentials(), fcm.rules)
        transport = FcmTransport(
            Source(credentials),
            new_sender(connections=16),
            base_url=fcm.url,
            concurrency=16,
            token_hosts=fcm.token_hosts,
        )
        try:
            fcm.unregister("gone")
            tokens = [f"t{n}" for n in range(50)] + ["gone"]
            outcomes = await transport.send(content(), [Target(n, t) for n, t in enumerate(tokens)])
            assert outcomes[:-1] == [Delivered()] * 50
            assert isinstance(outcomes[-1], TokenInvalid)
            assert outcomes[-1].reason.startswith("UNREGISTERED: ")
            assert fcm.token_fetches == 1
            assert {m.token for m in fcm.messages} == set(tokens[:-1])

            fcm.fail_next(429, retry_after=30)
            [later] = await transport.send(content(), [Target(1, "t1")])
            assert later == RetryLater("QUOTA_EXCEEDED: injected by FakeFcm", 30.0)

            fcm.drop_next(2)
            [dropped] = await transport.send(content(), [Target(1, "t1")])
            assert isinstance(dropped, RetryLater)
            assert dropped.reason.startswith("FCM unreachable: ")
            assert await transport.send(content(), [Target(1, "t1")]) == [Delivered()]
        finally:
            await transport.close()
