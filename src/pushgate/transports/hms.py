"""Huawei Push Kit, HMS Core server API (platform ``huawei``).

One ``POST {base_url}/v1/{app_id}/messages:send`` per chunk of up to 1000 devices (the tokens
go in ``message.token``, a list), with an OAuth 2.0 access token of the app
(``Authorization: Bearer``) from the client-credentials grant at ``token_url`` (client id = the
app id, client secret = the app secret), shared until shortly before it expires
(``transports/oauth.py``).

How a notification maps to the message (``payload``); the notification goes in
``android.notification``:

- title: ``android.notification.title`` (left out when the notification has none).
- message: ``android.notification.body``.
- image_url: ``android.notification.image``.
- deep_link: ``android.notification.click_action`` ``{"type": 1, "intent": deep_link}`` (an
  intent URI, or a URI with the app's scheme, opened with ACTION_VIEW); without one,
  ``{"type": 3}`` (open the app). Also ``data.pushgate_deep_link``.
- sound: ``android.notification.sound`` (a file in the app's ``res/raw``); ``"default"`` is
  ``default_sound: true`` instead.
- badge: not sent. Push Kit's badge needs the app's launcher activity class, which Pushgate
  does not know; the app can set its badge from the data.
- ttl (seconds until ``expires_ms``, 1 s to 15 days: Push Kit refuses an expiry in the past):
  ``android.ttl`` as ``"<n>s"``.
- collapse_key: ``android.notification.tag`` (a newer notification replaces the shown one), and
  ``android.collapse_key``, which is a number from -1 to 100: a key that is such a number is
  sent as it is, any other is hashed to 1-100 (two keys may share a group).
- priority: ``android.urgency`` ``HIGH``/``NORMAL``.
- data: ``data``, the JSON text of the notification's data plus ``pushgate_notification_id``
  (a string) and ``pushgate_deep_link``; links (the app's deep links) as more data keys; rich
  (a carousel or slider) as ``data.pushgate_rich``.
- The ``android`` overrides of ``PushOptions`` apply. channel_id:
  ``android.notification.channel_id``. silent: no ``android.notification`` (a data message the
  app handles).

Answers (``outcomes``), ``{"code", "msg", "requestId"}`` for the whole chunk:

- ``80000000`` success: Delivered for every token.
- ``80100000`` partial success: ``msg`` is JSON ``{"success", "failure", "illegal_tokens"}``;
  the illegal tokens are TokenInvalid, the others Delivered.
- ``80300007`` all tokens invalid: TokenInvalid for every token.
- ``80200001`` OAuth authentication error, ``80200003`` access token expired, or HTTP 401:
  the access token is dropped from the cache; RetryLater.
- ``81000001`` internal error, HTTP 429 and 5xx (503 is traffic control): RetryLater, after
  ``Retry-After`` when given.
- ``80300002`` (the app may not send), ``80600003`` (OAuth client refused): PermanentFailure
  ``InvalidCertificate: ...``.
- ``80300008`` body too large, ``80100003`` illegal payload, ``80100001`` bad parameters,
  ``80100004`` bad TTL, ``80100013`` bad collapse key, any other: PermanentFailure.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from pushgate.domain.credentials import HmsCredentials
from pushgate.domain.outcomes import (
    Delivered,
    Outcome,
    PermanentFailure,
    RetryLater,
    TokenInvalid,
)
from pushgate.transports.base import (
    CONNECTION_ERRORS,
    Content,
    CredentialSource,
    ProviderTransport,
    Target,
    for_each_bounded,
    short_text,
)
from pushgate.transports.http import HttpSender, ProviderRequest, ProviderResponse
from pushgate.transports.oauth import (
    AccessTokenCache,
    Grant,
    TokenUnavailable,
    fetch_grant,
)

HMS_BASE_URL = "https://push-api.cloud.huawei.com"
HMS_TOKEN_URL = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
MAX_TOKENS_PER_REQUEST = 1000
MAX_TTL_SECONDS = 15 * 24 * 3600

SUCCESS = "80000000"
PARTIAL_SUCCESS = "80100000"
ALL_TOKENS_INVALID = "80300007"
AUTH_ERRORS = ("80200001", "80200003")
RETRY_CODES = ("81000001",)
CREDENTIAL_CODES = ("80300002", "80600003")
_COLLAPSE_NUMBER = re.compile(r"^-?[0-9]{1,3}$")


# -- the access token --------------------------------------------------------------------


def token_request(credentials: HmsCredentials, token_url: str) -> ProviderRequest:
    body = urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": credentials.app_id,
            "client_secret": credentials.client_secret,
        }
    )
    return ProviderRequest(
        "POST", token_url, {"content-type": "application/x-www-form-urlencoded"}, body.encode()
    )


# -- the message -------------------------------------------------------------------------


def collapse_number(key: str) -> int:
    """Push Kit's collapse key is a number from -1 to 100; other keys hash to 1-100."""
    if _COLLAPSE_NUMBER.match(key) and -1 <= int(key) <= 100:
        return int(key)
    return zlib.crc32(key.encode()) % 100 + 1


