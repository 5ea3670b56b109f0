"""What the provider transports send through: a request built without I/O, and a sender.

Transports build ``ProviderRequest`` values with pure functions and hand them to an injected
``HttpSender``; tests inject a scripted sender or point a real one at the fakes of
``pushgate.testing``. ``transports/http1.Http1Sender`` serves the HTTP/1.1 providers (HMS,
Web Push); APNs uses ``transports/http2.Http2Sender``, and FCM
``transports/negotiated.NegotiatedSender`` (HTTP/2 where the server offers it, else HTTP/1.1).

Why our own small clients rather than httpx2 (or aiohttp): on this project's 2-core machine,
POSTs over 64 keep-alive TLS connections to a local server ran at ~790 requests/s with
httpx2, ~3,900-12,900/s with aiohttp (77 µs of client CPU each) and 27,000-28,800/s with
``Http1Sender`` (19-26 µs each); see docs/performance.md.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def retry_after(self) -> float | None:
        """``Retry-After`` in seconds (delta form only), when the provider sent one."""
        value = self.headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value.strip())
        except ValueError:
            return None
        return seconds if seconds >= 0 else None


class HttpSender(Protocol):
    async def send(self, request: ProviderRequest) -> ProviderResponse:
        """The provider's answer. Raises ``OSError`` (``ConnectionError``) or
        ``TimeoutError`` when no answer came; transports count that as RetryLater."""

    async def close(self) -> None: ...


def provider_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trusted CAs, plus ``ca_file`` when given (local fakes, private proxies)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context
