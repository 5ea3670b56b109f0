"""RFC 8291 message encryption (against the RFC's own worked example) and RFC 8292 VAPID."""

from __future__ import annotations

import os
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pushgate.domain.credentials import VapidCredentials, b64url, b64url_decode
from pushgate.transports.webpush_crypto import (
    MAX_BODY_BYTES,
    MAX_PLAINTEXT_BYTES,
    InvalidKey,
    PayloadTooLarge,
    VapidTokens,
    decrypt,
    derive_keys,
    encrypt,
    load_public_key,
    origin_of,
    parse_authorization,
    point_bytes,
)

# RFC 8291 section 5 and appendix A: the worked example, all values base64url as printed there.
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_AS_PUBLIC = (
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
)
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_ECDH_SECRET = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs"
RFC_PRK_KEY = "Snr3JMxaHVDXHWJn5wdC52WjpCtd2EIEGBykDcZW32k"
RFC_KEY_INFO = (
    "V2ViUHVzaDogaW5mbwAEJXGyvs3942BVGq8e0PTNNmwRzr5VX4m8t7GGpTM5FzFo7OLr4BhZe9MEebhuPI-OztV3"
    "ylkYfpJGmQ22ggCLDgT-M_SrDepxkU21WCP3O1SUj0EwbZIHMtu5pZpTKGSCIA5Zent7wmC6HCJ5mFgJkuk5cwAv"
    "MBKiiujwa7t45ewP"
)
RFC_IKM = "S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg"
RFC_PRK = "09_eUZGrsvxChDCGRCdkLiDXrReGOEVeSCdCcPBSJSc"
RFC_CEK = "oIhVW04MRdy2XN9CiKLxTg"
RFC_NONCE = "4h_95klXJ5E_qnoN"
RFC_HEADER = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
    "6TlzAC8wEqKK6PBru3jl7A8"
)
RFC_CIPHERTEXT = "8pfeW0KbunFT06SuDKoJH9Ql87S1QUrdirN6GcG7sFz1y1sqLgVi1VhjVkHsUoEsbI_0LpXMuGvnzQ"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml"
    "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT"
    "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)


def private_key(scalar_b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(scalar_b64), "big"), ec.SECP256R1())


def test_the_rfc_key_pairs_are_consistent() -> None:
    assert b64url(point_bytes(private_key(RFC_AS_PRIVATE).public_key())) == RFC_AS_PUBLIC
    assert b64url(point_bytes(private_key(RFC_UA_PRIVATE).public_key())) == RFC_UA_PUBLIC


def test_key_derivation_matches_every_intermediate_value_of_rfc_8291() -> None:
    sender = private_key(RFC_AS_PRIVATE)
    ecdh_secret = sender.exchange(ec.ECDH(), load_public_key(b64url_decode(RFC_UA_PUBLIC)))
    assert b64url(ecdh_secret) == RFC_ECDH_SECRET
    assert (
        b64url(b"WebPush: info\x00" + b64url_decode(RFC_UA_PUBLIC) + b64url_decode(RFC_AS_PUBLIC))
        == RFC_KEY_INFO
    )

    keys = derive_keys(
        ecdh_secret,
        b64url_decode(RFC_AUTH),
        b64url_decode(RFC_UA_PUBLIC),
        b64url_decode(RFC_AS_PUBLIC),
        b64url_decode(RFC_SALT),
    )

    assert b64url(keys.prk_key) == RFC_PRK_KEY
    assert b64url(keys.ikm) == RFC_IKM
    assert b64url(keys.prk) == RFC_PRK
    assert b64url(keys.cek) == RFC_CEK
    assert b64url(keys.nonce) == RFC_NONCE


def test_encryption_reproduces_the_rfc_8291_message_byte_for_byte() -> None:
    body = encrypt(
        RFC_PLAINTEXT,
        b64url_decode(RFC_UA_PUBLIC),
        b64url_decode(RFC_AUTH),
        sender_key=private_key(RFC_AS_PRIVATE),
        salt=b64url_decode(RFC_SALT),
    )

    assert b64url(body[:86]) == RFC_HEADER
    assert body[16:20] == (4096).to_bytes(4, "big") and body[20] == 65
    assert b64url(body[86:]) == RFC_CIPHERTEXT
    assert body == b64url_decode(RFC_BODY)
    assert len(body) == 144  # 86 header + 41 plaintext + 1 delimiter + 16 tag


def test_the_rfc_message_decrypts_with_the_user_agent_key() -> None:
    plaintext = decrypt(
        b64url_decode(RFC_BODY), private_key(RFC_UA_PRIVATE), b64url_decode(RFC_AUTH)
    )
    assert plaintext == RFC_PLAINTEXT


def test_fresh_key_and_salt_per_message_and_round_trip() -> None:
    browser = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    point = point_bytes(browser.public_key())

    first = encrypt(b'{"body":"hi"}', point, auth)
    second = encrypt(b'{"body":"hi"}', point, auth)

    assert first[:16] != second[:16]  # salt
    assert first[21:86] != second[21:86]  # the sender's public key
    assert decrypt(first, browser, auth) == decrypt(second, browser, auth) == b'{"body":"hi"}'