def payload(content: Content, now_ms: int) -> dict[str, Any]:
    """The Push Kit ``message`` for ``content``, without its ``token`` list (see the module
    docstring)."""
    options = content.options.for_platform("huawei")
    ttl = min(max(1, content.ttl_seconds(now_ms)), MAX_TTL_SECONDS)

    data = dict(content.data)
    data["pushgate_notification_id"] = str(content.notification_id)
    if options.links:
        data.update(options.links)
    if options.rich is not None:
        data["pushgate_rich"] = options.rich.to_dict()
    if options.deep_link is not None:
        data["pushgate_deep_link"] = options.deep_link

    notification: dict[str, Any] = {"body": content.message}
    if content.title is not None:
        notification["title"] = content.title
    if options.image_url is not None:
        notification["image"] = options.image_url
    if options.sound == "default":
        notification["default_sound"] = True
    elif options.sound is not None:
        notification["sound"] = options.sound
        notification["default_sound"] = False
    if options.collapse_key is not None:
        notification["tag"] = options.collapse_key
    if options.channel_id is not None:
        notification["channel_id"] = options.channel_id
    if options.deep_link is not None:
        notification["click_action"] = {"type": 1, "intent": options.deep_link}
    else:
        notification["click_action"] = {"type": 3}

    android: dict[str, Any] = {
        "urgency": "HIGH" if options.priority == "high" else "NORMAL",
        "ttl": f"{ttl}s",
    }
    if not options.silent:
        android["notification"] = notification
    if options.collapse_key is not None:
        android["collapse_key"] = collapse_number(options.collapse_key)
    return {"data": orjson.dumps(data).decode(), "android": android}


def send_url(base_url: str, app_id: str) -> str:
    return f"{base_url.rstrip('/')}/v1/{app_id}/messages:send"


def send_request(
    base_url: str, app_id: str, message: dict[str, Any], tokens: Sequence[str], access_token: str
) -> ProviderRequest:
    """One request for up to ``MAX_TOKENS_PER_REQUEST`` tokens."""
    body = orjson.dumps({"validate_only": False, "message": {**message, "token": list(tokens)}})
    return ProviderRequest(
        "POST",
        send_url(base_url, app_id),
        {"authorization": f"Bearer {access_token}", "content-type": "application/json"},
        body,
    )


def chunks(targets: Sequence[Target]) -> list[Sequence[Target]]:
    size = MAX_TOKENS_PER_REQUEST
    return [targets[start : start + size] for start in range(0, len(targets), size)]


# -- the answer --------------------------------------------------------------------------


