"""A fake Web Push service (RFC 8030) over TLS, for tests of anything that sends Web Push.

It hands out browser-like subscriptions, checks each push as a real push service does (the
VAPID token of RFC 8292, bound to the key the subscription was made with), decrypts every
payload with the subscription's private key as a browser would (RFC 8291), and records what
arrived.

    with FakeWebPush() as push:
        credentials = push.credentials()        # {"subject": ..., "private_key": PEM}
        subscription = push.subscribe()          # PushSubscription.toJSON() for that key
        ...  # upload the credentials, register json.dumps(subscription) as a web device, send
        assert push.wait_for(1)
        assert push.messages[0].json()["body"] == "Hello"

Faults: ``fail_next(status, count, retry_after=..., reason=...)`` answers with an autopush-like
JSON error, ``drop_next(count)`` closes the connection without an answer, and
``unregister(subscription)`` makes later pushes to it answer ``410 Gone``.

For benchmarks it also runs as a process of its own:
``python -m pushgate.testing.fake_webpush --port 0`` prints one JSON line with ``url`` and
``ca_file``; ``POST /_fake/subscribe`` (``{"application_server_key": ...}``) answers a
subscription and ``GET /_fake/stats`` the counts.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from pushgate.domain.credentials import VapidCredentials, b64url, b64url_decode
from pushgate.testing.fake_provider import FakeProvider
from pushgate.testing.fake_server import DROP, Drop, FakeHttpServer, FakeRequest, FakeResponse
from pushgate.transports.webpush_crypto import (
    MAX_BODY_BYTES,
    decrypt,
    load_public_key,
    parse_authorization,
    point_bytes,
)

MAX_TOKEN_AHEAD_SECONDS = 24 * 3600
CLOCK_SKEW_SECONDS = 60


@dataclass(frozen=True)
class WebPushMessage:
    """One push the fake accepted, decrypted."""

    subscription_id: str
    endpoint: str
    payload: bytes
    ttl: int
    urgency: str | None
    topic: str | None
    vapid_claims: dict[str, Any]
    received_at: float  # time.time()
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, as received

    def json(self) -> Any:
        return orjson.loads(self.payload)


@dataclass
class _Subscription:
    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    public_point: bytes
    auth: bytes
    application_server_key: bytes


class _VapidError(Exception):
    pass


class FakeWebPush(FakeHttpServer, FakeProvider[WebPushMessage]):
    """A push service on ``https://127.0.0.1:<port>``; endpoints are ``/push/<id>``.

    ``fail_next(status, reason=...)`` answers an autopush-like JSON error with ``reason`` as
    its message; unregistered subscriptions answer ``410 Gone``. ``received``/``messages``:
    the pushes accepted, decrypted."""

    def __init__(
        self, *, tls: bool = True, port: int = 0, subject: str = "mailto:push@example.com"
    ) -> None:
        super().__init__(self._handle, tls=tls, port=port)
        FakeProvider.__init__(self)
        self._vapid = VapidCredentials.generate(subject)
        self._subscriptions: dict[str, _Subscription] = {}
        self._verified: dict[tuple[str, str], dict[str, Any]] = {}
        self.vapid_tokens: list[str] = []  # the distinct JWTs seen, in order
        self.refused = 0  # requests answered with an error (faults included)

    # -- what a test uses ----------------------------------------------------------------

    def credentials(self) -> dict[str, Any]:
        """VAPID credentials minted by the fake (``VapidCredentials.parse`` accepts them)."""
        return self._vapid.secret()

    @property
    def public_key(self) -> str:
        """The minted credentials' public key (an ``applicationServerKey``)."""
        return self._vapid.public_key

    def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """A new subscription bound to ``application_server_key`` (by default the key of
        ``credentials()``), as ``PushSubscription.toJSON()`` gives it."""
        key_text = application_server_key or self._vapid.public_key
        try:
            server_key = b64url_decode(key_text)
            load_public_key(server_key)
        except ValueError as exc:
            raise ValueError("application_server_key must be a base64url P-256 point") from exc
        if self.port == 0:
            raise RuntimeError("start the fake before subscribing")
        private_key = ec.generate_private_key(ec.SECP256R1())
        point = point_bytes(private_key.public_key())
        auth = secrets.token_bytes(16)
        sub_id = secrets.token_urlsafe(18)
        endpoint = f"{self.url}/push/{sub_id}"
        with self._lock:
            self._subscriptions[sub_id] = _Subscription(
                sub_id, endpoint, private_key, point, auth, server_key
            )
        return {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(auth)},
        }

    def unregister(self, address: str | dict[str, Any]) -> None:
        """Later pushes to this subscription (its dict, JSON text, endpoint or id) get 410."""
        sub_id = self._id_of(address)
        if sub_id not in self._subscriptions:
            raise KeyError(f"no such subscription: {sub_id}")
        super().unregister(sub_id)

    @property
    def messages(self) -> list[WebPushMessage]:
        """What arrived (decrypted), in order (the same as ``received``)."""
        return self.received

    def messages_to(self, address: str | dict[str, Any]) -> list[WebPushMessage]:
        sub_id = self._id_of(address)
        return [m for m in self.received if m.subscription_id == sub_id]

    @staticmethod
    def _id_of(address: str | dict[str, Any]) -> str:
        if isinstance(address, str) and address.lstrip().startswith("{"):
            address = orjson.loads(address)
        if isinstance(address, dict):
            address = str(address.get("endpoint", ""))
        return address.rstrip("/").rsplit("/", 1)[-1]

    # -- the push service ------------------------------------------------------------------

    async def _handle(self, request: FakeRequest) -> FakeResponse | Drop:
        path = request.path
        if path.startswith("/_fake/"):
            return self._control(request)
        if not path.startswith("/push/"):
            return self._refuse(404, "no such resource")
        if request.method != "POST":
            return self._refuse(405, "push with POST")
        fault = self._faults.take()
        with self._lock:
            subscription = self._subscriptions.get(path[len("/push/") :])
        if fault is not None and fault.status == 0:
            self.refused += 1
            return DROP
        if fault is not None:
            return self._refuse(fault.status, fault.reason, fault.retry_after)
        if subscription is None or self._gone(subscription.id):
            return self._refuse(410, "the subscription is gone (unsubscribed or expired)")
        try:
            claims = self._check_vapid(request.headers.get("authorization", ""), subscription)
        except _VapidError as exc:
            return self._refuse(403, str(exc))
        ttl_text = request.headers.get("ttl")
        if ttl_text is None or not ttl_text.strip().isdigit():
            return self._refuse(400, "the TTL header is required (whole seconds)")
        encoding = request.headers.get("content-encoding", "")
        if encoding.strip().lower() != "aes128gcm":
            return self._refuse(400, f"Content-Encoding must be aes128gcm, not {encoding!r}")
        if len(request.body) > MAX_BODY_BYTES:
            return self._refuse(413, f"the body is {len(request.body)} bytes; at most 4096")
        try:
            plaintext = decrypt(
                request.body,
                subscription.private_key,
                subscription.auth,
                ua_public=subscription.public_point,
            )
        except ValueError as exc:
            return self._refuse(400, f"the payload does not decrypt: {exc}")
        message = WebPushMessage(
            subscription.id,
            subscription.endpoint,
            plaintext,
            int(ttl_text),
            request.headers.get("urgency"),
            request.headers.get("topic"),
            claims,
            time.time(),
            dict(request.headers),
        )
        self._record(message)
        location = f"{self.url}/m/{secrets.token_urlsafe(12)}"
        return FakeResponse(201, b"", {"location": location})

    def _check_vapid(self, header: str, subscription: _Subscription) -> dict[str, Any]:
        """The token's claims when it is valid for this subscription, as RFC 8292 says."""
        try:
            token, key_text = parse_authorization(header)
            key_point = b64url_decode(key_text)
        except ValueError as exc:
            raise _VapidError(f"bad Authorization header: {exc}") from exc
        if key_point != subscription.application_server_key:
            raise _VapidError("k is not the applicationServerKey this subscription was made with")
        cache_key = (token, key_text)
        claims = self._verified.get(cache_key)
        if claims is None:
            try:
                public_key = load_public_key(key_point)
                claims = jwt.decode(
                    token,
                    public_key,
                    algorithms=["ES256"],
                    options={"verify_aud": False, "verify_exp": False},
                )
            except (ValueError, jwt.PyJWTError) as exc:
                raise _VapidError(f"the token does not verify with k: {exc}") from exc
            with self._lock:
                self._verified[cache_key] = claims
                self.vapid_tokens.append(token)
        now = time.time()
        if claims.get("aud") != self.url:
            raise _VapidError(f"aud must be this push service's origin {self.url}")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= now:
            raise _VapidError("the token has expired (or has no exp)")
        if exp > now + MAX_TOKEN_AHEAD_SECONDS + CLOCK_SKEW_SECONDS:
            raise _VapidError("exp is more than 24 hours ahead")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise _VapidError("sub must be a mailto: or https: contact")
        return claims

    def _refuse(
        self, status: int, reason: str | None, retry_after: float | None = None
    ) -> FakeResponse:
        self.refused += 1
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = {"code": status, "errno": 999, "error": phrase, "message": reason or phrase}
        headers = {"content-type": "application/json"}
        if retry_after is not None:
            headers["retry-after"] = str(int(retry_after))
        return FakeResponse(status, orjson.dumps(body), headers)

    def _control(self, request: FakeRequest) -> FakeResponse:
        if request.path == "/_fake/subscribe" and request.method == "POST":
            raw = orjson.loads(request.body) if request.body else {}
            key = raw.get("application_server_key") if isinstance(raw, dict) else None
            return FakeResponse(200, orjson.dumps(self.subscribe(key)))
        if request.path == "/_fake/stats":
            stats = {
                "received": self.received_count,
                "refused": self.refused,
                "vapid_tokens": len(self.vapid_tokens),
                "cpu_seconds": round(time.process_time(), 3),
            }
            return FakeResponse(200, orjson.dumps(stats))
        return self._refuse(404, "no such control")


def main(argv: list[str] | None = None) -> None:
    """Run the fake in this process until SIGINT/SIGTERM (for benchmarks)."""
    parser = argparse.ArgumentParser(prog="python -m pushgate.testing.fake_webpush")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = FakeWebPush(port=args.port)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(orjson.dumps({"url": server.url, "ca_file": str(server.ca_file)}).decode(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
