"""Provider credentials of an app, one kind per push platform, checked when they are given.

A credential that cannot work (a key that does not parse, a service account without its
fields) is refused here with a message that says what to fix, so it never fails at send time.
Each kind turns into ``secret()`` (the whole credential, stored encrypted) and ``public()``
(what may be shown back).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushgate.domain.errors import InvalidInput
from pushgate.domain.keys import load_p256, load_rsa

ApnsEnvironment = Literal["production", "sandbox"]

_APPLE_ID = re.compile(r"^[A-Z0-9]{10}$")
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,250}$")
_HMS_APP_ID = re.compile(r"^[0-9]{1,32}$")
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_SECRET_CHARS = 16_384
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True, slots=True)
class Rules:
    """What a credential is checked against.

    ``token_hosts``: hosts (``host`` or ``host:port``) a service account's ``token_uri`` may
    name besides Google's token endpoint (the operator's ``fcm_token_hosts`` setting); None
    skips that check (a stored credential: the transport checks it before every use).
    ``full_key_check``: run RSA's costly consistency check (an upload; run it off the event
    loop). Stored keys were checked when they were stored."""

    token_hosts: Collection[str] | None = ()
    full_key_check: bool = True


UPLOAD = Rules()
STORED = Rules(token_hosts=None, full_key_check=False)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _text(raw: dict[str, Any], name: str, *, what: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what}: {name!r} is required (a non-empty string)")
    if len(value) > MAX_SECRET_CHARS or "\x00" in value:
        raise InvalidInput(f"{what}: {name!r} is too long or contains NUL")
    return value.strip()


def _only(raw: dict[str, Any], allowed: set[str], *, what: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InvalidInput(
            f"{what}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def token_uri_problem(uri: str, hosts: Collection[str]) -> str | None:
    """Why a service account's ``token_uri`` may not be used, or None. It must be Google's
    token endpoint, or an https URL on one of ``hosts`` (``host`` matches any port,
    ``host:port`` that port)."""
    if uri == GOOGLE_TOKEN_URI:
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return f"token_uri {uri[:100]!r} is not a valid URL"
    if parts.scheme != "https" or not parts.hostname:
        return "token_uri must be an https:// URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "token_uri must not contain user credentials (user@)"
    host = parts.hostname.lower()
    allowed = {entry.strip().lower() for entry in hosts}
    if host in allowed or f"{host}:{port or 443}" in allowed:
        return None
    return (
        f"token_uri must be Google's token endpoint {GOOGLE_TOKEN_URI}; the host {host!r} is "
        "not one the operator allows (setting fcm_token_hosts, PUSHGATE_FCM_TOKEN_HOSTS)"
    )


@dataclass(frozen=True, slots=True)
class ApnsCredentials:
    """APNs token authentication: the .p8 signing key with its key id, the team id, and the
    app's bundle id (the ``apns-topic``)."""

    key_id: str
    team_id: str
    topic: str
    environment: ApnsEnvironment
    private_key_pem: str
    key: ec.EllipticCurvePrivateKey = field(compare=False, repr=False)

    @classmethod
    def parse(cls, raw: dict[str, Any], rules: Rules = UPLOAD) -> ApnsCredentials:
        what = "APNs credentials"
        _only(raw, {"key_id", "team_id", "topic", "environment", "private_key"}, what=what)
        key_id = _text(raw, "key_id", what=what)
        team_id = _text(raw, "team_id", what=what)
        for name, value in (("key_id", key_id), ("team_id", team_id)):
            if not _APPLE_ID.match(value):
                raise InvalidInput(f"{what}: {name} must be 10 capital letters or digits")
        topic = _text(raw, "topic", what=what)
        if not _TOPIC.match(topic):
            raise InvalidInput(f"{what}: topic must be the app's bundle id, e.g. com.example.app")
        environment = raw.get("environment", "production")
        if environment not in ("production", "sandbox"):
            raise InvalidInput(f"{what}: environment must be 'production' or 'sandbox'")
        pem = _text(raw, "private_key", what=what)
        return cls(key_id, team_id, topic, environment, pem, load_p256(pem, what=what))

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self.key

    def secret(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "team_id": self.team_id,
            "topic": self.topic,
            "environment": self.environment,
            "private_key": self.private_key_pem,
        }

    def public(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "team_id": self.team_id,
            "topic": self.topic,
            "environment": self.environment,
        }


