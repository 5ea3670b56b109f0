"""The cryptography of Web Push, as pure functions: RFC 8291 message encryption and RFC 8292
VAPID tokens.

Message encryption (RFC 8291, content coding ``aes128gcm`` of RFC 8188), for one message:

1. a fresh P-256 key pair of the application server (``as``) and a fresh 16-byte salt;
2. ``ecdh_secret`` = ECDH(as private key, the subscription's ``p256dh`` public key);
3. ``IKM`` = HKDF-SHA256(salt = the subscription's ``auth`` secret, ikm = ecdh_secret,
   info = "WebPush: info" 0x00 ua_public as_public, length 32);
4. ``CEK`` = HKDF-SHA256(salt, IKM, "Content-Encoding: aes128gcm" 0x00, 16) and
   ``NONCE`` = HKDF-SHA256(salt, IKM, "Content-Encoding: nonce" 0x00, 12);
5. one record: AES-128-GCM(CEK, NONCE, plaintext 0x02) (0x02 = last record, no padding);
6. the body: salt (16) | rs = 4096 (uint32) | idlen = 65 (uint8) | as_public (65) | record.

A push service accepts at most 4096 bytes of body, so the plaintext may have at most
4096 - 86 - 16 - 1 = 3993 bytes; ``encrypt`` refuses more with ``PayloadTooLarge``.

VAPID (RFC 8292): an ES256 JWT ``{"aud": <push service origin>, "exp": <unix time, at most
24 h ahead>, "sub": <mailto: or https: contact>}`` sent as
``Authorization: vapid t=<jwt>, k=<base64url of the app's public key>``. ``VapidTokens`` signs
one token per (key pair, origin) and reuses it for hours.
"""

from __future__ import annotations

import hmac
import os
import struct
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pushgate.domain.credentials import VapidCredentials, b64url, b64url_decode

MAX_BODY_BYTES = 4096
RECORD_SIZE = 4096
HEADER_BYTES = 16 + 4 + 1 + 65
TAG_BYTES = 16
MAX_PLAINTEXT_BYTES = MAX_BODY_BYTES - HEADER_BYTES - TAG_BYTES - 1  # 3993

TOKEN_LIFETIME_SECONDS = 12 * 3600
TOKEN_RENEW_BEFORE_SECONDS = 3600
MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600

_CURVE = ec.SECP256R1()
_ECDH = ec.ECDH()
_X962 = serialization.Encoding.X962
_UNCOMPRESSED = serialization.PublicFormat.UncompressedPoint
_RS_IDLEN = struct.pack("!IB", RECORD_SIZE, 65)  # the same in every message
_KEY_INFO = b"WebPush: info\x00"
_CEK_INFO = b"Content-Encoding: aes128gcm\x00\x01"
_NONCE_INFO = b"Content-Encoding: nonce\x00\x01"


class PayloadTooLarge(ValueError):
    """The plaintext does not fit in one push message."""


class InvalidKey(ValueError):
    """A subscription key (p256dh or auth) that cannot be used."""


def point_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed X9.62 point (65 bytes, starting with 0x04)."""
    return key.public_bytes(_X962, _UNCOMPRESSED)


def load_public_key(point: bytes) -> ec.EllipticCurvePublicKey:
    """A subscription's ``p256dh``: an uncompressed P-256 point on the curve."""
    if len(point) != 65 or point[0] != 4:
        raise InvalidKey("p256dh must be an uncompressed P-256 point (65 bytes, 0x04 first)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, point)
    except ValueError as exc:
        raise InvalidKey("p256dh is not a point on P-256") from exc


_SHA256 = "sha256"  # hmac.digest's fastest form: OpenSSL's one-shot HMAC by name


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, _SHA256)


@dataclass(frozen=True, slots=True)
class DerivedKeys:
    """The intermediate values of RFC 8291 section 3.4 (named as in its appendix A)."""

    ecdh_secret: bytes
    prk_key: bytes  # HKDF-Extract(auth_secret, ecdh_secret)
    ikm: bytes
    prk: bytes  # HKDF-Extract(salt, IKM)
    cek: bytes
    nonce: bytes


