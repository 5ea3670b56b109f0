"""A local Firebase Cloud Messaging (HTTP v1) server for tests, with its OAuth token endpoint.

It mints a service account (an RSA-2048 key) whose ``token_uri`` is its own ``/token``; the
token endpoint checks the JWT assertion as Google does (RS256 signature with that key, issuer,
audience, scope, lifetime) and issues access tokens; ``messages:send`` checks the bearer token,
the project and the message's shape, records what it accepted, and answers like FCM, errors in
Google's JSON error format with an ``FcmError`` ``errorCode``.

    with FakeFcm() as fcm:
        credentials = fcm.credentials()  # upload as the app's "android" credentials
        transport = FcmTransport(source, Http1Sender(ca_file=fcm.ca_file, ...),
                                 base_url=fcm.url)
        ...
        assert fcm.wait_for(1)
        fcm.messages[0].token, fcm.messages[0].message["notification"]["body"]
        fcm.unregister("token-1")   # later sends to it: 404 UNREGISTERED
        fcm.fail_next(503, retry_after=7)
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pushgate.domain.credentials import Rules
from pushgate.testing.fake_provider import OAuthFakeProvider
from pushgate.testing.fake_server import DROP, Drop, FakeHttpServer, FakeRequest, FakeResponse

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_PAYLOAD_BYTES = 4096
_SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_DURATION = re.compile(r"^[0-9]+(\.[0-9]{1,9})?s$")
_RESERVED_DATA = re.compile(r"^(from|notification|message_type|google.*|gcm.*)$")
_MESSAGE_FIELDS = {
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
}

# Google's canonical status names, by HTTP status, and the FcmError errorCode a fault gets.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
ERROR_CODES = {
    400: "INVALID_ARGUMENT",
    401: "THIRD_PARTY_AUTH_ERROR",
    403: "SENDER_ID_MISMATCH",
    404: "UNREGISTERED",
    429: "QUOTA_EXCEEDED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass(frozen=True, slots=True)
class FcmMessage:
    """One message FCM accepted."""

    project_id: str
    token: str
    message: dict[str, Any]
    access_token: str
    received_at: float  # time.time()


def google_error(
    status: int, message: str, error_code: str | None = None, *, details: list[Any] | None = None
) -> bytes:
    """A Google API JSON error, with an ``FcmError`` detail when ``error_code`` is given."""
    listed: list[Any] = (
        [] if error_code is None else [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}]
    )
    listed.extend(details or [])
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if listed:
        error["details"] = listed
    return orjson.dumps({"error": error})


def _json_response(status: int, body: bytes, retry_after: float | None = None) -> FakeResponse:
    headers = {"content-type": "application/json; charset=UTF-8"}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    return FakeResponse(status, body, headers)


class FakeFcm(FakeHttpServer, OAuthFakeProvider[FcmMessage]):
    """FCM HTTP v1 and its token endpoint on one TLS port (``url``; ``token_url``), over HTTP/2
    and HTTP/1.1 as the client chooses in ALPN (``http2=False``: HTTP/1.1 only).

    ``fail_next(status, reason=...)`` answers with the FcmError ``errorCode`` ``reason``, by
    default the usual one for the status: 400 INVALID_ARGUMENT, 401 THIRD_PARTY_AUTH_ERROR,
    403 SENDER_ID_MISMATCH, 404 UNREGISTERED, 429 QUOTA_EXCEEDED, 500 INTERNAL, 503
    UNAVAILABLE (``reason="UNAUTHENTICATED"`` for a refused access token). Sends to an
    unregistered token get 404 ``UNREGISTERED``. ``fail_token_endpoint_next`` answers with the
    OAuth error ``reason``, by default ``invalid_grant`` for 4xx; after
    ``revoke_access_tokens`` sends with an earlier access token get 401."""

    def __init__(
        self,
        *,
        project_id: str = "pushgate-fake-project",
        expires_in: int = 3600,
        tls: bool = True,
        port: int = 0,
        http2: bool = True,
    ) -> None:
        super().__init__(self._handle, tls=tls, port=port, http2=http2)
        OAuthFakeProvider.__init__(self, expires_in=expires_in)
        self.project_id = project_id
        self.client_email = f"pushgate@{project_id}.iam.gserviceaccount.com"
        self.private_key_id = secrets.token_hex(20)
        self._key: rsa.RSAPrivateKey | None = None
        self._invalid: set[str] = set()
        self.requests = 0

    # -- what a test sets up -------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def token_hosts(self) -> tuple[str]:
        """What Pushgate's ``fcm_token_hosts`` setting (``PUSHGATE_FCM_TOKEN_HOSTS``) must
        name so that this fake's ``token_url`` is allowed as a service account's
        ``token_uri``: otherwise only Google's token endpoint is."""
        return (f"127.0.0.1:{self.port}",)

    @property
    def rules(self) -> Rules:
        """Credential rules that accept ``credentials()`` (for ``FcmCredentials.parse``)."""
        return Rules(token_hosts=self.token_hosts)

    def _private_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._key is None:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._key

    def credentials(self) -> dict[str, Any]:
        """The ``android`` credentials a Pushgate user uploads: the service account's JSON key
        file, whose ``token_uri`` is this fake's token endpoint (start the fake first)."""
        pem = (
            self._private_key()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
        return {
            "service_account": {
                "type": "service_account",
                "project_id": self.project_id,
                "private_key_id": self.private_key_id,
                "private_key": pem,
                "client_email": self.client_email,
                "client_id": "100000000000000000000",
                "token_uri": self.token_url,
            }
        }

    def mark_invalid(self, address: str) -> None:
        """Later sends to ``address`` get 400 ``INVALID_ARGUMENT`` "The registration token is
        not a valid FCM registration token"."""
        with self._lock:
            self._invalid.add(address)

    # -- what a test reads ---------------------------------------------------------------

    @property
    def messages(self) -> list[FcmMessage]:
        """The messages accepted, in order (the same as ``received``)."""
        return self.received

    # -- the server ----------------------------------------------------------------------

    async def _handle(self, request: FakeRequest) -> FakeResponse | Drop:
        if request.path == "/token":
            return self._token(request)
        match = _SEND_PATH.match(request.path)
        if match is None:
            return _json_response(404, google_error(404, f"no such endpoint: {request.path}"))
        if request.method != "POST":
            return _json_response(405, google_error(405, "use POST"))
        return self._send(match.group(1), request)

    def _token(self, request: FakeRequest) -> FakeResponse | Drop:
        fault = self._token_faults.take()
        if fault is not None:
            if fault.status == 0:
                return DROP
            error = fault.reason or ("invalid_grant" if fault.status < 500 else "server_error")
            body = orjson.dumps({"error": error, "error_description": "injected by FakeFcm"})
            return _json_response(fault.status, body, fault.retry_after)
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return self._oauth_error("invalid_request", "the body must be form-encoded")
        if form.get("grant_type") != [JWT_BEARER]:
            return self._oauth_error("unsupported_grant_type", "Invalid grant_type")
        assertions = form.get("assertion") or [""]
        problem = self._check_assertion(assertions[0])
        if problem is not None:
            return self._oauth_error("invalid_grant", problem)
        return _json_response(
            200, self._issue_access_token("ya29.fake-" + secrets.token_urlsafe(32))
        )

    def _check_assertion(self, assertion: str) -> str | None:
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self._private_key().public_key(),
                algorithms=["RS256"],
                audience=self.token_url,
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
                leeway=60,
            )
        except jwt.PyJWTError as exc:
            return f"Invalid JWT: {exc}"
        if header.get("kid") != self.private_key_id:
            return "Invalid JWT Signature: unknown key id"
        if SCOPE not in str(claims["scope"]).split():
            return f"Invalid scope: the assertion must ask for {SCOPE}"
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            return "Invalid JWT: iat and exp must be numbers"
        if iat > time.time() + 60:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
        if exp - iat > 3600 or exp <= iat:
            return "Invalid JWT: Token must be a short-lived token (60 minutes)"
        return None

    @staticmethod
    def _oauth_error(error: str, description: str) -> FakeResponse:
        body = orjson.dumps({"error": error, "error_description": description})
        return _json_response(400, body)

    def _send(self, project_id: str, request: FakeRequest) -> FakeResponse | Drop:
        with self._lock:
            self.requests += 1
        fault = self._faults.take()
        if fault is not None:
            if fault.status == 0:
                return DROP
            code = fault.reason or ERROR_CODES.get(fault.status)
            error = google_error(fault.status, "injected by FakeFcm", code)
            return _json_response(fault.status, error, fault.retry_after)
        authorization = request.headers.get("authorization", "")
        access_token = authorization[7:] if authorization.startswith("Bearer ") else ""
        if not self._access_token_valid(access_token):
            message = (
                "Request had invalid authentication credentials. Expected OAuth 2 access token,"
                " login cookie or other valid authentication credential."
            )
            return _json_response(401, google_error(401, message))
        if project_id != self.project_id:
            message = f"Permission 'cloudmessaging.messages.create' denied on {project_id}"
            return _json_response(403, google_error(403, message))
        try:
            body: Any = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return self._invalid_argument("Invalid JSON payload received.")
        message_value = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message_value, dict):
            return self._invalid_argument("Request contains an invalid argument: no message.")
        problem = check_message(message_value)
        if problem is not None:
            return self._invalid_argument(problem)
        token = message_value["token"]
        with self._lock:
            invalid = token in self._invalid
        if self._gone(token):
            return _json_response(
                404, google_error(404, "Requested entity was not found.", "UNREGISTERED")
            )
        if invalid:
            return self._invalid_argument(
                "The registration token is not a valid FCM registration token"
            )
        if body.get("validate_only") is not True:
            self._record(FcmMessage(project_id, token, message_value, access_token, time.time()))
        name = f"projects/{project_id}/messages/{secrets.token_hex(8)}"
        return _json_response(200, orjson.dumps({"name": name}))

    @staticmethod
    def _invalid_argument(message: str) -> FakeResponse:
        return _json_response(400, google_error(400, message, "INVALID_ARGUMENT"))