@dataclass(frozen=True, slots=True)
class FcmCredentials:
    """A Google service account (its JSON key file) allowed to send with FCM HTTP v1."""

    project_id: str
    client_email: str
    private_key_id: str
    private_key_pem: str
    token_uri: str
    key: rsa.RSAPrivateKey = field(compare=False, repr=False)

    @classmethod
    def parse(cls, raw: dict[str, Any], rules: Rules = UPLOAD) -> FcmCredentials:
        what = "FCM credentials"
        _only(raw, {"service_account"}, what=what)
        account = raw.get("service_account")
        if not isinstance(account, dict):
            raise InvalidInput(
                f"{what}: 'service_account' is required: the service account's JSON key file "
                "as an object"
            )
        what = "FCM service account"
        if account.get("type") != "service_account":
            raise InvalidInput(f"{what}: 'type' must be 'service_account'")
        project_id = _text(account, "project_id", what=what)
        if not _PROJECT_ID.match(project_id):
            raise InvalidInput(f"{what}: project_id {project_id!r} is not a project id")
        client_email = _text(account, "client_email", what=what)
        if not _EMAIL.match(client_email):
            raise InvalidInput(f"{what}: client_email must be an e-mail address")
        private_key_id = _text(account, "private_key_id", what=what)
        token_uri = _text(account, "token_uri", what=what)
        if rules.token_hosts is not None:
            problem = token_uri_problem(token_uri, rules.token_hosts)
            if problem is not None:
                raise InvalidInput(f"{what}: {problem}")
        pem = _text(account, "private_key", what=what)
        key = load_rsa(pem, what=what, checked=rules.full_key_check)
        return cls(project_id, client_email, private_key_id, pem, token_uri, key)

    def private_key(self) -> rsa.RSAPrivateKey:
        return self.key

    def secret(self) -> dict[str, Any]:
        return {
            "service_account": {
                "type": "service_account",
                "project_id": self.project_id,
                "client_email": self.client_email,
                "private_key_id": self.private_key_id,
                "private_key": self.private_key_pem,
                "token_uri": self.token_uri,
            }
        }

    def public(self) -> dict[str, Any]:
        return {"project_id": self.project_id, "client_email": self.client_email}


@dataclass(frozen=True, slots=True)
class HmsCredentials:
    """Huawei Push Kit: the app id (also the OAuth client id) and its client secret."""

    app_id: str
    client_secret: str

    @classmethod
    def parse(cls, raw: dict[str, Any], rules: Rules = UPLOAD) -> HmsCredentials:
        what = "HMS credentials"
        _only(raw, {"app_id", "client_secret"}, what=what)
        app_id = _text(raw, "app_id", what=what)
        if not _HMS_APP_ID.match(app_id):
            raise InvalidInput(f"{what}: app_id must be the numeric app id from AppGallery Connect")
        client_secret = _text(raw, "client_secret", what=what)
        return cls(app_id, client_secret)

    def secret(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "client_secret": self.client_secret}

    def public(self) -> dict[str, Any]:
        return {"app_id": self.app_id}


@dataclass(frozen=True, slots=True)
class VapidCredentials:
    """The app's VAPID key pair (RFC 8292) and the contact (``sub``) sent with it. Browsers
    subscribe with ``public_key`` as their ``applicationServerKey``."""

    subject: str
    private_key_pem: str
    public_key: str  # base64url of the uncompressed P-256 point (65 bytes)
    key: ec.EllipticCurvePrivateKey = field(compare=False, repr=False)

    @classmethod
    def parse(cls, raw: dict[str, Any], rules: Rules = UPLOAD) -> VapidCredentials:
        """An uploaded key pair (moving from another service keeps existing subscriptions)."""
        what = "VAPID credentials"
        _only(raw, {"subject", "private_key"}, what=what)
        subject = _subject(_text(raw, "subject", what=what))
        text = _text(raw, "private_key", what=what)
        if text.startswith("-----BEGIN"):
            key = load_p256(text, what=what)
        else:
            try:
                scalar = b64url_decode(text)
            except ValueError as exc:
                raise InvalidInput(f"{what}: private_key is neither PEM nor base64url") from exc
            if len(scalar) != 32:
                raise InvalidInput(
                    f"{what}: a base64url private_key must be the 32-byte P-256 private value"
                )
            try:
                key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
            except ValueError as exc:
                raise InvalidInput(f"{what}: private_key is not a valid P-256 value") from exc
        return cls.of(subject, key)

    @classmethod
    def generate(cls, subject: str) -> VapidCredentials:
        return cls.of(_subject(subject), ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def of(cls, subject: str, key: ec.EllipticCurvePrivateKey) -> VapidCredentials:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return cls(subject, pem, b64url(point), key)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self.key

    def secret(self) -> dict[str, Any]:
        return {"subject": self.subject, "private_key": self.private_key_pem}

    def public(self) -> dict[str, Any]:
        return {"subject": self.subject, "public_key": self.public_key}


def _subject(value: str) -> str:
    if not (value.startswith("mailto:") and "@" in value) and not value.startswith("https://"):
        raise InvalidInput(
            "VAPID subject must be a mailto: address or an https:// URL where the push service "
            "can reach you, e.g. mailto:ops@example.com"
        )
    if len(value) > 512:
        raise InvalidInput("VAPID subject must be at most 512 characters")
    return value


Credentials = ApnsCredentials | FcmCredentials | HmsCredentials | VapidCredentials

KINDS: dict[str, type[ApnsCredentials | FcmCredentials | HmsCredentials | VapidCredentials]] = {
    "ios": ApnsCredentials,
    "android": FcmCredentials,
    "huawei": HmsCredentials,
    "web": VapidCredentials,
}


def parse(platform: str, raw: Any, rules: Rules = UPLOAD) -> Credentials:
    """Check an uploaded credential of ``platform``; InvalidInput says what is wrong. With
    the default rules this may take a few hundred milliseconds (an RSA key's check): call it
    in a worker thread."""
    kind = KINDS.get(platform)
    if kind is None:
        raise InvalidInput(f"unknown platform {platform!r}; one of: {', '.join(KINDS)}")
    if not isinstance(raw, dict):
        raise InvalidInput(f"{platform} credentials must be a JSON object")
    return kind.parse(raw, rules)


def from_secret(platform: str, raw: dict[str, Any]) -> Credentials:
    """A stored credential (it was checked when it was stored): well under a millisecond."""
    return parse(platform, raw, STORED)
