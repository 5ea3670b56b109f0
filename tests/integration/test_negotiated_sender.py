"""NegotiatedSender (FCM's sender): HTTP/2 to a server that chooses ``h2`` in ALPN, HTTP/1.1 to
one that does not, against the fake server on both protocols."""

from __future__ import annotations

import asyncio

from provider_support import local_negotiated_sender

from pushgate.testing.fake_server import FakeHttpServer, FakeRequest, FakeResponse
from pushgate.transports.http import ProviderRequest, ProviderResponse


async def echo(request: FakeRequest) -> FakeResponse:
    body = f"{request.method} {request.target} {request.headers.get('x-n')} {request.body!r}"
    return FakeResponse(200, body.encode(), {"content-type": "text/plain"})


def requests(url: str, count: int) -> list[ProviderRequest]:
    return [
        ProviderRequest("POST", f"{url}/send/{n}", {"x-n": str(n)}, f"body {n}".encode())
        for n in range(count)
    ]


def assert_echoed(answers: list[ProviderResponse | Exception], count: int) -> None:
    assert len(answers) == count
    for n, answer in enumerate(answers):
        assert isinstance(answer, ProviderResponse), answer
        assert answer.status == 200
        assert answer.body == f"POST /send/{n} {n} b'body {n}'".encode()


async def test_http2_when_the_server_offers_it() -> None:
    with FakeHttpServer(echo, http2=True) as server:
        sender = local_negotiated_sender()
        try:
            # more streams than the server allows at once, over the sender's two connections:
            # each answered stream must free its place on both sides
            for _ in range(5):
                assert_echoed(await sender.send_all(requests(server.url, 500), 16), 500)
            answer = await sender.send(ProviderRequest("GET", f"{server.url}/one", {"x-n": "1"}))
            assert answer.body == b"GET /one 1 b''"
        finally:
            await sender.close()
        assert server.http2_requests == 2501


async def test_http1_when_the_server_does_not_offer_http2() -> None:
    with FakeHttpServer(echo) as server:  # ALPN: http/1.1 only
        sender = local_negotiated_sender()
        try:
            first, second = await asyncio.gather(
                sender.send_all(requests(server.url, 40), 8),
                sender.send_all(requests(server.url, 40), 8),
            )
            assert_echoed(first, 40)
            assert_echoed(second, 40)
            # remembered: the next requests go straight to HTTP/1.1
            assert_echoed([await sender.send(r) for r in requests(server.url, 3)], 3)
        finally:
            await sender.close()
        assert server.http2_requests == 0


async def test_plain_http_uses_http1() -> None:
    with FakeHttpServer(echo, tls=False, http2=True) as server:
        assert server.url.startswith("http://")
        sender = local_negotiated_sender()
        try:
            assert_echoed(await sender.send_all(requests(server.url, 5), 4), 5)
        finally:
            await sender.close()
        assert server.http2_requests == 0
