"""Firebase Cloud Messaging, HTTP v1 API (platform ``android``).

One ``POST {base_url}/v1/projects/{project_id}/messages:send`` per device, with an OAuth 2.0
access token of the app's service account (``Authorization: Bearer``). The token comes from
the service account's ``token_uri`` for a JWT assertion signed RS256 with its key (RFC 7523),
and is shared by all sends of that account until shortly before it expires
(``transports/oauth.py``).

How a notification maps to the v1 ``Message`` (``payload``):

- title: ``notification.title`` (left out when the notification has none).
- message: ``notification.body``.
- image_url: ``notification.image`` (all platforms); on iOS also ``apns.fcm_options.image`` and
  ``aps.mutable-content: 1`` so the app's notification service extension can attach it.
- deep_link: ``data.pushgate_deep_link`` (the app opens it when the notification is tapped:
  Android starts the launcher activity with the data as extras, iOS hands the data with the
  tap); and ``webpush.fcm_options.link`` when it is an https URL (browsers open it on click).
  Not ``android.notification.click_action``: that names an intent filter action, not a URL.
- sound: ``android.notification.sound`` and ``apns.payload.aps.sound``.
- badge: ``apns.payload.aps.badge`` (Android has no badge count of its own).
- ttl (seconds until ``expires_ms``, at most 28 days): ``android.ttl`` as ``"<n>s"``,
  ``apns.headers.apns-expiration`` (the expiry as UNIX seconds; ``"0"`` when it has passed:
  deliver now or never), ``webpush.headers.TTL``.
- collapse_key: ``android.collapse_key``, ``android.notification.tag`` (a newer notification
  replaces the shown one), ``apns.headers.apns-collapse-id`` (when it fits APNs' 64 bytes),
  and ``webpush.headers.Topic`` when it is a valid Topic (up to 32 URL-safe base64
  characters).
- priority: ``android.priority`` ``HIGH``/``NORMAL``; ``apns.headers.apns-priority`` ``10``/``5``;
  ``webpush.headers.Urgency`` ``high``/``normal``.
- The ``android`` overrides of ``PushOptions`` apply to the message, the ``ios`` ones to the
  ``apns`` block. silent: no ``notification`` (a data message the app handles); on iOS
  ``aps.content-available: 1`` with ``apns-push-type: background`` and priority 5.
- channel_id: ``android.notification.channel_id``; thread_id: ``aps.thread-id``;
  content_available / mutable_content: ``aps.content-available`` / ``aps.mutable-content``.
- links: more ``data`` keys (the app's deep links, e.g. ``ins_dl_internal``); rich (a carousel
  or slider): ``data.pushgate_rich``, its JSON as a string, for the app to build.
- data: ``data``, every value a string (strings as they are, other values JSON-encoded), plus
  ``pushgate_notification_id``. FCM refuses some keys (``from``, ``notification``,
  ``message_type``, keys starting with ``google`` or ``gcm``): it answers INVALID_ARGUMENT.

Answers (``outcome``): 200 is Delivered. Errors are Google's ``{"error": {"code", "message",
"status", "details": [{"@type": ".../google.firebase.fcm.v1.FcmError", "errorCode"}]}}``; the
FcmError ``errorCode`` wins over ``status``:

- ``UNREGISTERED`` (404) or any 404: TokenInvalid (the app was uninstalled or the token expired).
- ``SENDER_ID_MISMATCH`` (403): PermanentFailure (the token belongs to another Firebase
  project: it was registered under the wrong app; the device stays enabled, as the token
  itself is alive).
- ``INVALID_ARGUMENT`` (400): TokenInvalid when the error is about the registration token
  ("not a valid FCM registration token", or a field violation on ``message.token``), else
  PermanentFailure (payload too large, a refused data key...).
- ``QUOTA_EXCEEDED`` (429), ``UNAVAILABLE`` (503), ``INTERNAL`` (500), other 5xx: RetryLater,
  after ``Retry-After`` when given.
- ``UNAUTHENTICATED`` (401): the access token is dropped from the cache; RetryLater.
- ``THIRD_PARTY_AUTH_ERROR`` (the APNs certificate or Web Push key in the Firebase project is
  wrong), ``PERMISSION_DENIED`` (the service account may not send for the project):
  PermanentFailure ``InvalidCertificate: ...``.
- Any other 4xx: PermanentFailure.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson

from pushgate.domain.credentials import FcmCredentials, token_uri_problem
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
    send_each,
    short_text,
)
from pushgate.transports.http import HttpSender, ProviderRequest, ProviderResponse
from pushgate.transports.oauth import (
    AccessTokenCache,
    Grant,
    TokenUnavailable,
    fetch_grant,
)

FCM_BASE_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
MAX_TTL_SECONDS = 28 * 24 * 3600
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_WEBPUSH_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_JSON = "application/json; charset=UTF-8"

# -- the access token --------------------------------------------------------------------


def assertion(credentials: FcmCredentials, now: int) -> str:
    """The signed JWT a service account trades for an access token (RFC 7523)."""
    claims = {
        "iss": credentials.client_email,
        "scope": SCOPE,
        "aud": credentials.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    }
    return jwt.encode(
        claims,
        credentials.key,
        algorithm="RS256",
        headers={"kid": credentials.private_key_id},
    )


def token_request(credentials: FcmCredentials, now: int) -> ProviderRequest:
    body = urlencode({"grant_type": JWT_BEARER, "assertion": assertion(credentials, now)})
    return ProviderRequest(
        "POST",
        credentials.token_uri,
        {"content-type": "application/x-www-form-urlencoded"},
        body.encode(),
    )


# -- the message -------------------------------------------------------------------------


def data_strings(data: dict[str, Any], notification_id: int) -> dict[str, str]:
    """FCM data: every value a string."""
    strings = {
        str(key): value if isinstance(value, str) else orjson.dumps(value).decode()
        for key, value in data.items()
    }
    strings["pushgate_notification_id"] = str(notification_id)
    return strings


def payload(content: Content, now_ms: int) -> dict[str, Any]:
    """The v1 ``Message`` for ``content``, without its ``token`` (see the module docstring)."""
    options = content.options.for_platform("android")
    ios = content.options.for_platform("ios")
    high = options.priority == "high"
    ttl = min(content.ttl_seconds(now_ms), MAX_TTL_SECONDS)

    notification: dict[str, Any] = {"body": content.message}
    if content.title is not None:
        notification["title"] = content.title
    if options.image_url is not None:
        notification["image"] = options.image_url

    data = data_strings(content.data, content.notification_id)
    if options.links:
        data.update(options.links)
    if options.rich is not None:
        data["pushgate_rich"] = orjson.dumps(options.rich.to_dict()).decode()
    if options.deep_link is not None:
        data["pushgate_deep_link"] = options.deep_link

    android_notification: dict[str, Any] = {}
    if options.sound is not None:
        android_notification["sound"] = options.sound
    if options.channel_id is not None:
        android_notification["channel_id"] = options.channel_id
    android: dict[str, Any] = {"priority": "HIGH" if high else "NORMAL", "ttl": f"{ttl}s"}
    if options.collapse_key is not None:
        android["collapse_key"] = options.collapse_key
        android_notification["tag"] = options.collapse_key
    if android_notification and not options.silent:
        android["notification"] = android_notification

    apns_headers = {
        "apns-priority": "10" if high and not ios.silent else "5",
        "apns-expiration": str(content.expires_ms // 1000) if ttl > 0 else "0",
    }
    if ios.silent:
        apns_headers["apns-push-type"] = "background"
    if options.collapse_key is not None and len(options.collapse_key.encode()) <= 64:
        apns_headers["apns-collapse-id"] = options.collapse_key
    aps: dict[str, Any] = {}
    if ios.sound is not None:
        aps["sound"] = ios.sound
    if ios.badge is not None:
        aps["badge"] = ios.badge
    if ios.thread_id is not None:
        aps["thread-id"] = ios.thread_id
    if ios.content_available or ios.silent:
        aps["content-available"] = 1
    apns: dict[str, Any] = {"headers": apns_headers}
    if ios.mutable_content or ios.image_url is not None or ios.rich is not None:
        aps["mutable-content"] = 1
    if ios.image_url is not None:
        apns["fcm_options"] = {"image": ios.image_url}
    if aps:
        apns["payload"] = {"aps": aps}

    webpush_headers = {"TTL": str(ttl), "Urgency": "high" if high else "normal"}
    if options.collapse_key is not None and _WEBPUSH_TOPIC.match(options.collapse_key):
        webpush_headers["Topic"] = options.collapse_key
    webpush: dict[str, Any] = {"headers": webpush_headers}
    if options.deep_link is not None and options.deep_link.startswith("https://"):
        webpush["fcm_options"] = {"link": options.deep_link}

    message: dict[str, Any] = {"notification": notification} if not options.silent else {}
    message.update({"data": data, "android": android, "apns": apns, "webpush": webpush})
    return message


def send_url(base_url: str, project_id: str) -> str:
    return f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"


def send_headers(access_token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {access_token}", "content-type": _JSON}


def message_tail(message: dict[str, Any]) -> bytes:
    """The serialized message after its token: ``send_body(token, tail)`` completes it."""
    encoded = orjson.dumps(message)
    return b"," + encoded[1:] + b"}" if len(encoded) > 2 else b"}}"


def send_body(token: str, tail: bytes) -> bytes:
    """``{"message": {"token": token, ...message}}`` with the message serialized once per
    batch (``message_tail``)."""
    return b'{"message":{"token":' + orjson.dumps(token) + tail


def send_request(
    base_url: str,
    credentials: FcmCredentials,
    content: Content,
    target: Target,
    access_token: str,
    now_ms: int,
) -> ProviderRequest:
    """The request that sends ``content`` to ``target`` (the transport builds the same one
    with the batch's shared parts computed once)."""
    return ProviderRequest(
        "POST",
        send_url(base_url, credentials.project_id),
        send_headers(access_token),
        send_body(target.address, message_tail(payload(content, now_ms))),
    )


# -- the answer --------------------------------------------------------------------------


def error_parts(body: bytes) -> tuple[str, str, str, list[dict[str, Any]]]:
    """(errorCode or status, status, message, details) of a Google JSON error; the code,
    status and message are short sanitised fields (``short_text``), never the body."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", "", "", []
    error = value.get("error") if isinstance(value, dict) else None
    if not isinstance(error, dict):
        return "", "", "", []
    status = short_text(error.get("status"))
    message = short_text(error.get("message"))
    raw_details = error.get("details")
    details = (
        [d for d in raw_details if isinstance(d, dict)] if isinstance(raw_details, list) else []
    )
    code = status
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.firebase.fcm.v1.FcmError"):
            code = short_text(detail.get("errorCode")) or status
    return code, status, message, details


def _about_token(message: str, details: list[dict[str, Any]]) -> bool:
    if "registration token" in message.lower():
        return True
    for detail in details:
        for violation in detail.get("fieldViolations") or []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False


def outcome(response: ProviderResponse) -> Outcome:
    """What FCM's answer to one send means for that device (see the module docstring)."""
    status = response.status
    if status == 200:
        return Delivered()
    code, _status_name, message, details = error_parts(response.body)
    name = code or f"HTTP {status}"
    reason = f"{name}: {message}" if message else name
    if code == "UNREGISTERED" or status == 404:
        return TokenInvalid(reason if code else f"UNREGISTERED: {reason}")
    if code == "SENDER_ID_MISMATCH":
        return PermanentFailure(reason)
    if code in ("THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED") or (status == 403 and not code):
        return PermanentFailure(f"InvalidCertificate: {reason}")
    if status == 401 or code == "UNAUTHENTICATED":
        return RetryLater(f"{reason} (the access token was refused; a new one is fetched)")
    if code in ("QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL") or status == 429 or status >= 500:
        return RetryLater(reason, response.retry_after())
    if code == "INVALID_ARGUMENT" and _about_token(message, details):
        return TokenInvalid(reason)
    return PermanentFailure(reason)


def needs_new_token(response: ProviderResponse) -> bool:
    """Whether FCM refused the access token itself (not the APNs/Web Push credentials of the
    Firebase project, which FCM also answers with 401)."""
    return response.status == 401 and error_parts(response.body)[0] != "THIRD_PARTY_AUTH_ERROR"


# -- the transport -----------------------------------------------------------------------


class FcmTransport(ProviderTransport[FcmCredentials]):
    platform = "android"

    def __init__(
        self,
        credentials: CredentialSource,
        sender: HttpSender,
        *,
        base_url: str = FCM_BASE_URL,
        concurrency: int = 64,
        token_sender: HttpSender | None = None,
        token_hosts: Collection[str] = (),
    ) -> None:
        """``token_sender``: what fetches access tokens from the service account's
        ``token_uri`` (a URL from the credential: give it a sender under the egress policy);
        default ``sender``. ``token_hosts``: hosts a ``token_uri`` may name besides Google's
        (checked before every fetch, also for credentials stored before a setting changed)."""
        super().__init__(credentials, sender)
        self._base_url = base_url
        self._concurrency = max(1, concurrency)
        self._token_sender = token_sender or sender
        self._token_hosts = frozenset(token_hosts)
        self.tokens = AccessTokenCache()

    async def _grant(self, credentials: FcmCredentials) -> Grant:
        problem = token_uri_problem(credentials.token_uri, self._token_hosts)
        if problem is not None:
            raise TokenUnavailable(PermanentFailure(f"InvalidCertificate: {problem}"))
        # An RS256 signature costs milliseconds: not on the event loop.
        request = await asyncio.to_thread(token_request, credentials, int(time.time()))
        return await fetch_grant(self._token_sender, request, "FCM")

    async def close(self) -> None:
        await super().close()
        if self._token_sender is not self._sender:
            await self._token_sender.close()

    async def send_with(
        self, credentials: FcmCredentials, content: Content, targets: Sequence[Target]
    ) -> list[Outcome]:
        if not targets:
            return []
        try:
            access_token = await self.tokens.get(credentials, lambda: self._grant(credentials))
        except TokenUnavailable as exc:
            return [exc.outcome for _ in targets]
        url = send_url(self._base_url, credentials.project_id)
        headers = send_headers(access_token)
        tail = message_tail(payload(content, int(time.time() * 1000)))
        requests = [
            ProviderRequest("POST", url, headers, send_body(target.address, tail))
            for target in targets
        ]
        answers = await send_each(self._sender, requests, self._concurrency)
        outcomes: list[Outcome] = [Delivered()] * len(targets)
        for index, answer in enumerate(answers):
            if isinstance(answer, ProviderResponse):
                if answer.status == 200:
                    continue  # Delivered, as preset
                if needs_new_token(answer):
                    self.tokens.invalidate(credentials, access_token)
                outcomes[index] = outcome(answer)
            elif isinstance(answer, CONNECTION_ERRORS):
                outcomes[index] = RetryLater(f"FCM unreachable: {type(answer).__name__} {answer}")
            else:  # as a failing send does: the whole batch is retried
                raise answer
        return outcomes
