"""HTTP/2 where a provider offers it, HTTP/1.1 where it does not: the sender of FCM.

FCM's HTTP v1 API answers over HTTP/2 as well as HTTP/1.1. Over HTTP/2 the requests of a batch
share a few connections, many in flight on each (``Http2Sender``: no task per request, the
frames of many requests in one TLS write), which costs less CPU per request than one request
at a time per HTTP/1.1 connection (docs/performance.md, "FCM over HTTP/2"). A proxy or a
private endpoint in front of FCM may speak HTTP/1.1 only, so the protocol is the server's
choice in the TLS handshake (ALPN): the HTTP/2 connection offers ``h2`` and ``http/1.1``, and
when the server picks HTTP/1.1 (or nothing) the request goes through the HTTP/1.1 sender
instead, and so do that origin's next requests, until ``RECHECK_SECONDS`` have passed.
Plain ``http://`` URLs (no TLS, so no ALPN) always use HTTP/1.1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pushgate.transports.base import send_each
from pushgate.transports.http import HttpSender, ProviderRequest, ProviderResponse
from pushgate.transports.http2 import Http2NotOffered, Http2Sender, split_url

RECHECK_SECONDS = 600.0
ALPN = ("h2", "http/1.1")


class NegotiatedSender:
    """An ``HttpSender`` that sends over ``http2`` (give it ``alpn=ALPN``) to the origins
    whose TLS handshake chose ``h2``, and over ``http1`` to the others."""

    def __init__(self, http2: Http2Sender, http1: HttpSender) -> None:
        self._http2 = http2
        self._http1 = http1
        # (scheme, authority), as Http2Sender's pools -> when to offer h2 there again
        self._http1_until: dict[tuple[str, str], float] = {}

    def _uses_http1(self, url: str) -> bool:
        scheme, authority, _ = split_url(url)
        if scheme != "https":
            return True
        until = self._http1_until.get((scheme, authority))
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._http1_until[(scheme, authority)]
        return False

    def _chose_http1(self, url: str) -> None:
        scheme, authority, _ = split_url(url)
        self._http1_until[(scheme, authority)] = time.monotonic() + RECHECK_SECONDS

    async def send(self, request: ProviderRequest) -> ProviderResponse:
        if not self._uses_http1(request.url):
            try:
                return await self._http2.send(request)
            except Http2NotOffered:
                self._chose_http1(request.url)
        return await self._http1.send(request)

    async def send_all(
        self, requests: Sequence[ProviderRequest], concurrency: int
    ) -> list[ProviderResponse | Exception]:
        """Each request's answer, or the exception its send raised, in order (as
        ``Http2Sender.send_all``)."""
        results: list[ProviderResponse | Exception] = [OSError("not sent")] * len(requests)
        over_http1: list[int] = []
        over_http2: list[int] = []
        for index, request in enumerate(requests):
            (over_http1 if self._uses_http1(request.url) else over_http2).append(index)
        if over_http2:
            answers = await self._http2.send_all([requests[i] for i in over_http2], concurrency)
            for index, answer in zip(over_http2, answers, strict=True):
                if isinstance(answer, Http2NotOffered):
                    self._chose_http1(requests[index].url)
                    over_http1.append(index)
                else:
                    results[index] = answer
        if over_http1:
            answers = await send_each(self._http1, [requests[i] for i in over_http1], concurrency)
            for index, answer in zip(over_http1, answers, strict=True):
                results[index] = answer
        return results

    def streams_in_flight(self) -> int:
        return self._http2.streams_in_flight()

    async def close(self) -> None:
        await self._http2.close()
        await self._http1.close()