def derive_keys(
    ecdh_secret: bytes, auth_secret: bytes, ua_public: bytes, as_public: bytes, salt: bytes
) -> DerivedKeys:
    """HKDF-SHA256 as RFC 8291 section 3.4 and RFC 8188 section 2.2 say (every output is
    shorter than one SHA-256 block, so each Expand is a single HMAC with counter 0x01)."""
    prk_key = _hmac(auth_secret, ecdh_secret)
    ikm = _hmac(prk_key, _KEY_INFO + ua_public + as_public + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, _CEK_INFO)[:16]
    nonce = _hmac(prk, _NONCE_INFO)[:12]
    return DerivedKeys(ecdh_secret, prk_key, ikm, prk, cek, nonce)


def encrypt(
    plaintext: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    *,
    ua_key: ec.EllipticCurvePublicKey | None = None,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """The ``aes128gcm`` body of one push message to the subscription with ``ua_public``
    (its p256dh, 65 bytes; ``ua_key`` is that key already loaded, when the caller has it) and
    ``auth_secret``. ``sender_key`` and ``salt`` are fresh random values unless a test pins
    them. Raises ``PayloadTooLarge`` and ``InvalidKey``."""
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise PayloadTooLarge(
            f"the payload is {len(plaintext)} bytes; a push message holds at most "
            f"{MAX_PLAINTEXT_BYTES} bytes of payload ({MAX_BODY_BYTES} bytes encrypted)"
        )
    if len(auth_secret) != 16:
        raise InvalidKey("auth must be a 16-byte secret")
    if ua_key is None:
        ua_key = load_public_key(ua_public)
    return seal(plaintext, ua_public, auth_secret, ua_key, sender_key, salt)


def seal(
    plaintext: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    ua_key: ec.EllipticCurvePublicKey,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """``encrypt`` without its checks, for callers that made them already (a parsed
    subscription, a plaintext whose size was checked once per batch): the same bytes, with
    the key derivation of ``derive_keys`` written out (no object per message)."""
    if sender_key is None:
        sender_key = ec.generate_private_key(_CURVE)
    if salt is None:
        salt = os.urandom(16)
    as_point = sender_key.public_key().public_bytes(_X962, _UNCOMPRESSED)
    digest = hmac.digest
    prk_key = digest(auth_secret, sender_key.exchange(_ECDH, ua_key), _SHA256)
    ikm = digest(prk_key, _KEY_INFO + ua_public + as_point + b"\x01", _SHA256)
    prk = digest(salt, ikm, _SHA256)
    record = AESGCM(digest(prk, _CEK_INFO, _SHA256)[:16]).encrypt(
        digest(prk, _NONCE_INFO, _SHA256)[:12], plaintext + b"\x02", None
    )
    return salt + _RS_IDLEN + as_point + record


def decrypt(
    body: bytes,
    ua_private: ec.EllipticCurvePrivateKey,
    auth_secret: bytes,
    *,
    ua_public: bytes | None = None,
) -> bytes:
    """What a browser does with a push message (for the fake push service): the plaintext,
    or ``ValueError`` saying why the body is not a valid single-record message.
    ``ua_public`` is the private key's public point, when the caller has it."""
    if len(body) < HEADER_BYTES + TAG_BYTES + 1:
        raise ValueError(f"the body is {len(body)} bytes, shorter than any aes128gcm message")
    salt = body[:16]
    record_size, id_length = struct.unpack("!IB", body[16:21])
    if id_length != 65:
        raise ValueError(f"idlen is {id_length}; the keyid must be the 65-byte as_public")
    as_point = body[21:86]
    record = body[86:]
    if len(record) > record_size:
        raise ValueError(f"the record ({len(record)} bytes) is longer than rs ({record_size})")
    try:
        as_key = load_public_key(as_point)
    except InvalidKey as exc:
        raise ValueError(f"the keyid is not a P-256 public key: {exc}") from exc
    ua_point = ua_public or point_bytes(ua_private.public_key())
    keys = derive_keys(
        ua_private.exchange(ec.ECDH(), as_key), auth_secret, ua_point, as_point, salt
    )
    try:
        padded = AESGCM(keys.cek).decrypt(keys.nonce, record, None)
    except Exception as exc:  # cryptography's InvalidTag
        raise ValueError("the record does not decrypt (wrong keys or a damaged body)") from exc
    end = padded.rstrip(b"\x00")
    if not end or end[-1] != 2:
        raise ValueError("the record lacks the last-record delimiter 0x02")
    return end[:-1]


# -- VAPID -----------------------------------------------------------------------------------


def origin_of(url: str) -> str:
    """The origin (scheme://host[:port]) of a push endpoint, the ``aud`` of its tokens."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not an absolute URL: {url!r}")
    return origin_of_parts(parts)


def origin_of_parts(parts: SplitResult) -> str:
    """``origin_of`` for a URL already split (with a scheme and a host); ``ValueError`` for
    a port that is not one."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    port = parts.port
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default_port else "")


def vapid_token(
    key: ec.EllipticCurvePrivateKey, audience: str, subject: str, expires_at: int
) -> str:
    """The signed ES256 JWT (RFC 8292 section 2)."""
    claims = {"aud": audience, "exp": expires_at, "sub": subject}
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "JWT"})