def check_message(message: dict[str, Any]) -> str | None:
    """What FCM would refuse in a v1 message sent to a device token, or None."""
    unknown = sorted(set(message) - _MESSAGE_FIELDS)
    if unknown:
        return f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'message'."
    targets = [name for name in ("token", "topic", "condition") if name in message]
    if len(targets) != 1:
        return "Exactly one of token, topic or condition must be given."
    if targets[0] != "token" or not isinstance(message["token"], str) or not message["token"]:
        return "The fake FCM only sends to registration tokens (message.token, a string)."
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "Invalid value at 'message.data': data values must be strings."
    reserved = [key for key in data if _RESERVED_DATA.match(key)]
    if reserved:
        return f"Invalid data payload key: {reserved[0]}"
    notification = message.get("notification", {})
    if not isinstance(notification, dict):
        return "Invalid value at 'message.notification'."
    size = len(orjson.dumps(data)) + len(orjson.dumps(notification))
    if size > MAX_PAYLOAD_BYTES:
        return f"Message is too big: {size} bytes of data and notification, at most 4096."
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "Invalid value at 'message.android'."
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return "Invalid value at 'message.android.priority': must be NORMAL or HIGH."
    ttl = android.get("ttl")
    if ttl is not None and (not isinstance(ttl, str) or not _DURATION.match(ttl)):
        return "Invalid value at 'message.android.ttl': a duration such as \"3.5s\"."
    if ttl is not None and float(ttl[:-1]) > 28 * 24 * 3600:
        return "Invalid value at 'message.android.ttl': at most 4 weeks."
    for section in ("apns", "webpush"):
        value = message.get(section, {})
        headers = value.get("headers", {}) if isinstance(value, dict) else None
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            return f"Invalid value at 'message.{section}.headers': values must be strings."
    return None
