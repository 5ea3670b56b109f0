"""Apple Push Notification service (platform ``ios``): token-based auth over HTTP/2.

Each device gets ``POST /3/device/<token>`` on ``https://api.push.apple.com`` (or
``https://api.sandbox.push.apple.com`` for credentials marked sandbox; ``base_url`` overrides
both, e.g. a local ``pushgate.testing.FakeApns``), sent through an ``HttpSender`` that speaks
HTTP/2 (``transports/http2.Http2Sender``).

How a notification maps to the request (``payload`` builds the JSON body; ``request_headers``
the headers):

- ``title`` -> ``aps.alert.title``; ``message`` -> ``aps.alert.body`` (each only when set and
  non-empty). With neither, the push is a background push: ``aps.content-available: 1``,
  ``apns-push-type: background`` and ``apns-priority: 5``; otherwise ``apns-push-type: alert``.
- ``image_url`` -> custom key ``image_url`` and ``aps.mutable-content: 1``, so the app's
  notification service extension can download and attach the image.
- ``deep_link`` -> custom key ``deep_link`` (the app opens it when the notification is tapped).
- ``sound`` -> ``aps.sound``; ``badge`` -> ``aps.badge`` (also on background pushes);
  ``thread_id`` -> ``aps.thread-id``.
- ``silent`` -> a background push as above, whatever the title and message;
  ``content_available`` -> ``aps.content-available: 1`` next to the alert;
  ``mutable_content`` -> ``aps.mutable-content: 1``.
- ``links`` -> custom top-level keys (the app's deep links, e.g. ``ins_dl_internal``).
- ``rich`` (a carousel or slider) -> custom key ``pushgate_rich``: ``{"type", "items": [{"id",
  "image_url", "headline", "description", "deep_links"}]}``, with ``aps.mutable-content: 1``
  so the app's notification service extension can build it.
- The ``ios`` overrides of ``PushOptions`` apply first (``for_platform("ios")``).
- ttl -> header ``apns-expiration``: ``expires_ms // 1000`` (seconds since the epoch; APNs
  stores and retries the notification until then).
- ``collapse_key`` -> header ``apns-collapse-id`` (cut to APNs's limit of 64 bytes).
- ``priority`` -> header ``apns-priority``: ``high`` -> 10, ``normal`` -> 5 (background: 5).
- ``data`` -> custom top-level keys next to ``aps`` (a data key named ``aps`` is left out, and
  the keys above win over data keys of the same name), plus ``pushgate_notification_id`` (the
  notification id as a string).

The whole payload is at most 4096 bytes; a larger one fails with ``PayloadTooLarge`` without
any request. The provider token (a JWT: ES256, header ``alg``/``kid``, claims ``iss`` = team
id and ``iat``) is cached per (team id, key id) and renewed after 40 minutes (APNs refuses
tokens older than an hour and too frequent renewals); a 403 ``ExpiredProviderToken`` or
``InvalidProviderToken`` drops it, so the retry signs a fresh one.

Answers map to outcomes in ``outcome``: 200 Delivered; 410 and 400 ``BadDeviceToken``
TokenInvalid; 429 and 5xx RetryLater (with ``Retry-After``); 400 ``DeviceTokenNotForTopic``
PermanentFailure (the token is another app's: it was registered under the wrong app; the
device stays enabled, as the token itself is alive);
403 provider token errors RetryLater; 413 and other 4xx PermanentFailure. Reasons start with
APNs's own reason name from the JSON body ``{"reason": ...}``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import jwt
import orjson

from pushgate.domain.credentials import ApnsCredentials
from pushgate.domain.outcomes import Delivered, Outcome, PermanentFailure, RetryLater, TokenInvalid
from pushgate.transports.base import (
    CONNECTION_ERRORS,
    Content,
    CredentialSource,
    ProviderTransport,
    Target,
    send_each,
)
from pushgate.transports.http import HttpSender, ProviderRequest, ProviderResponse

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
TOKEN_RENEW_SECONDS = 40 * 60
PROVIDER_TOKEN_ERRORS = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})
DEAD_TOKEN_REASONS = frozenset({"BadDeviceToken", "Unregistered"})
_REASON_NAME = re.compile(r"[A-Za-z]{1,64}")  # APNs reasons are names like BadDeviceToken

_EXPLAIN = {
    "BadDeviceToken": "the device token is not valid for this environment",
    "DeviceTokenNotForTopic": "the device token belongs to another app (topic)",
    "Unregistered": "the device token is no longer active for the topic",
    "ExpiredProviderToken": "the provider token expired; a new one is signed for the retry",
    "InvalidProviderToken": "APNs refused the provider token (key id, team id or key); "
    "a new one is signed for the retry",
    "PayloadTooLarge": f"the payload exceeds {MAX_PAYLOAD_BYTES} bytes",
    "TooManyRequests": "too many requests to this device token",
    "TopicDisallowed": "the credentials may not push to this topic",
    "BadTopic": "the topic is not valid",
    "MissingTopic": "no topic was sent",
    "BadCollapseId": "the collapse id is too long",
    "BadExpirationDate": "the expiration is not valid",
    "BadPriority": "the priority is not valid",
    "InvalidPushType": "the push type is not valid",
    "InternalServerError": "APNs had an internal error",
    "ServiceUnavailable": "APNs is unavailable",
    "Shutdown": "the APNs server is shutting down",
}


# -- content -> request ---------------------------------------------------------------------


def is_background(content: Content) -> bool:
    """A push that shows nothing: asked to be silent, or without a title and a message."""
    return content.options.for_platform("ios").silent or (not content.title and not content.message)


def payload(content: Content) -> dict[str, Any]:
    """The JSON body APNs gets for ``content`` (see the module docstring, field by field)."""
    options = content.options.for_platform("ios")
    aps: dict[str, Any] = {}
    if is_background(content):
        aps["content-available"] = 1
    else:
        alert: dict[str, str] = {}
        if content.title:
            alert["title"] = content.title
        if content.message:
            alert["body"] = content.message
        aps["alert"] = alert
        if options.content_available:
            aps["content-available"] = 1
    if options.sound is not None:
        aps["sound"] = options.sound
    if options.badge is not None:
        aps["badge"] = options.badge
    if options.thread_id is not None:
        aps["thread-id"] = options.thread_id
    body: dict[str, Any] = {key: value for key, value in content.data.items() if key != "aps"}
    if options.links:
        body.update(options.links)
    if options.mutable_content or options.image_url is not None or options.rich is not None:
        aps["mutable-content"] = 1
    if options.image_url is not None:
        body["image_url"] = options.image_url
    if options.rich is not None:
        body["pushgate_rich"] = options.rich.to_dict()
    if options.deep_link is not None:
        body["deep_link"] = options.deep_link
    body["pushgate_notification_id"] = str(content.notification_id)
    body["aps"] = aps
    return body


def encode_payload(content: Content) -> bytes | PermanentFailure:
    """The body bytes, or ``PayloadTooLarge`` when they exceed APNs's 4096 bytes."""
    body = orjson.dumps(payload(content))
    if len(body) > MAX_PAYLOAD_BYTES:
        return PermanentFailure(
            f"PayloadTooLarge: the payload is {len(body)} bytes; APNs takes at most "
            f"{MAX_PAYLOAD_BYTES} (shorten the message or the data)"
        )
    return body


