from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from pushgate.crypto import SecretBox, new_token


def test_encrypt_round_trip_and_random_nonce() -> None:
    box = SecretBox("s" * 40)
    first, second = box.encrypt("secret"), box.encrypt("secret")
    assert first != second
    assert "secret" not in first
    assert box.decrypt(first) == box.decrypt(second) == "secret"


def test_other_server_secret_cannot_decrypt() -> None:
    sealed = SecretBox("a" * 40).encrypt("secret")
    with pytest.raises(InvalidTag):
        SecretBox("b" * 40).decrypt(sealed)


def test_digest_is_keyed_and_matches() -> None:
    box = SecretBox("a" * 40)
    digest = box.digest("token")
    assert digest != SecretBox("b" * 40).digest("token")
    assert box.matches("token", digest)
    assert not box.matches("token2", digest)


def test_new_token() -> None:
    token = new_token(16, "p_")
    assert token.startswith("p_") and len(token) == 34
    assert new_token() != new_token()