def test_the_largest_payload_fills_4096_bytes_and_one_more_byte_is_refused() -> None:
    browser = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    point = point_bytes(browser.public_key())

    body = encrypt(b"x" * MAX_PLAINTEXT_BYTES, point, auth)
    assert len(body) == MAX_BODY_BYTES
    assert decrypt(body, browser, auth) == b"x" * MAX_PLAINTEXT_BYTES

    with pytest.raises(PayloadTooLarge, match="3994 bytes.*at most 3993"):
        encrypt(b"x" * (MAX_PLAINTEXT_BYTES + 1), point, auth)


def test_decryption_refuses_a_damaged_body_or_the_wrong_secret() -> None:
    browser = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    body = bytearray(encrypt(b"hello", point_bytes(browser.public_key()), auth))

    with pytest.raises(ValueError, match="does not decrypt"):
        decrypt(bytes(body), browser, os.urandom(16))
    body[-1] ^= 1
    with pytest.raises(ValueError, match="does not decrypt"):
        decrypt(bytes(body), browser, auth)
    with pytest.raises(ValueError, match="shorter"):
        decrypt(b"short", browser, auth)


@pytest.mark.parametrize(
    "point",
    [b"", b"\x04" + b"\x01" * 64, b"\x02" + b"\x00" * 32, b"\x04" + b"\x00" * 63],
    ids=["empty", "not-on-curve", "compressed", "short"],
)
def test_unusable_subscription_keys_are_refused(point: bytes) -> None:
    with pytest.raises(InvalidKey):
        load_public_key(point)


def test_auth_must_be_16_bytes() -> None:
    point = point_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(InvalidKey, match="16-byte"):
        encrypt(b"x", point, b"short")


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc:def", "https://fcm.googleapis.com"),
        (
            "https://updates.push.services.mozilla.com:443/wpush/v2/x",
            "https://updates.push.services.mozilla.com",
        ),
        ("https://127.0.0.1:8443/push/1?x=y", "https://127.0.0.1:8443"),
        ("https://WEB.Push.Apple.com/QGu", "https://web.push.apple.com"),
        ("https://[::1]:9000/p", "https://[::1]:9000"),
    ],
)
def test_the_audience_is_the_endpoint_origin(url: str, origin: str) -> None:
    assert origin_of(url) == origin


# -- VAPID (RFC 8292) -----------------------------------------------------------------------


def check_vapid(
    header: str, origin: str, credentials: VapidCredentials, now: float
) -> dict[str, Any]:
    """RFC 8292's rules for the header, as a push service applies them."""
    token, key = parse_authorization(header)
    assert header == f"vapid t={token}, k={key}"
    assert key == credentials.public_key
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(
        token,
        load_public_key(b64url_decode(key)),
        algorithms=["ES256"],
        audience=origin,
        options={"verify_exp": False},
    )
    assert claims["aud"] == origin
    assert now < claims["exp"] <= now + 24 * 3600
    assert claims["sub"].startswith(("mailto:", "https:"))
    return claims


def test_the_vapid_header_follows_rfc_8292() -> None:
    credentials = VapidCredentials.generate("mailto:ops@example.com")
    tokens = VapidTokens()
    now = time.time()

    header = tokens.authorization(credentials, "https://fcm.googleapis.com", now)

    claims = check_vapid(header, "https://fcm.googleapis.com", credentials, now)
    assert claims["sub"] == "mailto:ops@example.com"
    assert 11 * 3600 < claims["exp"] - now <= 12 * 3600


def test_a_token_is_signed_once_per_key_and_origin_and_reused() -> None:
    credentials = VapidCredentials.generate("https://example.com/contact")
    other = VapidCredentials.generate("mailto:other@example.com")
    tokens = VapidTokens()
    now = time.time()

    first = tokens.authorization(credentials, "https://push.example", now)
    assert tokens.authorization(credentials, "https://push.example", now + 600) == first
    assert tokens.signed == 1

    elsewhere = tokens.authorization(credentials, "https://other.push.example", now)
    another_key = tokens.authorization(other, "https://push.example", now)
    assert len({first, elsewhere, another_key}) == 3
    assert tokens.signed == 3
    check_vapid(another_key, "https://push.example", other, now)


def test_a_token_is_renewed_when_less_than_an_hour_is_left() -> None:
    credentials = VapidCredentials.generate("mailto:ops@example.com")
    tokens = VapidTokens()
    start = time.time()

    first = tokens.authorization(credentials, "https://push.example", start)
    same = tokens.authorization(credentials, "https://push.example", start + 10.5 * 3600)
    renewed = tokens.authorization(credentials, "https://push.example", start + 11.5 * 3600)

    assert same == first
    assert renewed != first
    check_vapid(renewed, "https://push.example", credentials, start + 11.5 * 3600)


def test_token_lifetimes_beyond_24_hours_are_refused() -> None:
    with pytest.raises(ValueError):
        VapidTokens(lifetime=25 * 3600)


@pytest.mark.parametrize("value", ["Bearer abc", "vapid t=abc", "vapid k=abc", "WebPush abc", ""])
def test_malformed_vapid_authorizations_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_authorization(value)
