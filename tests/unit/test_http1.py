"""The pure parts of the HTTP/1.1 sender: splitting URLs and encoding requests."""

from __future__ import annotations

import pytest

from pushgate.transports.http import ProviderRequest
from pushgate.transports.http1 import Http1Sender, _encode, _split


@pytest.mark.parametrize(
    ("url", "origin", "path"),
    [
        ("https://fcm.googleapis.com/v1/p/m:send", "https://fcm.googleapis.com", "/v1/p/m:send"),
        ("http://127.0.0.1:8080/a?b=1&c=2", "http://127.0.0.1:8080", "/a?b=1&c=2"),
        ("https://h.example", "https://h.example", "/"),
        ("https://h.example?x=1", "https://h.example", "/?x=1"),
        ("https://h.example/p#frag", "https://h.example", "/p"),
        ("https://h.example#frag", "https://h.example", "/"),
        ("https://[::1]:8443/p", "https://[::1]:8443", "/p"),
    ],
)
def test_split(url: str, origin: str, path: str) -> None:
    assert _split(url) == (origin, path)


def test_split_refuses_a_relative_url() -> None:
    with pytest.raises(ValueError, match="absolute"):
        _split("/v1/send")


def test_a_post_is_one_buffer_with_host_length_headers_and_body() -> None:
    request = ProviderRequest(
        "POST", "https://x/p", {"Authorization": "Bearer t", "TTL": "60"}, b'{"a":1}'
    )
    assert _encode(request, "/p?q=1", "x.example:8443") == (
        b"POST /p?q=1 HTTP/1.1\r\n"
        b"host: x.example:8443\r\n"
        b"content-length: 7\r\n"
        b"Authorization: Bearer t\r\n"
        b"TTL: 60\r\n"
        b"\r\n"
        b'{"a":1}'
    )


def test_an_empty_post_says_so_and_a_get_says_nothing() -> None:
    assert b"content-length: 0\r\n" in _encode(ProviderRequest("POST", "u"), "/", "h")
    assert _encode(ProviderRequest("GET", "u"), "/", "h") == b"GET / HTTP/1.1\r\nhost: h\r\n\r\n"


def test_the_sender_owns_host_and_length() -> None:
    request = ProviderRequest(
        "POST", "u", {"Host": "evil", "Content-Length": "99", "Transfer-Encoding": "chunked"}, b"x"
    )
    encoded = _encode(request, "/", "h")
    assert encoded == b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 1\r\n\r\nx"


@pytest.mark.parametrize(
    "headers", [{"X-A": "1\r\nX-Injected: 1"}, {"X-A": "1\nX: 2"}, {"X-A\r": "1"}]
)
def test_a_line_break_in_a_header_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="line break"):
        _encode(ProviderRequest("POST", "u", headers), "/", "h")


def test_a_line_break_in_the_path_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        _encode(ProviderRequest("GET", "u"), "/a\r\nX: 1", "h")


def test_at_least_one_connection() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        Http1Sender(ca_file=None, timeout_seconds=1, max_connections=0)


async def test_only_http_urls() -> None:
    sender = Http1Sender(ca_file=None, timeout_seconds=1, max_connections=1)
    with pytest.raises(ValueError, match="http"):
        await sender.send(ProviderRequest("GET", "ftp://h.example/x"))
    await sender.close()
