"""Helpers the provider transport tests share (unit and integration): a fixed credential
source, a sender that trusts the local test CA, and targets from addresses.

Test modules import it as ``from provider_support import ...``: ``tests/`` is on ``sys.path``
because ``tests/conftest.py`` sits there (pytest's default ``prepend`` import mode)."""

from __future__ import annotations

from pushgate.domain.credentials import Credentials
from pushgate.testing.tls import local_ca
from pushgate.transports.base import Target
from pushgate.transports.http1 import Http1Sender


class StaticSource:
    """A ``CredentialSource`` answering the same credentials (or None) for every app."""

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials

    async def get(self, app_key: str | None, platform: str) -> Credentials | None:
        return self.credentials


def local_sender(max_connections: int = 16) -> Http1Sender:
    """An ``Http1Sender`` that trusts the fakes' local CA (close it, or the transport)."""
    return Http1Sender(
        ca_file=local_ca().ca_file, timeout_seconds=5, max_connections=max_connections
    )


def targets(*addresses: str) -> list[Target]:
    """One target per address, device ids 1, 2, ..."""
    return [Target(n, address) for n, address in enumerate(addresses, 1)]
