"""Helpers the provider transport tests share (unit and integration): a fixed credential
source, a sender that trusts the local test CA, and targets from addresses.

Test modules import it as ``from provider_support import ...``: ``tests/`` is on ``sys.path``
because ``tests/conftest.py`` sits there (pytest's default ``prepend`` import mode)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

from pushgate.domain.credentials import GOOGLE_TOKEN_URI, Credentials
from pushgate.testing.tls import local_ca
from pushgate.transports.base import Target
from pushgate.transports.http1 import Http1Sender
from pushgate.transports.negotiated import NegotiatedSender
from pushgate.transports.registry import fcm_sender


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


def local_negotiated_sender(max_connections: int = 16) -> NegotiatedSender:
    """HTTP/2 where the server offers it, else HTTP/1.1 (as FCM's sender), trusting the
    fakes' local CA."""
    return fcm_sender(
        ca_file=local_ca().ca_file, timeout_seconds=5, max_connections=max_connections
    )


def targets(*addresses: str) -> list[Target]:
    """One target per address, device ids 1, 2, ..."""
    return [Target(n, address) for n, address in enumerate(addresses, 1)]


def pem(key: Any) -> str:
    """A private key as unencrypted PKCS#8 PEM."""
    text: str = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return text


def service_account(private_key: str, token_uri: str = GOOGLE_TOKEN_URI) -> dict[str, Any]:
    """The ``android`` credentials of a service account with this key and token_uri."""
    return {
        "service_account": {
            "type": "service_account",
            "project_id": "my-project",
            "client_email": "pushgate@my-project.iam.gserviceaccount.com",
            "private_key_id": "0123abcd",
            "private_key": private_key,
            "token_uri": token_uri,
        }
    }
