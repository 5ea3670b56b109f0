"""Where credentials and the client's address come from in a request."""

from __future__ import annotations

from starlette.requests import HTTPConnection


def bearer(connection: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    header = connection.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def client_address(connection: HTTPConnection) -> str | None:
    """The client's address: the peer's, or, from a trusted proxy (setting
    ``trusted_proxies``), the one its ``X-Forwarded-For`` names (see ``serving``)."""
    client = connection.client
    return client.host if client is not None else None
