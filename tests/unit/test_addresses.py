"""Provider addresses and subscriber identifiers: every validator, valid and malformed."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pushgate.domain import addresses
from pushgate.domain.errors import InvalidInput

APNS = "a1" * 32
FCM = "dQw4w9WgXcQ:APA91bH" + "x_-Yz0" * 20
HMS = "0861234567890123456789012345678901234567890123456789012345678901200000000000000000"


def b64(raw: bytes, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(raw).decode()
    return text if pad else text.rstrip("=")


def p256_point() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


POINT = p256_point()
AUTH = bytes(range(16))


def subscription(**changes: object) -> dict[str, object]:
    keys: dict[str, object] = {"p256dh": b64(POINT), "auth": b64(AUTH)}
    value: dict[str, object] = {
        "endpoint": "https://fcm.googleapis.com/fcm/send/abc:def",
        "expirationTime": None,
        "keys": keys,
    }
    for name, item in changes.items():
        if name in ("p256dh", "auth"):
            if item is None:
                del keys[name]
            else:
                keys[name] = item
        elif item is None:
            del value[name]
        else:
            value[name] = item
    return value


def fails(check: object, *args: object) -> str:
    assert callable(check)
    with pytest.raises(InvalidInput) as caught:
        check(*args)
    message: str = caught.value.message
    return message


# --------------------------------------------------------------------------- APNs


@pytest.mark.parametrize("token", ["ab" * 32, "AB" * 32, "0f" * 100, "0123456789abcdef" * 5])
def test_apns_tokens_are_even_length_hex_and_lower_cased(token: str) -> None:
    assert addresses.apns_token(token) == token.lower()


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", "token is empty: send the APNs device token in hexadecimal"),
        (
            "ab" * 31 + "gz",
            "token must be the APNs device token in hexadecimal (0-9, a-f); "
            "found 'g' at character 63",
        ),
        (
            "<" + "ab" * 32 + ">",
            "token must be the APNs device token in hexadecimal (0-9, a-f); found '<' at "
            "character 1 (send the token's bytes as one hex string, without spaces or angle "
            "brackets)",
        ),
        (
            "ab" * 16 + " " + "ab" * 16,
            "token must be the APNs device token in hexadecimal (0-9, a-f); found ' ' at "
            "character 33 (send the token's bytes as one hex string, without spaces or angle "
            "brackets)",
        ),
        (
            "ab" * 31,
            "token must be an APNs device token of an even number of 64 to 200 hexadecimal "
            "digits; got 62 digits",
        ),
        ("a" * 65, "an even number of 64 to 200 hexadecimal digits; got 65 digits"),
        ("ab" * 101, "an even number of 64 to 200 hexadecimal digits; got 202 digits"),
    ],
)
def test_malformed_apns_tokens(token: str, expected: str) -> None:
    assert expected in fails(addresses.apns_token, token)


def test_non_string_token_and_field_name() -> None:
    assert fails(addresses.apns_token, 123) == "token must be a string"
    assert fails(addresses.fcm_token, ["x"], "registration_id") == (
        "registration_id must be a string"
    )


# --------------------------------------------------------------------------- FCM


@pytest.mark.parametrize("token", [FCM, "a" * 100, "A-_:9" * 819 + "z"])
def test_fcm_tokens(token: str) -> None:
    assert addresses.fcm_token(token) == token


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", "token is empty: send the FCM registration token"),
        (
            FCM[:50] + "." + FCM[51:],
            "token must be the FCM registration token, which uses only letters, digits, '_', "
            "'-' and ':'; found '.' at character 51",
        ),
        (FCM + " ", f"found ' ' at character {len(FCM) + 1}"),
        (FCM + "é", "found 'é' at character"),
        (
            "a" * 99,
            "token must be the FCM registration token of 100 to 4096 characters; got 99 characters",
        ),
        ("a" * 4097, "of 100 to 4096 characters; got 4097 characters"),
    ],
)
def test_malformed_fcm_tokens(token: str, expected: str) -> None:
    assert expected in fails(addresses.fcm_token, token)


# --------------------------------------------------------------------------- HMS


@pytest.mark.parametrize("token", [HMS, "AQ.+/=_:-" * 4, "x" * 4096])
def test_hms_tokens(token: str) -> None:
    assert addresses.hms_token(token) == token


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", "token is empty: send the HMS push token"),
        (
            HMS[:10] + "*" + HMS[11:],
            "token must be the HMS push token, which uses only letters, digits, '_', ':', '-', "
            "'.', '+', '/' and '='; found '*' at character 11",
        ),
        ("a" * 31, "token must be the HMS push token of 32 to 4096 characters; got 31 characters"),
        ("a" * 4097, "got 4097 characters"),
        ("a" * 40 + "\x00", "found '\\x00' at character 41"),
    ],
)
def test_malformed_hms_tokens(token: str, expected: str) -> None:
    assert expected in fails(addresses.hms_token, token)


# --------------------------------------------------------------------------- Web Push


def test_web_push_subscription_is_stored_as_canonical_json() -> None:
    padded = subscription(p256dh=b64(POINT, pad=True), auth=b64(AUTH, pad=True))
    address = addresses.web_push_address(padded)
    assert address == addresses.web_push_address(subscription())
    assert json.loads(address) == {
        "endpoint": "https://fcm.googleapis.com/fcm/send/abc:def",
        "keys": {"auth": b64(AUTH), "p256dh": b64(POINT)},
    }
    assert address.index('"auth"') < address.index('"p256dh"') and " " not in address
    parsed = addresses.parse_web_push_address(address)
    assert (parsed.endpoint, parsed.p256dh, parsed.auth) == (
        "https://fcm.googleapis.com/fcm/send/abc:def",
        POINT,
        AUTH,
    )
    assert addresses.address_key("web", address) == parsed.endpoint


def test_web_push_endpoint_limits() -> None:
    base = "https://push.example.com:8443/"
    longest = base + "x" * (2048 - len(base))
    assert json.loads(addresses.web_push_address(subscription(endpoint=longest)))["endpoint"] == (
        longest
    )
    assert "at most 2048 characters; got 2049" in fails(
        addresses.web_push_address, subscription(endpoint=longest + "x")
    )


NOT_ON_CURVE = b"\x04" + b"\x01" * 64


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "not an object",
            'subscription must be an object: the browser\'s PushSubscription as JSON, {"endpoint"',
        ),
        (
            subscription(endpoint=None),
            "subscription.endpoint is required: the push service URL of the subscription",
        ),
        (subscription(endpoint=5), "subscription.endpoint must be a string"),
        (
            subscription(endpoint="http://push.example.com/x"),
            "subscription.endpoint must be an https:// URL; got http://",
        ),
        (
            subscription(endpoint="push.example.com/x"),
            "subscription.endpoint must be an https:// URL; got no scheme",
        ),
        (
            subscription(endpoint="https:///x"),
            "subscription.endpoint must name a host, e.g. https://fcm.googleapis.com/fcm/send/",
        ),
        (
            subscription(endpoint="https://push.example.com/a b"),
            "subscription.endpoint must not contain spaces or control characters",
        ),
        (
            subscription(endpoint="https://push.example.com:99999/x"),
            "subscription.endpoint is not a valid URL",
        ),
        (
            subscription(endpoint="https://u:p@push.example.com/x"),
            "subscription.endpoint must not contain user credentials",
        ),
        (
            subscription(keys=None),
            "subscription.keys must be an object with the subscription's p256dh and auth keys",
        ),
        (subscription(keys=["x"]), "subscription.keys must be an object"),
        (
            subscription(p256dh=None),
            "subscription.keys.p256dh is required: the subscription's P-256 public key in "
            "base64url",
        ),
        (subscription(p256dh=""), "subscription.keys.p256dh is empty: send it in base64url"),
        (
            subscription(p256dh=base64.b64encode(b"\xfb\xff" * 40).decode()),
            "subscription.keys.p256dh must be base64url (letters, digits, '-' and '_', "
            "optionally '=' padding at the end); found '+' at character 1",
        ),
        (
            subscription(p256dh="A" * 5),
            "subscription.keys.p256dh is not valid base64url: its length cannot be decoded",
        ),
        (
            subscription(p256dh=b64(POINT) + "==="),
            "subscription.keys.p256dh is not valid base64url: its length cannot be decoded",
        ),
        (
            subscription(p256dh=b64(POINT[:33])),
            "subscription.keys.p256dh must decode to 65 bytes (an uncompressed P-256 public "
            "key); got 33 bytes",
        ),
        (
            subscription(p256dh=b64(b"\x02" + POINT[1:])),
            "subscription.keys.p256dh must be an uncompressed P-256 point, whose first byte "
            "is 0x04; got 0x02",
        ),
        (
            subscription(p256dh=b64(NOT_ON_CURVE)),
            "subscription.keys.p256dh is not a point on the P-256 curve",
        ),
        (
            subscription(auth=None),
            "subscription.keys.auth is required: the subscription's 16-byte auth secret",
        ),
        (
            subscription(auth=b64(AUTH[:12])),
            "subscription.keys.auth must decode to 16 bytes; got 12",
        ),
        (subscription(auth=7), "subscription.keys.auth must be a string"),
    ],
)
def test_malformed_web_push_subscriptions(value: object, expected: str) -> None:
    assert expected in fails(addresses.web_push_address, value)


# --------------------------------------------------------------------------- by platform


def test_push_address_by_platform() -> None:
    assert addresses.push_address("channel") is None
    assert addresses.push_address("ios", token=APNS.upper()) == APNS
    assert addresses.push_address("android", token=FCM) == FCM
    assert addresses.push_address("huawei", token=HMS) == HMS
    web = addresses.push_address("web", subscription=subscription())
    assert web is not None and json.loads(web)["keys"]["auth"] == b64(AUTH)


@pytest.mark.parametrize(
    ("platform", "token", "sub", "expected"),
    [
        (
            "ios",
            None,
            None,
            "token is required for platform ios: the APNs device token (hexadecimal)",
        ),
        ("android", None, None, "token is required for platform android: the FCM registration"),
        ("huawei", None, None, "token is required for platform huawei: the HMS push token"),
        (
            "ios",
            None,
            {"endpoint": "https://x"},
            "subscription is only for platform web; send the ios device's address as token",
        ),
        (
            "web",
            APNS,
            None,
            "token is not used for platform web: send the browser's PushSubscription as "
            "subscription",
        ),
        ("web", None, None, "subscription is required for platform web"),
        ("channel", APNS, None, "token is not used for platform channel"),
        ("channel", None, {}, "subscription is not used for platform channel"),
        ("fax", "x", None, "platform must be one of channel, ios, android, huawei, web"),
    ],
)
def test_wrong_or_missing_address_field(
    platform: str, token: str | None, sub: object, expected: str
) -> None:
    assert expected in fails(addresses.push_address, platform, token, sub)


def test_hints_never_show_the_whole_address() -> None:
    assert addresses.address_hint("channel", None) is None
    assert addresses.address_hint("ios", APNS) == "…" + APNS[-8:]
    assert addresses.address_hint("android", FCM) == "…" + FCM[-8:]
    web = addresses.web_push_address(subscription(endpoint="https://push.example.com:8443/s/1"))
    assert addresses.address_hint("web", web) == "https://push.example.com:8443"
    assert addresses.address_key("ios", APNS) == APNS
    ipv6 = addresses.web_push_address(subscription(endpoint="https://[::1]:8443/s/1"))
    assert addresses.address_hint("web", ipv6) == "https://[::1]:8443"


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("Europe/Amsterdam", "Europe/Amsterdam"),
        ("europe/amsterdam", "Europe/Amsterdam"),
        ("UTC", "UTC"),
        ("+03:00", "+03:00"),
        ("-12:00", "-12:00"),
        ("+14:00", "+14:00"),
        ("+05:45", "+05:45"),
    ],
)
def test_timezones(value: str, stored: str) -> None:
    assert addresses.timezone_name(value) == stored


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Mars/Olympus",
            "timezone must be an IANA time zone name such as Europe/Amsterdam, or a fixed "
            "offset such as +03:00; got 'Mars/Olympus'",
        ),
        ("+3", "got '+3'"),
        ("", "got ''"),
        ("x" * 100, "got '" + "x" * 64 + "…'"),
        (
            "+15:00",
            "timezone offset must lie between -12:00 and +14:00 with minutes below 60; "
            "got '+15:00'",
        ),
        ("-12:30", "must lie between -12:00 and +14:00"),
        ("+03:60", "with minutes below 60"),
    ],
)
def test_malformed_timezones(value: str, expected: str) -> None:
    assert expected in fails(addresses.timezone_name, value)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("ann@example.com", "ann@example.com"),
        ("Ann.Lee+news@Example.COM", "Ann.Lee+news@example.com"),
        ("x@mail.bücher.de", "x@mail.bücher.de"),
        (
            "a" * 64 + "@" + ("b" * 60 + ".") * 4 + "com",
            "a" * 64 + "@" + ("b" * 60 + ".") * 4 + "com",
        ),
    ],
)
def test_emails(value: str, stored: str) -> None:
    assert addresses.email_address(value) == stored


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ann.example.com", "email must be an address like ann@example.com, with exactly one '@'"),
        ("a@b@example.com", "with exactly one '@'"),
        ("@example.com", "the part before '@' must be 1 to 64 characters"),
        ("a" * 65 + "@example.com", "the part before '@' must be 1 to 64 characters"),
        ("ann lee@example.com", "without spaces, quotes or brackets"),
        ("ann@localhost", "the part after '@' must be a domain name with a dot"),
        ("ann@example..com", "the part after '@' must be a domain name with a dot"),
        ("ann@-example.com", "the part after '@' must be a domain name with a dot"),
        ("ann@example.com.", "the part after '@' must be a domain name with a dot"),
        ("ann@exa mple.com", "the part after '@' must be a domain name with a dot"),
        ("a@" + "b" * 320 + ".com", "email must be at most 320 characters; got 326"),
    ],
)
def test_malformed_emails(value: str, expected: str) -> None:
    assert expected in fails(addresses.email_address, value)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("+31612345678", "+31612345678"),
        ("+12025550123", "+12025550123"),
        ("+49301234", "+49301234"),
        ("+31 6 12345678", "+31612345678"),
        ("+31-6-1234-5678", "+31612345678"),
        ("+1 (202) 555-0123", "+12025550123"),
    ],
)
def test_phone_numbers_are_stored_as_e164(value: str, stored: str) -> None:
    assert addresses.phone_number(value) == stored


@pytest.mark.parametrize("value", ["31612345678", "0612345678", "", "+abc"])
def test_phone_numbers_without_their_country_code(value: str) -> None:
    assert fails(addresses.phone_number, value) == (
        "phone_number must be in international form with its country code, e.g. +31612345678"
    )


@pytest.mark.parametrize("value", ["+" + "1" * 16, "+9059713551597135123"])
def test_impossible_phone_numbers(value: str) -> None:
    assert "phone_number is not a possible phone number" in fails(addresses.phone_number, value)


@pytest.mark.parametrize(
    "value",
    [
        "123e4567-e89b-12d3-a456-426614174000",
        "123E4567-E89B-12D3-A456-426614174000",
        "123e4567e89b12d3a456426614174000",
        "{123e4567-e89b-12d3-a456-426614174000}",
    ],
)
def test_uuids_are_stored_canonically(value: str) -> None:
    assert addresses.subscriber_uuid(value) == "123e4567-e89b-12d3-a456-426614174000"


@pytest.mark.parametrize(
    "value", ["", "123e4567-e89b-12d3-a456", "123e4567-e89b-12d3-a456-42661417400g", "x" * 100]
)
def test_malformed_uuids(value: str) -> None:
    assert fails(addresses.subscriber_uuid, value) == (
        "uuid must be a UUID such as 123e4567-e89b-12d3-a456-426614174000"
    )


def test_external_ids() -> None:
    assert addresses.external_id("user-1") == "user-1"
    assert fails(addresses.external_id, "") == "external_id must be 1 to 200 characters; got 0"
    assert "got 201" in fails(addresses.external_id, "x" * 201)
    assert fails(addresses.external_id, "a\x00") == "external_id must not contain the NUL character"


def test_optional_skips_none_only() -> None:
    assert addresses.optional(addresses.phone_number, None, "phone") is None
    assert "phone must be in international form" in fails(
        addresses.optional, addresses.phone_number, "1", "phone"
    )