def vapid_authorization(token: str, public_key: str) -> str:
    """The ``Authorization`` header value (RFC 8292 section 3)."""
    return f"vapid t={token}, k={public_key}"


class VapidTokens:
    """Signed VAPID headers, one per (app key pair, push service origin), reused until less
    than ``renew_before`` seconds of their ``lifetime`` are left (never signed per message)."""

    def __init__(
        self,
        *,
        lifetime: int = TOKEN_LIFETIME_SECONDS,
        renew_before: int = TOKEN_RENEW_BEFORE_SECONDS,
        max_entries: int = 10_000,
    ) -> None:
        if not 0 < renew_before < lifetime <= MAX_TOKEN_LIFETIME_SECONDS:
            raise ValueError("need 0 < renew_before < lifetime <= 24 h")
        self._lifetime = lifetime
        self._renew_before = renew_before
        self._max_entries = max_entries
        self._headers: dict[tuple[str, str, str], tuple[str, int]] = {}
        self.signed = 0  # how many tokens were signed (for tests and metrics)

    def authorization(
        self, credentials: VapidCredentials, origin: str, now: float | None = None
    ) -> str:
        """The ``Authorization`` header for requests to ``origin``."""
        now_s = int(time.time() if now is None else now)
        cache_key = (credentials.private_key_pem, credentials.subject, origin)
        found = self._headers.get(cache_key)
        if found is not None and found[1] - now_s > self._renew_before:
            return found[0]
        expires_at = now_s + self._lifetime
        token = vapid_token(credentials.key, origin, credentials.subject, expires_at)
        header = vapid_authorization(token, credentials.public_key)
        if len(self._headers) >= self._max_entries:
            self._headers.clear()
        self._headers[cache_key] = (header, expires_at)
        self.signed += 1
        return header


def parse_authorization(value: str) -> tuple[str, str]:
    """``(t, k)`` of a ``vapid t=..., k=...`` header; ``ValueError`` when it is not one."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError("the Authorization scheme is not 'vapid'")
    params: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, item = part.strip().partition("=")
        if sep:
            params[name.strip().lower()] = item.strip()
    if not params.get("t") or not params.get("k"):
        raise ValueError("the vapid Authorization needs both t= and k=")
    return params["t"], params["k"]


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PLAINTEXT_BYTES",
    "DerivedKeys",
    "InvalidKey",
    "PayloadTooLarge",
    "VapidTokens",
    "b64url",
    "b64url_decode",
    "decrypt",
    "derive_keys",
    "encrypt",
    "load_public_key",
    "origin_of",
    "origin_of_parts",
    "parse_authorization",
    "point_bytes",
    "seal",
    "vapid_authorization",
    "vapid_token",
]
