"""Provider credential keys are checked for size and kind before the costly part of loading,
and a service account's token_uri is Google's unless the operator allows another host."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from provider_support import pem, service_account

from pushgate.domain import credentials as kinds
from pushgate.domain.credentials import (
    GOOGLE_TOKEN_URI,
    STORED,
    FcmCredentials,
    Rules,
    token_uri_problem,
)
from pushgate.domain.errors import InvalidInput
from pushgate.domain.keys import MAX_PEM_CHARS, load_p256, load_rsa


@pytest.fixture(scope="module")
def rsa_8192() -> str:
    return pem(rsa.generate_private_key(65537, 8192))


@pytest.fixture(scope="module")
def rsa_2048() -> str:
    return pem(rsa.generate_private_key(65537, 2048))


@pytest.fixture
def no_full_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Records every PEM load, failing the test if one runs RSA's full consistency check."""
    loads: list[bool] = []
    original = serialization.load_pem_private_key

    def recording(data: bytes, password: Any, **kwargs: Any) -> Any:
        loads.append(bool(kwargs.get("unsafe_skip_rsa_key_validation")))
        assert kwargs.get("unsafe_skip_rsa_key_validation"), "a full RSA check ran"
        return original(data, password, **kwargs)

    monkeypatch.setattr(serialization, "load_pem_private_key", recording)
    yield loads


def test_an_oversized_pem_is_refused_before_loading(
    rsa_8192: str, no_full_check: list[bool]
) -> None:
    assert len(rsa_8192) > MAX_PEM_CHARS
    with pytest.raises(InvalidInput, match="longer than any accepted key"):
        kinds.parse("android", service_account(rsa_8192))
    raw = {
        "key_id": "ABC123DEFG",
        "team_id": "DEF123GHIJ",
        "topic": "com.example.app",
        "private_key": rsa_8192,
    }
    with pytest.raises(InvalidInput, match="EC key on P-256"):
        kinds.parse("ios", raw)
    assert no_full_check == []  # refused by its size alone


def test_rsa_outside_2048_to_4096_bits_is_refused_without_the_full_check(
    no_full_check: list[bool],
) -> None:
    small = pem(rsa.generate_private_key(65537, 1024))
    with pytest.raises(InvalidInput, match=r"2048 to 4096 bits \(got 1024 bits\)"):
        load_rsa(small, what="FCM service account", checked=True)
    large = pem(rsa.generate_private_key(65537, 4608))
    assert len(large) <= MAX_PEM_CHARS
    with pytest.raises(InvalidInput, match=r"got 4608 bits"):
        load_rsa(large, what="FCM service account", checked=True)
    assert no_full_check == [True, True]


def test_a_stored_key_loads_without_the_full_check(
    rsa_2048: str, no_full_check: list[bool]
) -> None:
    credential = kinds.from_secret("android", service_account(rsa_2048, "https://x.example/t"))
    assert isinstance(credential, FcmCredentials)
    assert credential.key.key_size == 2048
    assert credential.private_key() is credential.key


def test_an_upload_runs_the_full_check(rsa_2048: str) -> None:
    credential = kinds.parse("android", service_account(rsa_2048))
    assert isinstance(credential, FcmCredentials) and credential.key.key_size == 2048
    assert credential == kinds.from_secret("android", credential.secret())


def test_ec_keys_must_be_p256() -> None:
    with pytest.raises(InvalidInput, match="P-256"):
        load_p256(pem(ec.generate_private_key(ec.SECP384R1())), what="APNs credentials")
    key = load_p256(pem(ec.generate_private_key(ec.SECP256R1())), what="APNs credentials")
    assert isinstance(key.curve, ec.SECP256R1)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8080/token",
        "http://oauth2.googleapis.com/token",
        "https://localhost.attacker.example/token",
        "https://127.0.0.1@169.254.169.254/token",
        "https://oauth2.googleapis.com.attacker.example/token",
        "https://169.254.169.254/computeMetadata/v1/",
        "https://oauth2.googleapis.com:99999/token",
    ],
)
def test_token_uri_is_google_unless_the_operator_allows_a_host(uri: str) -> None:
    assert token_uri_problem(uri, ()) is not None
    assert token_uri_problem(GOOGLE_TOKEN_URI, ()) is None


def test_allowed_token_hosts(rsa_2048: str) -> None:
    assert token_uri_problem("https://fake.test:8443/token", ["fake.test"]) is None
    assert token_uri_problem("https://fake.test:8443/token", ["fake.test:8443"]) is None
    assert token_uri_problem("https://fake.test:8443/token", ["fake.test:443"]) is not None
    assert token_uri_problem("https://fake.test/token", ["fake.test:443"]) is None
    raw = service_account(rsa_2048, "https://fake.test:8443/token")
    with pytest.raises(InvalidInput, match="fcm_token_hosts"):
        kinds.parse("android", raw)
    assert kinds.parse("android", raw, Rules(token_hosts={"fake.test"}))
    assert kinds.parse("android", raw, STORED)  # checked by the transport before use