def collapse_id(key: str) -> str:
    """``key`` cut to at most 64 bytes of UTF-8 (on a character boundary)."""
    encoded = key.encode()
    if len(encoded) <= MAX_COLLAPSE_ID_BYTES:
        return key
    return encoded[:MAX_COLLAPSE_ID_BYTES].decode("utf-8", "ignore")


def request_headers(
    credentials: ApnsCredentials, content: Content, provider_token: str
) -> dict[str, str]:
    """The headers of every request for ``content`` (the same for each device)."""
    background = is_background(content)
    high = content.options.priority == "high" and not background
    headers = {
        "authorization": f"bearer {provider_token}",
        "apns-topic": credentials.topic,
        "apns-push-type": "background" if background else "alert",
        "apns-priority": "10" if high else "5",
        "apns-expiration": str(max(0, content.expires_ms // 1000)),
    }
    if content.options.collapse_key:
        headers["apns-collapse-id"] = collapse_id(content.options.collapse_key)
    return headers


def base_url_for(credentials: ApnsCredentials, base_url: str | None) -> str:
    if base_url:
        return base_url.rstrip("/")
    return PRODUCTION_URL if credentials.environment == "production" else SANDBOX_URL


def build_request(
    base_url: str, target: Target, headers: dict[str, str], body: bytes
) -> ProviderRequest:
    return ProviderRequest("POST", f"{base_url}/3/device/{target.address}", headers, body)


# -- provider tokens ------------------------------------------------------------------------


def provider_token(credentials: ApnsCredentials, now: float) -> str:
    """A new provider JWT signed with the credentials' key, issued at ``now``."""
    return jwt.encode(
        {"iss": credentials.team_id, "iat": int(now)},
        credentials.private_key(),
        algorithm="ES256",
        headers={"kid": credentials.key_id, "typ": None},
    )


class ProviderTokens:
    """Provider JWTs per (team id, key id), signed once and reused until ``renew_seconds``."""

    def __init__(self, renew_seconds: float = TOKEN_RENEW_SECONDS) -> None:
        self._renew = renew_seconds
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, credentials: ApnsCredentials, now: float) -> str:
        key = (credentials.team_id, credentials.key_id)
        cached = self._tokens.get(key)
        if cached is not None and 0 <= now - cached[1] < self._renew:
            return cached[0]
        token = provider_token(credentials, now)
        self._tokens[key] = (token, now)
        return token

    def drop(self, credentials: ApnsCredentials, token: str) -> None:
        """Forget ``token`` (APNs refused it); the next ``get`` signs a new one."""
        key = (credentials.team_id, credentials.key_id)
        cached = self._tokens.get(key)
        if cached is not None and cached[0] == token:
            del self._tokens[key]


# -- response -> outcome --------------------------------------------------------------------


def reason_of(response: ProviderResponse) -> str:
    """APNs's reason name from the JSON body, or the HTTP status when there is none."""
    try:
        body = orjson.loads(response.body) if response.body else None
    except orjson.JSONDecodeError:
        body = None
    reason = body.get("reason") if isinstance(body, dict) else None
    if isinstance(reason, str) and _REASON_NAME.fullmatch(reason):
        return reason
    return f"HTTP {response.status}"


def outcome(response: ProviderResponse) -> Outcome:
    """The outcome of one APNs answer (see the module docstring)."""
    status = response.status
    if status == 200:
        return Delivered()
    reason = reason_of(response)
    explained = f"{reason}: {_EXPLAIN.get(reason, f'APNs answered {status}')}"
    if status == 410 or (status == 400 and reason in DEAD_TOKEN_REASONS):
        return TokenInvalid(explained)
    if status == 429 or status >= 500:
        return RetryLater(explained, response.retry_after())
    if status == 403 and reason in PROVIDER_TOKEN_ERRORS:
        return RetryLater(explained)
    if status == 413:
        return PermanentFailure(f"PayloadTooLarge: {_EXPLAIN['PayloadTooLarge']}")
    if 400 <= status < 500:
        return PermanentFailure(explained)
    return RetryLater(f"{reason}: unexpected HTTP status {status} from APNs")


def no_answer(exc: BaseException) -> RetryLater:
    text = str(exc) or "no answer in time"
    return RetryLater(f"no answer from APNs: {type(exc).__name__}: {text}")


# -- the transport --------------------------------------------------------------------------


class ApnsTransport(ProviderTransport[ApnsCredentials]):
    platform = "ios"

    def __init__(
        self,
        credentials: CredentialSource,
        sender: HttpSender,
        *,
        base_url: str | None = None,
        concurrency: int = 64,
    ) -> None:
        super().__init__(credentials, sender)
        self._base_url = base_url
        self._concurrency = max(1, concurrency)
        self.tokens = ProviderTokens()

    async def send_with(
        self, credentials: ApnsCredentials, content: Content, targets: Sequence[Target]
    ) -> list[Outcome]:
        count = len(targets)
        if not count:
            return []
        body = encode_payload(content)
        if isinstance(body, PermanentFailure):
            return [body] * count
        bearer = self.tokens.get(credentials, time.time())
        headers = request_headers(credentials, content, bearer)
        base_url = base_url_for(credentials, self._base_url)
        outcomes: list[Outcome] = [Delivered()] * count
        requests = [build_request(base_url, target, headers, body) for target in targets]
        answers = await send_each(self._sender, requests, self._concurrency)
        for index, answer in enumerate(answers):
            if isinstance(answer, ProviderResponse):
                if answer.status == 200:
                    continue  # Delivered, as preset
                result = outcomes[index] = outcome(answer)
                if answer.status == 403 and isinstance(result, RetryLater):
                    self.tokens.drop(credentials, bearer)
            elif isinstance(answer, CONNECTION_ERRORS):
                outcomes[index] = no_answer(answer)
            else:  # as a failing send does: the whole batch is retried
                raise answer
        return outcomes