def answer_parts(body: bytes) -> tuple[str, str]:
    """(code, msg) of a Push Kit answer, whole (a partial success's ``msg`` lists tokens:
    ``outcomes`` never puts it in a reason as it is)."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(value, dict):
        return "", ""
    code, msg = value.get("code"), value.get("msg")
    return short_text(code), msg if isinstance(msg, str) else ""


def illegal_tokens(msg: str) -> set[str]:
    """The tokens a partial success names as illegal (``illegal_tokens``, a list; newer
    answers group them by cause under ``illegalTokens``)."""
    try:
        value: Any = orjson.loads(msg)
    except orjson.JSONDecodeError:
        return set()
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    listed = value.get("illegal_tokens")
    if isinstance(listed, list):
        found.update(token for token in listed if isinstance(token, str))
    grouped = value.get("illegalTokens")
    if isinstance(grouped, dict):
        for tokens in grouped.values():
            if isinstance(tokens, list):
                found.update(token for token in tokens if isinstance(token, str))
    return found


def needs_new_token(response: ProviderResponse) -> bool:
    return response.status == 401 or answer_parts(response.body)[0] in AUTH_ERRORS


def outcomes(response: ProviderResponse, tokens: Sequence[str]) -> list[Outcome]:
    """One outcome per token of the chunk (see the module docstring)."""
    code, msg = answer_parts(response.body)
    text = short_text(msg)
    reason = f"{code} {text}".strip() if code else f"HTTP {response.status} {text}".strip()
    if code == SUCCESS and response.status == 200:
        return [Delivered() for _ in tokens]
    if code == PARTIAL_SUCCESS:
        illegal = illegal_tokens(msg)
        gone = TokenInvalid(f"{PARTIAL_SUCCESS} illegal token: Push Kit refused this token")
        return [gone if token in illegal else Delivered() for token in tokens]
    single: Outcome
    if code == ALL_TOKENS_INVALID:
        single = TokenInvalid(f"{reason} (all tokens of the request are invalid)")
    elif code in AUTH_ERRORS or response.status == 401:
        single = RetryLater(f"{reason} (the access token was refused; a new one is fetched)")
    elif code in RETRY_CODES or response.status == 429 or response.status >= 500:
        single = RetryLater(reason, response.retry_after())
    elif code in CREDENTIAL_CODES:
        single = PermanentFailure(f"InvalidCertificate: {reason}")
    else:
        single = PermanentFailure(reason)
    return [single for _ in tokens]


# -- the transport -----------------------------------------------------------------------


class HmsTransport(ProviderTransport[HmsCredentials]):
    platform = "huawei"

    def __init__(
        self,
        credentials: CredentialSource,
        sender: HttpSender,
        *,
        base_url: str = HMS_BASE_URL,
        token_url: str = HMS_TOKEN_URL,
        concurrency: int = 64,
    ) -> None:
        super().__init__(credentials, sender)
        self._base_url = base_url
        self._token_url = token_url
        self._concurrency = max(1, concurrency)
        self.tokens = AccessTokenCache()

    async def _grant(self, credentials: HmsCredentials) -> Grant:
        return await fetch_grant(
            self._sender, token_request(credentials, self._token_url), "Push Kit"
        )

    async def send_with(
        self, credentials: HmsCredentials, content: Content, targets: Sequence[Target]
    ) -> list[Outcome]:
        if not targets:
            return []
        try:
            access_token = await self.tokens.get(credentials, lambda: self._grant(credentials))
        except TokenUnavailable as exc:
            return [exc.outcome for _ in targets]
        message = payload(content, int(time.time() * 1000))
        parts = chunks(targets)
        results: list[list[Outcome]] = [[] for _ in parts]

        async def step(index: int) -> None:
            tokens = [target.address for target in parts[index]]
            request = send_request(
                self._base_url, credentials.app_id, message, tokens, access_token
            )
            try:
                response = await self._sender.send(request)
            except CONNECTION_ERRORS as exc:
                failure = RetryLater(f"Push Kit unreachable: {type(exc).__name__} {exc}")
                results[index] = [failure for _ in tokens]
                return
            if needs_new_token(response):
                self.tokens.invalidate(credentials, access_token)
            results[index] = outcomes(response, tokens)

        await for_each_bounded(len(parts), self._concurrency, step)
        return [result for part in results for result in part]
