"""Secrets at rest: AES-256-GCM encryption and keyed hashes for constant-time look-ups."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode()
    )


class SecretBox:
    """Encrypts stored secrets and hashes credentials with keys derived from the server secret."""

    def __init__(self, server_secret: str) -> None:
        self._aead = AESGCM(_derive(server_secret, b"pushgate/secret-box/v1"))
        self._mac_key = _derive(server_secret, b"pushgate/credential-hash/v1")

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), None)
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str) -> str:
        raw = base64.urlsafe_b64decode(token.encode())
        return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None).decode()

    def digest(self, credential: str) -> str:
        """Keyed hash of a credential: stored and indexed instead of the credential itself."""
        return hmac.new(self._mac_key, credential.encode(), hashlib.sha256).hexdigest()

    def matches(self, credential: str, stored_digest: str) -> bool:
        return hmac.compare_digest(self.digest(credential), stored_digest)


def new_token(nbytes: int = 16, prefix: str = "") -> str:
    return prefix + secrets.token_hex(nbytes)
