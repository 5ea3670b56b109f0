"""Provider addresses of devices and the identifiers of their subscribers: pure validation.

Every function takes what a client sent and either returns the normalized value that is
stored (and hashed, so a re-registration of the same address finds its device) or raises
:class:`InvalidInput` with a message that says exactly what to fix. The ``field`` argument
names the request field in that message, so every API face can use its own field names.

Addresses by platform:

- ``ios``: APNs device token, hexadecimal (stored in lower case).
- ``android``: FCM registration token.
- ``huawei``: HMS push token.
- ``web``: a Web Push subscription (``PushSubscription.toJSON()`` of the browser), stored as
  canonical JSON ``{"endpoint": ..., "keys": {"auth": ..., "p256dh": ...}}`` with the keys in
  unpadded base64url.
- ``channel``: Pushgate's own device channel; no provider address.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid as uuid_module
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TypeVar
from urllib.parse import urlsplit

import langcodes
import orjson
import phonenumbers
import pycountry
from cryptography.hazmat.primitives.asymmetric import ec

from pushgate.domain.errors import InvalidInput

T = TypeVar("T")

PLATFORMS = ("channel", "ios", "android", "huawei", "web")
TOKEN_PLATFORMS = ("ios", "android", "huawei")
PUSH_PLATFORMS = (*TOKEN_PLATFORMS, "web")

APNS_MIN, APNS_MAX = 64, 200
FCM_MIN, FCM_MAX = 100, 4096
HMS_MIN, HMS_MAX = 32, 4096
ENDPOINT_MAX = 2048
P256DH_BYTES = 65
AUTH_BYTES = 16
EMAIL_MAX = 320
HINT_CHARS = 8

_HEX = frozenset("0123456789abcdefABCDEF")
_FCM_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_:-")
_HMS_CHARS = _FCM_CHARS | frozenset(".+/=")
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_EMAIL_LOCAL = re.compile(r"[^\s@\x00-\x1f\x7f\"(),:;<>\[\\\]]+")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9\u00a1-\U0010ffff]([A-Za-z0-9\u00a1-\U0010ffff-]*)?")


# --------------------------------------------------------------------------- helpers


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string")
    return value


def _first_outside(value: str, allowed: frozenset[str]) -> tuple[int, str] | None:
    """The first character not in ``allowed`` and its position (counting from 1)."""
    for index, char in enumerate(value):
        if char not in allowed:
            return index + 1, char
    return None


def _provider_token(
    value: object,
    field: str,
    *,
    what: str,
    allowed: frozenset[str],
    charset: str,
    minimum: int,
    maximum: int,
) -> str:
    token = _string(value, field)
    if not token:
        raise InvalidInput(f"{field} is empty: send the {what}")
    bad = _first_outside(token, allowed)
    if bad is not None:
        position, char = bad
        raise InvalidInput(
            f"{field} must be the {what}, which uses only {charset}; "
            f"found {char!r} at character {position}"
        )
    if not minimum <= len(token) <= maximum:
        raise InvalidInput(
            f"{field} must be the {what} of {minimum} to {maximum} characters; "
            f"got {len(token)} characters"
        )
    return token


# --------------------------------------------------------------------------- provider tokens


def apns_token(value: object, field: str = "token") -> str:
    """An APNs device token: an even number of 64 to 200 hexadecimal digits, lower-cased."""
    token = _string(value, field)
    if not token:
        raise InvalidInput(f"{field} is empty: send the APNs device token in hexadecimal")
    bad = _first_outside(token, _HEX)
    if bad is not None:
        position, char = bad
        hint = ""
        if char in " <>":
            hint = " (send the token's bytes as one hex string, without spaces or angle brackets)"
        raise InvalidInput(
            f"{field} must be the APNs device token in hexadecimal (0-9, a-f); "
            f"found {char!r} at character {position}{hint}"
        )
    if not APNS_MIN <= len(token) <= APNS_MAX or len(token) % 2:
        raise InvalidInput(
            f"{field} must be an APNs device token of an even number of {APNS_MIN} to "
            f"{APNS_MAX} hexadecimal digits; got {len(token)} digits"
        )
    return token.lower()


def fcm_token(value: object, field: str = "token") -> str:
    """An FCM registration token: letters, digits, ``_``, ``-`` and ``:``; 100 to 4096 chars."""
    return _provider_token(
        value,
        field,
        what="FCM registration token",
        allowed=_FCM_CHARS,
        charset="letters, digits, '_', '-' and ':'",
        minimum=FCM_MIN,
        maximum=FCM_MAX,
    )


def hms_token(value: object, field: str = "token") -> str:
    """An HMS push token: letters, digits and ``_ : - . + / =``; 32 to 4096 characters."""
    return _provider_token(
        value,
        field,
        what="HMS push token",
        allowed=_HMS_CHARS,
        charset="letters, digits, '_', ':', '-', '.', '+', '/' and '='",
        minimum=HMS_MIN,
        maximum=HMS_MAX,
    )


# --------------------------------------------------------------------------- Web Push


@dataclass(frozen=True, slots=True)
class WebPushSubscription:
    """A validated Web Push subscription: where to POST and the keys to encrypt for."""

    endpoint: str
    p256dh: bytes
    auth: bytes

    def address(self) -> str:
        """Canonical JSON: the stored (and hashed) form."""
        return orjson.dumps(
            {
                "endpoint": self.endpoint,
                "keys": {"auth": _b64(self.auth), "p256dh": _b64(self.p256dh)},
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _base64url(value: object, field: str) -> bytes:
    text = _string(value, field)
    if not text:
        raise InvalidInput(f"{field} is empty: send it in base64url")
    body = text.rstrip("=")
    bad = _first_outside(body, _BASE64URL)
    if bad is not None:
        position, char = bad
        raise InvalidInput(
            f"{field} must be base64url (letters, digits, '-' and '_', optionally '=' padding "
            f"at the end); found {char!r} at character {position}"
        )
    if len(body) % 4 == 1 or len(text) - len(body) > 2:
        raise InvalidInput(f"{field} is not valid base64url: its length cannot be decoded")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - excluded by the checks
        raise InvalidInput(f"{field} is not valid base64url") from exc


def _endpoint(value: object, field: str) -> str:
    if value is None:
        raise InvalidInput(
            f"{field} is required: the push service URL of the subscription (https://...)"
        )
    endpoint = _string(value, field)
    if len(endpoint) > ENDPOINT_MAX:
        raise InvalidInput(
            f"{field} must be at most {ENDPOINT_MAX} characters; got {len(endpoint)}"
        )
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in endpoint):
        raise InvalidInput(f"{field} must not contain spaces or control characters")
    try:
        parts = urlsplit(endpoint)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise InvalidInput(f"{field} is not a valid URL: {exc}") from exc
    if parts.scheme.lower() != "https":
        got = f"got {parts.scheme + '://' if parts.scheme else 'no scheme'}"
        raise InvalidInput(f"{field} must be an https:// URL; {got}")
    if not parts.hostname:
        raise InvalidInput(
            f"{field} must name a host, e.g. https://fcm.googleapis.com/fcm/send/..."
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"{field} must not contain user credentials (user:password@)")
    return endpoint


def _p256dh(value: object, field: str) -> bytes:
    if value is None:
        raise InvalidInput(f"{field} is required: the subscription's P-256 public key in base64url")
    raw = _base64url(value, field)
    if len(raw) != P256DH_BYTES:
        raise InvalidInput(
            f"{field} must decode to {P256DH_BYTES} bytes (an uncompressed P-256 public key); "
            f"got {len(raw)} bytes"
        )
    if raw[0] != 0x04:
        raise InvalidInput(
            f"{field} must be an uncompressed P-256 point, whose first byte is 0x04; "
            f"got 0x{raw[0]:02x}"
        )
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise InvalidInput(f"{field} is not a point on the P-256 curve") from exc
    return raw


def _auth(value: object, field: str) -> bytes:
    if value is None:
        raise InvalidInput(
            f"{field} is required: the subscription's 16-byte auth secret in base64url"
        )
    raw = _base64url(value, field)
    if len(raw) != AUTH_BYTES:
        raise InvalidInput(f"{field} must decode to {AUTH_BYTES} bytes; got {len(raw)} bytes")
    return raw


def web_push_subscription(value: object, field: str = "subscription") -> WebPushSubscription:
    """A browser's ``PushSubscription.toJSON()``:
    ``{"endpoint": "https://...", "keys": {"p256dh": ..., "auth": ...}}``. Other members
    (``expirationTime``) are ignored."""
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f"{field} must be an object: the browser's PushSubscription as JSON, "
            '{"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}'
        )
    endpoint = _endpoint(value.get("endpoint"), f"{field}.endpoint")
    keys = value.get("keys")
    if not isinstance(keys, Mapping):
        raise InvalidInput(
            f"{field}.keys must be an object with the subscription's p256dh and auth keys"
        )
    p256dh = _p256dh(keys.get("p256dh"), f"{field}.keys.p256dh")
    auth = _auth(keys.get("auth"), f"{field}.keys.auth")
    return WebPushSubscription(endpoint, p256dh, auth)


def web_push_address(value: object, field: str = "subscription") -> str:
    """The canonical JSON of a valid subscription (see :func:`web_push_subscription`)."""
    return web_push_subscription(value, field).address()


def parse_web_push_address(address: str) -> WebPushSubscription:
    """A stored web address (canonical JSON) back as a subscription, for the transport."""
    return web_push_subscription(orjson.loads(address))


# --------------------------------------------------------------------------- by platform


_TOKEN_WHAT = {
    "ios": "the APNs device token (hexadecimal)",
    "android": "the FCM registration token",
    "huawei": "the HMS push token",
}


def push_address(
    platform: str,
    token: object = None,
    subscription: object = None,
    *,
    token_field: str = "token",  # noqa: S107 - the name of a request field
    subscription_field: str = "subscription",
) -> str | None:
    """The normalized provider address for ``platform`` from the field that platform uses:
    ``token`` for ios/android/huawei, ``subscription`` for web, neither for channel."""
    if platform == "channel":
        if token is not None:
            raise InvalidInput(
                f"{token_field} is not used for platform channel: channel devices have no "
                "provider address; leave it out"
            )
        if subscription is not None:
            raise InvalidInput(
                f"{subscription_field} is not used for platform channel: channel devices "
                "have no provider address; leave it out"
            )
        return None
    if platform == "web":
        if token is not None:
            raise InvalidInput(
                f"{token_field} is not used for platform web: send the browser's "
                f"PushSubscription as {subscription_field}"
            )
        if subscription is None:
            raise InvalidInput(
                f"{subscription_field} is required for platform web: the browser's "
                'PushSubscription as JSON, {"endpoint": "https://...", '
                '"keys": {"p256dh": "...", "auth": "..."}}'
            )
        return web_push_address(subscription, subscription_field)
    if platform not in TOKEN_PLATFORMS:
        raise InvalidInput(f"platform must be one of {', '.join(PLATFORMS)}; got {platform!r}")
    if subscription is not None:
        raise InvalidInput(
            f"{subscription_field} is only for platform web; send the {platform} device's "
            f"address as {token_field}: {_TOKEN_WHAT[platform]}"
        )
    if token is None:
        raise InvalidInput(
            f"{token_field} is required for platform {platform}: {_TOKEN_WHAT[platform]}"
        )
    if platform == "ios":
        return apns_token(token, token_field)
    if platform == "android":
        return fcm_token(token, token_field)
    return hms_token(token, token_field)


def address_key(platform: str, address: str) -> str:
    """What identifies an address for re-registration: a web push subscription is its
    endpoint (a browser that renews its keys keeps its device), a token is itself."""
    if platform == "web":
        endpoint: str = orjson.loads(address)["endpoint"]
        return endpoint
    return address


def address_hint(platform: str, address: str | None) -> str | None:
    """What may be shown of an address: the last characters of a token, the origin of a web
    push endpoint. Never the whole address."""
    if address is None:
        return None
    if platform == "web":
        try:
            endpoint = orjson.loads(address)["endpoint"]
            parts = urlsplit(endpoint)
            host = parts.hostname or ""
            if ":" in host:  # an IPv6 address
                host = f"[{host}]"
            port = f":{parts.port}" if parts.port is not None else ""
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return f"{parts.scheme}://{host}{port}"
    return "…" + address[-HINT_CHARS:]


# --------------------------------------------------------------------------- subscriber


@cache
def _zone_names() -> dict[str, str]:
    """Every IANA zone name known here, by its lower-case spelling."""
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def timezone_name(value: object, field: str = "timezone") -> str:
    """An IANA time zone name (any letter case; stored in its canonical spelling) or a fixed
    offset ``+HH:MM`` / ``-HH:MM`` from -12:00 to +14:00."""
    text = _string(value, field)
    offset = _OFFSET.fullmatch(text)
    if offset is not None:
        sign, hours, minutes = offset.group(1), int(offset.group(2)), int(offset.group(3))
        total = (hours * 60 + minutes) * (-1 if sign == "-" else 1)
        if minutes >= 60 or not -12 * 60 <= total <= 14 * 60:
            raise InvalidInput(
                f"{field} offset must lie between -12:00 and +14:00 with minutes below 60; "
                f"got {text!r}"
            )
        return text
    canonical = _zone_names().get(text.lower()) if len(text) <= 64 else None
    if canonical is None:
        shown = text if len(text) <= 64 else text[:64] + "…"
        raise InvalidInput(
            f"{field} must be an IANA time zone name such as Europe/Amsterdam, or a fixed "
            f"offset such as +03:00; got {shown!r}"
        )
    return canonical


def email_address(value: object, field: str = "email") -> str:
    """A sane e-mail address (at most 320 characters); the domain is stored in lower case."""
    text = _string(value, field)
    example = "an address like ann@example.com"
    if len(text) > EMAIL_MAX:
        raise InvalidInput(f"{field} must be at most {EMAIL_MAX} characters; got {len(text)}")
    if text.count("@") != 1:
        raise InvalidInput(f"{field} must be {example}, with exactly one '@'")
    local, domain = text.split("@")
    if not local or len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local):
        raise InvalidInput(
            f"{field} must be {example}: the part before '@' must be 1 to 64 characters "
            "without spaces, quotes or brackets"
        )
    labels = domain.split(".")
    if (
        len(labels) < 2
        or len(domain) > 253
        or not all(_DOMAIN_LABEL.fullmatch(label) and len(label) <= 63 for label in labels)
        or any(label.endswith("-") for label in labels)
    ):
        raise InvalidInput(
            f"{field} must be {example}: the part after '@' must be a domain name with a dot, "
            "such as example.com"
        )
    return f"{local}@{domain.lower()}"


def phone_number(value: object, field: str = "phone_number") -> str:
    """A phone number in international form, stored as E.164 (``+`` and up to 15 digits):
    spaces, dashes, dots and brackets are allowed in what is given."""
    text = _string(value, field)
    example = "in international form with its country code, e.g. +31612345678"
    if not text.startswith("+") or len(text) > 40:
        raise InvalidInput(f"{field} must be {example}")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(f"{field} must be {example}") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidInput(f"{field} is not a possible phone number; it must be {example}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def language_tag(value: object, field: str = "language") -> str:
    """A BCP 47 language tag (``en``, ``en-US``, ``zh-Hant-TW``; ``en_US`` is read as
    ``en-US``), stored in its standard form."""
    text = _string(value, field).strip().replace("_", "-")
    if not 2 <= len(text) <= 35:
        raise InvalidInput(f"{field} must be a language tag such as en or en-US")
    wrong = InvalidInput(f"{field} must be a language tag such as en or en-US; got {text!r}")
    try:
        standard = str(langcodes.standardize_tag(text))
    except ValueError as exc:  # langcodes' LanguageTagError is a ValueError
        raise wrong from exc
    if not langcodes.tag_is_valid(standard):
        raise wrong
    return standard


def country_code(value: object, field: str = "country") -> str:
    """An ISO 3166-1 alpha-2 country code (any letter case; stored in upper case)."""
    text = _string(value, field).strip().upper()
    if len(text) != 2 or pycountry.countries.get(alpha_2=text) is None:
        raise InvalidInput(f"{field} must be an ISO 3166-1 alpha-2 country code such as NL")
    return text


def subscriber_uuid(value: object, field: str = "uuid") -> str:
    """A UUID, stored in its canonical lower-case hyphenated form."""
    text = _string(value, field)
    try:
        if len(text) > 45:
            raise ValueError(text)
        return str(uuid_module.UUID(text))
    except ValueError as exc:
        raise InvalidInput(
            f"{field} must be a UUID such as 123e4567-e89b-12d3-a456-426614174000"
        ) from exc


def external_id(value: object, field: str = "external_id") -> str:
    """Your id of the user: 1 to 200 characters, without the NUL character."""
    text = _string(value, field)
    if not 1 <= len(text) <= 200:
        raise InvalidInput(f"{field} must be 1 to 200 characters; got {len(text)}")
    if "\x00" in text:
        raise InvalidInput(f"{field} must not contain the NUL character")
    return text


def optional(check: Callable[[object, str], T], value: object, field: str) -> T | None:
    """``check(value, field)`` unless ``value`` is None."""
    return None if value is None else check(value, field)
