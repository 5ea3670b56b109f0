"""A local Huawei Push Kit server (HMS Core ``messages:send``) for tests, with its OAuth token
endpoint (client-credentials grant).

It mints an app (a numeric app id and its client secret); the token endpoint checks them and
issues access tokens; ``messages:send`` checks the bearer token, the app id in the path and the
message's shape, records one ``HmsMessage`` per request, and answers per token like Push Kit:
``80000000`` when all were accepted, ``80100000`` with the illegal tokens listed in ``msg`` when
some were not (unregistered ones), ``80300007`` when none were.

    with FakeHms() as hms:
        credentials = hms.credentials()  # upload as the app's "huawei" credentials
        transport = HmsTransport(source, Http1Sender(ca_file=hms.ca_file, ...),
                                 base_url=hms.url, token_url=hms.token_url)
        ...
        assert hms.wait_for(1)
        hms.messages[0].tokens, hms.messages[0].message["android"]["notification"]["body"]
        hms.unregister("token-1")   # later sends name it in illegal_tokens
        hms.fail_next(503, retry_after=7)
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from pushgate.testing.fake_provider import OAuthFakeProvider
from pushgate.testing.fake_server import DROP, Drop, FakeHttpServer, FakeRequest, FakeResponse

TOKEN_PATH = "/oauth2/v3/token"
MAX_TOKENS = 1000
MAX_MESSAGE_BYTES = 4096
_SEND_PATH = re.compile(r"^/v1/([0-9]+)/messages:send$")
_TTL = re.compile(r"^[0-9]+(\.[0-9]{1,9})?[sS]?$")

# The code a fault answers with, by HTTP status (``reason`` names another).
FAULT_CODES = {
    400: "80100003",
    401: "80200003",
    403: "80300002",
    413: "80300008",
    500: "81000001",
}
MESSAGES = {
    "80000000": "Success",
    "80100001": "Some request parameters are incorrect",
    "80100003": "Illegal payload",
    "80100013": "The collapse_key message field is invalid",
    "80200001": "Oauth authentication error",
    "80200003": "Oauth Token expired",
    "80300002": "No permission to send message to these tokens",
    "80300007": "All the tokens are invalid",
    "80300008": "The message body size exceeds the default value",
    "80300010": "The number of tokens in the message body exceeds the default value",
    "81000001": "Internal error",
}


@dataclass(frozen=True, slots=True)
class HmsMessage:
    """One ``messages:send`` request Push Kit accepted (for some or all of its tokens)."""

    app_id: str
    tokens: tuple[str, ...]
    message: dict[str, Any]
    received_at: float  # time.time()


def hms_answer(
    status: int, code: str, msg: str | None = None, retry_after: float | None = None
) -> FakeResponse:
    """A Push Kit answer: ``{"code", "msg", "requestId"}``."""
    body = orjson.dumps(
        {
            "code": code,
            "msg": msg if msg is not None else MESSAGES.get(code, "Error"),
            "requestId": f"{int(time.time() * 1000)}{secrets.randbelow(10**9):09d}",
        }
    )
    headers = {"content-type": "application/json;charset=UTF-8"}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    return FakeResponse(status, body, headers)


class FakeHms(FakeHttpServer, OAuthFakeProvider[HmsMessage]):
    """Push Kit and its token endpoint on one TLS port (``url``; ``token_url``).

    ``fail_next(status, reason=...)`` answers with Push Kit code ``reason``, by default: 400
    80100003, 401 80200003, 403 80300002, 413 80300008, 500 81000001; other statuses, such as
    503 traffic control, carry the status as their code. Unregistered tokens are named among
    the illegal tokens of later sends. ``received``/``messages``: one ``HmsMessage`` per
    accepted request. ``fail_token_endpoint_next`` answers with the numeric OAuth ``error``
    ``reason``, by default 1101 for 4xx; after ``revoke_access_tokens`` sends with an earlier
    access token get 80200003 (expired)."""

    def __init__(self, *, expires_in: int = 3600, tls: bool = True, port: int = 0) -> None:
        super().__init__(self._handle, tls=tls, port=port)
        OAuthFakeProvider.__init__(self, expires_in=expires_in)
        self.app_id = str(100_000_000 + secrets.randbelow(900_000_000))
        self.client_secret = secrets.token_hex(32)
        self.requests = 0

    # -- what a test sets up -------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.url}{TOKEN_PATH}"

    def credentials(self) -> dict[str, Any]:
        """The ``huawei`` credentials a Pushgate user uploads."""
        return {"app_id": self.app_id, "client_secret": self.client_secret}

    # -- what a test reads ---------------------------------------------------------------

    @property
    def messages(self) -> list[HmsMessage]:
        """The requests accepted, in order (the same as ``received``)."""
        return self.received

    # -- the server ----------------------------------------------------------------------

    async def _handle(self, request: FakeRequest) -> FakeResponse | Drop:
        if request.path == TOKEN_PATH:
            return self._token(request)
        match = _SEND_PATH.match(request.path)
        if match is None or request.method != "POST":
            return FakeResponse(404, b'{"error":"not found"}')
        return self._send(match.group(1), request)

    def _token(self, request: FakeRequest) -> FakeResponse | Drop:
        fault = self._token_faults.take()
        if fault is not None:
            if fault.status == 0:
                return DROP
            return self._oauth_error(fault.status, fault.reason or "1101", fault.retry_after)
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if form.get("grant_type") != ["client_credentials"]:
            return self._oauth_error(400, "1102", description="unsupported grant_type")
        if form.get("client_id") != [self.app_id] or form.get("client_secret") != [
            self.client_secret
        ]:
            return self._oauth_error(400, "1101", description="invalid client")
        body = self._issue_access_token("CgB6e3x9" + secrets.token_urlsafe(48))
        return FakeResponse(200, body, {"content-type": "application/json;charset=UTF-8"})

    @staticmethod
    def _oauth_error(
        status: int,
        error: str,
        retry_after: float | None = None,
        *,
        description: str = "injected by FakeHms",
    ) -> FakeResponse:
        value: Any = int(error) if error.isdigit() else error
        body = orjson.dumps({"error": value, "sub_error": 20001, "error_description": description})
        headers = {"content-type": "application/json;charset=UTF-8"}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        return FakeResponse(status, body, headers)

    def _send(self, app_id: str, request: FakeRequest) -> FakeResponse | Drop:
        with self._lock:
            self.requests += 1
        fault = self._faults.take()
        if fault is not None:
            if fault.status == 0:
                return DROP
            code = fault.reason or FAULT_CODES.get(fault.status, str(fault.status))
            msg = "Traffic control" if fault.status in (429, 503) and not fault.reason else None
            return hms_answer(fault.status, code, msg, fault.retry_after)
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return hms_answer(401, "80200001")
        if not self._access_token_valid(authorization[7:]):
            return hms_answer(401, "80200003")
        if app_id != self.app_id:
            return hms_answer(401, "80200001", "Oauth authentication error: the app id differs")
        try:
            body: Any = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return hms_answer(400, "80100001", "The request body is not JSON")
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return hms_answer(400, "80100001", "message is required")
        tokens = message.get("token")
        if (
            not isinstance(tokens, list)
            or not 1 <= len(tokens) <= MAX_TOKENS
            or not all(isinstance(token, str) and token for token in tokens)
        ):
            return hms_answer(400, "80300010")
        problem = check_message(message)
        if problem is not None:
            return hms_answer(400, problem[0], problem[1])
        illegal = [token for token in tokens if self._gone(token)]
        if body.get("validate_only") is not True and len(illegal) < len(tokens):
            self._record(HmsMessage(app_id, tuple(tokens), message, time.time()))
        if not illegal:
            return hms_answer(200, "80000000")
        if len(illegal) == len(tokens):
            return hms_answer(400, "80300007")
        detail = {
            "success": len(tokens) - len(illegal),
            "failure": len(illegal),
            "illegal_tokens": illegal,
        }
        return hms_answer(200, "80100000", orjson.dumps(detail).decode())


def check_message(message: dict[str, Any]) -> tuple[str, str] | None:
    """(code, msg) of what Push Kit would refuse in a token message, or None."""
    if "topic" in message or "condition" in message:
        return "80100001", "The fake Push Kit only sends to tokens"
    data = message.get("data")
    if data is not None and not isinstance(data, str):
        return "80100003", "Illegal payload, data must be a JSON string"
    without_tokens = {key: value for key, value in message.items() if key != "token"}
    if len(orjson.dumps(without_tokens)) > MAX_MESSAGE_BYTES:
        return "80300008", MESSAGES["80300008"]
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "80100003", "Illegal payload, android must be an object"
    collapse_key = android.get("collapse_key")
    if collapse_key is not None and (
        not isinstance(collapse_key, int) or not -1 <= collapse_key <= 100
    ):
        return "80100013", MESSAGES["80100013"]
    if android.get("urgency", "NORMAL") not in ("HIGH", "NORMAL"):
        return "80100003", "Illegal payload, urgency must be HIGH or NORMAL"
    ttl = android.get("ttl")
    if ttl is not None and (not isinstance(ttl, str) or not _TTL.match(ttl)):
        return "80100003", "Illegal payload, ttl is invalid"
    notification = android.get("notification")
    if notification is None:
        return None
    if not isinstance(notification, dict):
        return "80100003", "Illegal payload, android.notification must be an object"
    click = notification.get("click_action")
    if not isinstance(click, dict) or click.get("type") not in (1, 2, 3, 4):
        return "80100003", "Illegal payload, click_action.type is required (1 to 4)"
    if click["type"] == 1 and not (click.get("intent") or click.get("action")):
        return "80100003", "Illegal payload, click_action type 1 needs intent or action"
    if click["type"] == 2 and not str(click.get("url", "")).startswith("https://"):
        return "80100003", "Illegal payload, click_action type 2 needs an https url"
    if not notification.get("body"):
        return "80100003", "Illegal payload, notification body is required"
    return None
