"""What the provider transports send through: a request built without I/O, and a sender.

Transports build ``ProviderRequest`` values with pure functions and hand them to an injected
``HttpSender``; tests inject a scripted sender or point a real one at the fakes of
``pushgate.testing``. ``AiohttpSender`` serves the HTTP/1.1 providers (FCM, HMS, Web Push);
APNs uses the HTTP/2 sender of ``transports/http2.py``.

Why aiohttp and not httpx2 here: on this project's 2-core machine, 5,000 POSTs over 64
keep-alive TLS connections to a local server ran at ~790 requests/s with httpx2 and ~3,900/s
with aiohttp (docs/performance.md), and Web Push needs thousands per second.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp


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
        """The provider's answer. Raises ``OSError``/``TimeoutError`` (or a subclass of
        ``aiohttp.ClientError``) when no answer came; transports count that as RetryLater."""

    async def close(self) -> None: ...


def provider_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trusted CAs, plus ``ca_file`` when given (local fakes, private proxies)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class AiohttpSender:
    """HTTP/1.1 with keep-alive, up to ``max_connections`` per provider host."""

    def __init__(
        self, *, ca_file: Path | None, timeout_seconds: float, max_connections: int
    ) -> None:
        self._ssl = provider_ssl_context(ca_file)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl,
                limit=0,
                limit_per_host=self._max_connections,
                keepalive_timeout=60.0,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type"),
                trust_env=False,
            )
        return self._session

    async def send(self, request: ProviderRequest) -> ProviderResponse:
        session = self._open()
        async with session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body or None,
            allow_redirects=False,
        ) as response:
            body = await response.read()
            headers = {name.lower(): value for name, value in response.headers.items()}
            return ProviderResponse(response.status, headers, body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
