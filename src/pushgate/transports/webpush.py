"""Web Push (platform ``web``): RFC 8030 requests, RFC 8291 encryption, RFC 8292 VAPID.

A device's address is its browser's ``PushSubscription.toJSON()`` text:
``{"endpoint": "https://push.example/...", "keys": {"p256dh": "...", "auth": "..."}}``.
Each delivery is one ``POST`` to the endpoint with the encrypted payload as its body.

The payload (what the service worker's ``push`` event gets from ``event.data.json()``), made
by ``payload``; a field is left out when the notification has no value for it:

- ``title``: the notification's title.
- ``body``: the notification's message (always present).
- ``image``: ``options.image_url`` (an https image, for ``showNotification``'s ``image``);
  for a rich push (carousel, slider) without one, its first item's image.
- ``icon``: ``options.icon_url`` (the small icon, for ``showNotification``'s ``icon``).
- ``url``: ``options.deep_link``, the page to open when the notification is clicked; for a
  rich push without one, its first item's first https link.
- ``silent``: true for a push that should show nothing (the worker decides what to do).
- ``data`` also carries ``options.links`` (the app's key/value deep links).
- ``tag``: ``options.collapse_key`` (``showNotification``'s ``tag``: a newer notification with
  the same tag replaces the shown one).
- ``badge``: ``options.badge``, the count (the service worker may call ``setAppBadge``).
- ``sound``: ``options.sound`` (browsers ignore sounds; passed on for the service worker).
- ``data``: the notification's data object, plus ``pushgate_notification_id`` (a string).

What goes in headers rather than the payload:

- ttl (from ``expires_ms``): ``TTL``, the seconds left until the notification expires (0 when
  it has: the push service delivers it only to a browser online now).
- priority: ``Urgency``: ``high`` -> ``high``, ``normal`` -> ``normal``.
- collapse_key: also ``Topic`` (a message waiting in the push service is replaced by a newer
  one with the same topic). A topic is at most 32 base64url characters, so a key that is not
  one is replaced by the first 32 characters of the base64url SHA-256 of the key.
- ``Content-Encoding: aes128gcm``, ``Content-Type: application/octet-stream``, and
  ``Authorization: vapid t=<JWT>, k=<the app's public key>`` (signed once per push service
  origin and reused for hours: see ``webpush_crypto.VapidTokens``).

Answers: 200/201/202 Delivered; 404/410 TokenInvalid; 413 and 400/401/403 PermanentFailure
(403 mostly means the subscription was made with another VAPID key); 429 and 5xx RetryLater
with ``Retry-After``. A subscription that does not parse fails with ``InvalidSubscription``.

Speed: encrypting costs ~100 µs per message (ECDH ~50 µs of it, with the GIL released). A
batch is encrypted in chunks of ``chunk_size`` on ``encrypt_threads`` worker threads (0:
inline, yielding to the loop between chunks), and each chunk's requests go out as soon as it
is encrypted: up to ``concurrency`` workers per batch take the next delivery in turn (no task
per request), bounded together with the other batches' by one semaphore. On a 2-core
machine the threads do not raise throughput (the GIL hand-offs cost about what the parallel
ECDH saves), and no thread lowers the CPU spent (it only moves it off the event loop): with
one thread the server spent ~10% more CPU per delivery than inline (2026-12-06,
docs/performance.md), so the default is inline; a chunk of 32 holds the loop ~4 ms. Parsed
subscriptions are not cached: parsing costs ~17 µs and fan-outs rarely repeat a
subscription soon.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from pushgate.domain.credentials import VapidCredentials, b64url_decode
from pushgate.domain.outcomes import Delivered, Outcome, PermanentFailure, RetryLater, TokenInvalid
from pushgate.egress import EgressRefused
from pushgate.transports.base import (
    CONNECTION_ERRORS,
    Content,
    CredentialSource,
    ProviderTransport,
    Target,
    short_text,
)
from pushgate.transports.http import HttpSender, ProviderRequest, ProviderResponse
from pushgate.transports.webpush_crypto import (
    MAX_PLAINTEXT_BYTES,
    InvalidKey,
    VapidTokens,
    encrypt,
    load_public_key,
    origin_of_parts,
    seal,
)

_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_SUBSCRIPTION_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Subscription:
    """A parsed ``PushSubscription``: where to post, and the keys to encrypt for."""

    endpoint: str
    origin: str
    p256dh: bytes  # the browser's public key: an uncompressed P-256 point
    auth: bytes  # the 16-byte auth secret
    key: ec.EllipticCurvePublicKey  # p256dh, loaded


class InvalidSubscription(ValueError):
    pass


def parse_subscription(address: str) -> Subscription:
    """A device address as a subscription; ``InvalidSubscription`` says what is wrong."""
    if len(address) > MAX_SUBSCRIPTION_CHARS:
        raise InvalidSubscription("the subscription JSON is too long")
    try:
        raw = orjson.loads(address)
    except orjson.JSONDecodeError as exc:
        raise InvalidSubscription("the address is not PushSubscription JSON") from exc
    if not isinstance(raw, dict):
        raise InvalidSubscription("the subscription must be a JSON object")
    endpoint = raw.get("endpoint")
    keys = raw.get("keys")
    if not isinstance(endpoint, str) or not isinstance(keys, dict):
        raise InvalidSubscription("the subscription needs 'endpoint' and 'keys'")
    parts = urlsplit(endpoint)
    if not parts.hostname or parts.scheme != "https":
        raise InvalidSubscription("the endpoint must be an https:// URL")
    try:
        origin = origin_of_parts(parts)
    except ValueError as exc:  # a port that is not a number, or out of range
        raise InvalidSubscription("the endpoint's port is not valid") from exc
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    if not isinstance(p256dh, str) or not isinstance(auth, str):
        raise InvalidSubscription("the subscription's keys need 'p256dh' and 'auth'")
    try:
        point = b64url_decode(p256dh.strip())
        secret = b64url_decode(auth.strip())
    except ValueError as exc:
        raise InvalidSubscription("p256dh and auth must be base64url") from exc
    if len(secret) != 16:
        raise InvalidSubscription("auth must be a 16-byte secret")
    try:
        key = load_public_key(point)
    except InvalidKey as exc:
        raise InvalidSubscription(str(exc)) from exc
    return Subscription(endpoint, origin, point, secret, key)


def payload(content: Content) -> dict[str, Any]:
    """The JSON the service worker receives (see the module docstring, field by field)."""
    options = content.options
    body: dict[str, Any] = {}
    if content.title is not None:
        body["title"] = content.title
    body["body"] = content.message
    image = options.image_url or (options.rich.fallback_image if options.rich else None)
    link = options.deep_link or (options.rich.fallback_link if options.rich else None)
    if image is not None:
        body["image"] = image
    if options.icon_url is not None:
        body["icon"] = options.icon_url
    if link is not None:
        body["url"] = link
    if options.collapse_key is not None:
        body["tag"] = options.collapse_key
    if options.badge is not None:
        body["badge"] = options.badge
    if options.sound is not None:
        body["sound"] = options.sound
    if options.silent:
        body["silent"] = True
    data = content.data
    if options.links:
        data.update(options.links)
    data["pushgate_notification_id"] = str(content.notification_id)
    body["data"] = data
    return body


def topic_of(collapse_key: str) -> str:
    """A valid ``Topic`` (at most 32 base64url characters) for a collapse key, deterministic."""
    if _TOPIC.match(collapse_key):
        return collapse_key
    digest = hashlib.sha256(collapse_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]


def headers(content: Content, now_ms: int, authorization: str) -> dict[str, str]:
    """The request headers, the same for every subscription at one push service origin."""
    result = {
        "TTL": str(content.ttl_seconds(now_ms)),
        "Urgency": "high" if content.options.priority == "high" else "normal",
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Authorization": authorization,
    }
    if content.options.collapse_key is not None:
        result["Topic"] = topic_of(content.options.collapse_key)
    return result


def build_request(
    credentials: VapidCredentials,
    content: Content,
    target: Target,
    now_ms: int,
    *,
    tokens: VapidTokens | None = None,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> ProviderRequest | PermanentFailure:
    """The request for one delivery, or why there can be none (a subscription that does not
    parse, a payload too large). ``send_with`` does the same in steps over a whole batch."""
    plaintext = orjson.dumps(payload(content))
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        return too_large(len(plaintext))
    try:
        subscription = parse_subscription(target.address)
    except InvalidSubscription as exc:
        return PermanentFailure(f"InvalidSubscription: {exc}")
    tokens = tokens or VapidTokens()
    authorization = tokens.authorization(credentials, subscription.origin, now_ms / 1000)
    body = encrypt(
        plaintext,
        subscription.p256dh,
        subscription.auth,
        ua_key=subscription.key,
        sender_key=sender_key,
        salt=salt,
    )
    return ProviderRequest(
        "POST", subscription.endpoint, headers(content, now_ms, authorization), body
    )


def too_large(size: int) -> PermanentFailure:
    return PermanentFailure(
        f"PayloadTooLarge: the payload is {size} bytes encoded; Web Push allows at most "
        f"{MAX_PLAINTEXT_BYTES} bytes (4096 bytes encrypted)"
    )


_REASONS = {
    400: "the push service refused the request as malformed",
    401: "the push service refused the VAPID token",
    403: "the subscription belongs to another VAPID key (or the token was refused)",
    404: "the push service does not know this subscription",
    410: "the subscription expired or the browser unsubscribed",
    413: "the push service refused the message as too large",
    429: "the push service is rate limiting this sender",
}


def _detail(body: bytes) -> str:
    """A short sanitised reason from a JSON error body (autopush's ``message``, ``error`` or
    ``reason`` field). Never the body itself: the endpoint is a URL a client gave."""
    if not body:
        return ""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(raw, dict):
        return ""
    return short_text(raw.get("message") or raw.get("error") or raw.get("reason"))


def outcome_of(response: ProviderResponse) -> Outcome:
    """A push service's answer as an outcome."""
    status = response.status
    if status in (200, 201, 202):
        return Delivered()
    try:
        name = HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        name = f"HTTP{status}"
    explanation = _REASONS.get(status, "the push service failed")
    detail = _detail(response.body)
    reason = f"{name}: {explanation} ({status})" + (f": {detail}" if detail else "")
    if status in (404, 410):
        return TokenInvalid(reason)
    if status == 429 or status >= 500:
        return RetryLater(reason, response.retry_after())
    return PermanentFailure(reason)


def _encrypt_all(plaintext: bytes, subscriptions: Sequence[Subscription]) -> list[bytes]:
    # The plaintext's size was checked once for the batch, each subscription when parsed.
    return [seal(plaintext, s.p256dh, s.auth, s.key) for s in subscriptions]


class WebPushTransport(ProviderTransport[VapidCredentials]):
    platform = "web"

    def __init__(
        self,
        credentials: CredentialSource,
        sender: HttpSender,
        *,
        concurrency: int = 64,
        encrypt_threads: int = 0,
        chunk_size: int = 32,
    ) -> None:
        super().__init__(credentials, sender)
        self._concurrency = max(1, concurrency)
        self._limit = asyncio.Semaphore(concurrency)  # shared by the sends in progress
        self._threads = encrypt_threads
        self._chunk = max(1, chunk_size)
        self._pool: ThreadPoolExecutor | None = None
        self.tokens = VapidTokens()

    async def send_with(
        self, credentials: VapidCredentials, content: Content, targets: Sequence[Target]
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(targets)
        plaintext = orjson.dumps(payload(content))
        if len(plaintext) > MAX_PLAINTEXT_BYTES:
            failure = too_large(len(plaintext))
            return [failure for _ in targets]
        now_ms = int(time.time() * 1000)
        by_origin: dict[str, dict[str, str]] = {}
        todo: list[tuple[int, Subscription]] = []
        for index, target in enumerate(targets):
            try:
                found = parse_subscription(target.address)
            except InvalidSubscription as exc:
                outcomes[index] = PermanentFailure(f"InvalidSubscription: {exc}")
                continue
            if found.origin not in by_origin:
                authorization = self.tokens.authorization(credentials, found.origin)
                by_origin[found.origin] = headers(content, now_ms, authorization)
            todo.append((index, found))
        if not todo:
            return [o if o is not None else RetryLater("not sent") for o in outcomes]
        size = self._chunk
        chunks = [[s for _, s in todo[i : i + size]] for i in range(0, len(todo), size)]
        bodies: list[list[bytes] | None] = [None] * len(chunks)
        encrypting: list[asyncio.Future[list[bytes]]] = []
        if self._threads > 0 and len(todo) > 2:
            loop = asyncio.get_running_loop()
            pool = self._executor()
            encrypting = [
                loop.run_in_executor(pool, _encrypt_all, plaintext, chunk) for chunk in chunks
            ]
        cursor = 0

        async def worker() -> None:
            # A few workers take the next delivery until none is left (no task per request);
            # the first to reach a chunk waits for its encryption (or, without threads, does
            # it here: one chunk at a time, so the loop runs between chunks).
            nonlocal cursor
            while cursor < len(todo):
                position = cursor
                cursor += 1
                number, offset = divmod(position, size)
                done = bodies[number]
                if done is None:
                    if encrypting:
                        done = await encrypting[number]
                    else:
                        done = _encrypt_all(plaintext, chunks[number])
                    bodies[number] = done
                index, subscription = todo[position]
                origin = subscription.origin
                request = ProviderRequest(
                    "POST", subscription.endpoint, by_origin[origin], done[offset]
                )
                await self._post(index, origin, request, outcomes)

        try:
            workers = min(self._concurrency, len(todo))
            if workers == 1:
                await worker()
            else:
                async with asyncio.TaskGroup() as group:
                    for _ in range(workers):
                        group.create_task(worker())
        finally:  # only does something when this send is cancelled or fails
            for future in encrypting:
                future.cancel()
        return [o if o is not None else RetryLater("not sent") for o in outcomes]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="webpush-encrypt")
        return self._pool

    async def _post(
        self, index: int, origin: str, request: ProviderRequest, outcomes: list[Outcome | None]
    ) -> None:
        async with self._limit:
            try:
                response = await self._sender.send(request)
            except EgressRefused as exc:
                outcomes[index] = PermanentFailure(f"EgressRefused: {exc}")
                return
            except CONNECTION_ERRORS as exc:
                what = str(exc) or type(exc).__name__
                outcomes[index] = RetryLater(
                    f"ConnectionFailed: no answer from {origin}: {what}"[:200]
                )
                return
        outcomes[index] = outcome_of(response)

    async def close(self) -> None:
        await super().close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True)  # idle threads: this returns at once
