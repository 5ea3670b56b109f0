"""A local APNs: HTTP/2 over TLS (ALPN ``h2``) that checks requests the way APNs does.

It mints token-auth credentials (a P-256 key with its key id and team id), verifies each
request's provider JWT (ES256, ``kid``, ``iss``, ``iat`` within the last hour), the path
``/3/device/<hex token>``, ``apns-topic``, ``apns-push-type``, ``apns-priority``, the other
``apns-*`` headers and the JSON payload (with ``aps``, at most 4096 bytes), answers like APNs
(200 with ``apns-id``; errors as ``{"reason": ...}``), and records what it received.

    with FakeApns() as apns:
        credentials = apns.credentials(topic="com.example.app")  # upload these for the app
        sender = Http2Sender(ca_file=apns.ca_file)
        transport = ApnsTransport(source, sender, base_url=apns.url)
        ...
        assert apns.wait_for(1)
        assert apns.requests[0].payload["aps"]["alert"]["title"] == "Hello"

Faults on demand: ``fail_next`` (an APNs error answer), ``drop_next`` (close the connection
without answering), ``unregister`` (410 ``Unregistered`` from then on), ``send_goaway`` /
``goaway_after`` (GOAWAY: requests already received are answered, later ones refused, then the
connection closes). ``python -m pushgate.testing.fake_apns --port N`` runs one in the
foreground (for benchmarks) and prints its credentials and CA file as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import re
import secrets
import ssl
import string
import sys
import time
import uuid
from typing import Any, cast

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from hpack import NeverIndexedHeaderTuple

from pushgate.testing.fake_h2 import received, server_h2
from pushgate.testing.fake_provider import FakeProvider
from pushgate.testing.fake_server import BackgroundServer

MAX_PAYLOAD_BYTES = 4096
WRITE_EVERY = 64  # answers per write at most, so the client reads some while we go on
TOKEN_MAX_AGE_SECONDS = 3600
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
    }
)
_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DEFAULT_REASONS = {
    400: "BadDeviceToken",
    403: "InvalidProviderToken",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_ALPHABET = string.ascii_uppercase + string.digits
_APNS_ID_PREFIX = str(uuid.uuid4()).upper()[:24]  # apns-id: this prefix and a counter
_apns_ids = itertools.count(1)


@dataclasses.dataclass(frozen=True, slots=True)
class ApnsRequest:
    """One request as received, with the status it was answered (0: dropped unanswered)."""

    token: str
    headers: dict[str, str]  # lower-case names, pseudo-headers included
    payload: dict[str, Any]  # {} when the body was not a JSON object
    jwt: str
    stream_id: int
    connection_id: int
    received_at: float  # time.time()
    status: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Key:
    key_id: str
    team_id: str
    topic: str
    public_key: ec.EllipticCurvePublicKey


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


class FakeApns(BackgroundServer, FakeProvider[ApnsRequest]):
    """See the module docstring. ``fail_next(status, reason=...)`` answers ``{"reason":
    reason}``, by default: 400 BadDeviceToken, 403 InvalidProviderToken, 404 BadPath, 405
    MethodNotAllowed, 410 Unregistered, 413 PayloadTooLarge, 429 TooManyRequests, 500
    InternalServerError, 503 ServiceUnavailable (other statuses: InternalServerError).
    ``received`` (``requests``) records every request with the status it was answered, faults
    included; with ``keep_requests=False`` only ``received_count`` counts them."""

    alpn = ("h2",)

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 1000,
        keep_requests: bool = True,
        tls: bool = True,
        port: int = 0,
    ) -> None:
        super().__init__(tls=tls, port=port)
        FakeProvider.__init__(self, keep_records=keep_requests)
        self.max_concurrent_streams = max_concurrent_streams
        self._keys: dict[str, _Key] = {}
        self._verified: dict[str, tuple[_Key, int]] = {}  # jwt -> (key, iat)
        self._jwts: set[str] = set()
        self._goaway_countdown: int | None = None
        self._connection_ids = itertools.count(1)
        self._connections: set[_ApnsConnection] = set()
        self.connection_count = 0

    # -- what a test sets up -------------------------------------------------------------

    def credentials(
        self, topic: str = "com.example.app", environment: str = "sandbox"
    ) -> dict[str, Any]:
        """New token-auth credentials this fake accepts: the dict a user uploads for "ios"."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_id = "".join(secrets.choice(_ALPHABET) for _ in range(10))
        team_id = "".join(secrets.choice(_ALPHABET) for _ in range(10))
        with self._lock:
            self._keys[key_id] = _Key(key_id, team_id, topic, key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "key_id": key_id,
            "team_id": team_id,
            "topic": topic,
            "environment": environment,
            "private_key": pem,
        }

    def unregister(self, address: str) -> None:
        """Answer 410 ``Unregistered`` to sends to this device token from now on."""
        super().unregister(address.lower())

    def goaway_after(self, count: int) -> None:
        """After answering ``count`` more requests, send GOAWAY on that request's connection."""
        with self._lock:
            self._goaway_countdown = count

    def send_goaway(self) -> None:
        """Send GOAWAY on every open connection now (requests received so far are answered,
        later ones refused; each connection closes once its last answer is out)."""

        async def goaway() -> None:
            for connection in list(self._connections):
                connection.goaway()

        self.call(goaway())

    def drop_connections(self) -> None:
        """Close every open connection now, answering nothing more."""

        async def drop() -> None:
            for connection in list(self._connections):
                connection.drop()

        self.call(drop())

    # -- what a test reads ---------------------------------------------------------------

    @property
    def requests(self) -> list[ApnsRequest]:
        """Every request received, in order (the same as ``received``)."""
        return self.received

    @property
    def delivered(self) -> list[ApnsRequest]:
        """The requests answered 200."""
        return [request for request in self.received if request.status == 200]

    @property
    def distinct_jwts(self) -> int:
        with self._lock:
            return len(self._jwts)

    # -- serving -------------------------------------------------------------------------

    async def _start_server(self, ssl_context: ssl.SSLContext | None) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: _ApnsConnection(self), "127.0.0.1", self._port, ssl=ssl_context, backlog=1024
        )

    async def _shutdown(self) -> None:
        for connection in list(self._connections):
            connection.drop()

    def _answered(self, status: int) -> bool:
        """Count an answer; True when it is the one after which to send GOAWAY."""
        if self._goaway_countdown is None:
            return False
        with self._lock:
            if self._goaway_countdown is None:
                return False
            self._goaway_countdown -= 1
            if self._goaway_countdown > 0:
                return False
            self._goaway_countdown = None
            return True

    def _record(self, request: ApnsRequest) -> None:
        if request.jwt and request.jwt not in self._jwts:
            with self._lock:
                self._jwts.add(request.jwt)
        super()._record(request)

    @staticmethod
    def _parse(headers: dict[str, str], body: bytes) -> tuple[str, str, dict[str, Any]]:
        """(token, jwt, payload) as far as they can be read; never raises."""
        token = bearer = ""
        payload: dict[str, Any] = {}
        path = headers.get(":path", "")
        if path.startswith("/3/device/"):
            token = path[len("/3/device/") :]
        authorization = headers.get("authorization", "")
        if authorization.startswith("bearer "):
            bearer = authorization[len("bearer ") :]
        try:
            value = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            payload = value
        return token, bearer, payload

    def _check(
        self, headers: dict[str, str], body: bytes, token: str, bearer: str, payload: dict[str, Any]
    ) -> None:
        """Raise ``_Reject`` with APNs's answer unless APNs would accept the request."""
        path = headers.get(":path", "")
        authorization = headers.get("authorization", "")
        if headers.get(":method") != "POST":
            raise _Reject(405, "MethodNotAllowed")
        if not path.startswith("/3/device/"):
            raise _Reject(404, "BadPath")
        if not token:
            raise _Reject(400, "MissingDeviceToken")
        if not _TOKEN.fullmatch(token) or len(token) % 2:
            raise _Reject(400, "BadDeviceToken")
        key = self._check_jwt(bearer, authorization)
        topic = headers.get("apns-topic")
        if not topic:
            raise _Reject(400, "MissingTopic")
        if topic != key.topic:
            other_app = any(known.topic == topic for known in self._keys.values())
            raise _Reject(400, "DeviceTokenNotForTopic" if other_app else "TopicDisallowed")
        push_type = headers.get("apns-push-type")
        if push_type not in PUSH_TYPES:
            raise _Reject(400, "InvalidPushType")
        priority = headers.get("apns-priority", "10")
        if priority not in ("5", "10") or (push_type == "background" and priority != "5"):
            raise _Reject(400, "BadPriority")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise _Reject(400, "BadExpirationDate")
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > 64:
            raise _Reject(400, "BadCollapseId")
        message_id = headers.get("apns-id")
        if message_id is not None and not _UUID.fullmatch(message_id):
            raise _Reject(400, "BadMessageId")
        if not body:
            raise _Reject(400, "PayloadEmpty")
        if len(body) > MAX_PAYLOAD_BYTES:
            raise _Reject(413, "PayloadTooLarge")
        if not isinstance(payload.get("aps"), dict):
            raise _Reject(400, "BadPayload")

    def _check_jwt(self, bearer: str, authorization: str) -> _Key:
        if not authorization:
            raise _Reject(403, "MissingProviderToken")
        if not bearer:
            raise _Reject(403, "InvalidProviderToken")
        now = int(time.time())
        known = self._verified.get(bearer)
        if known is None:
            try:
                header = jwt.get_unverified_header(bearer)
                key = self._keys.get(str(header.get("kid")))
                if key is None or header.get("alg") != "ES256":
                    raise _Reject(403, "InvalidProviderToken")
                claims = jwt.decode(
                    bearer,
                    key.public_key,
                    algorithms=["ES256"],
                    options={"verify_iat": False, "require": ["iss", "iat"]},
                )
            except jwt.PyJWTError as exc:
                raise _Reject(403, "InvalidProviderToken") from exc
            iat = claims.get("iat")
            if claims.get("iss") != key.team_id or not isinstance(iat, int):
                raise _Reject(403, "InvalidProviderToken")
            known = self._verified[bearer] = (key, iat)
        key, iat = known
        if iat > now + 60:
            raise _Reject(403, "InvalidProviderToken")
        if iat < now - TOKEN_MAX_AGE_SECONDS:
            raise _Reject(403, "ExpiredProviderToken")
        return key

    def _answer(
        self, headers: dict[str, str], body: bytes, token: str, bearer: str, payload: dict[str, Any]
    ) -> tuple[int, str, float | None]:
        """(status, reason, retry_after) for one received request."""
        fault = self._faults.take()
        if fault is not None:
            reason = fault.reason or _DEFAULT_REASONS.get(fault.status, "InternalServerError")
            return fault.status, reason, fault.retry_after
        try:
            self._check(headers, body, token, bearer, payload)
        except _Reject as reject:
            return reject.status, reject.reason, None
        if self._gone(token.lower()):
            return 410, "Unregistered", None
        return 200, "", None


class _ApnsConnection(asyncio.Protocol):
    def __init__(self, server: FakeApns) -> None:
        self._server = server
        self._id = next(server._connection_ids)
        self._h2 = server_h2(server.max_concurrent_streams)
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, tuple[dict[str, str], bytearray]] = {}
        self._goaway_last: int | None = None
        self._unflushed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        server = self._server
        server._connections.add(self)
        with server._lock:
            server.connection_count += 1
        self._transport.write(self._h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        h2 = self._h2
        events = received(h2, data)
        if events is None:
            self._flush()
            self.drop()
            return
        for event in events:
            kind = type(event)
            if kind is RequestReceived:
                assert isinstance(event, RequestReceived)
                stream_id: int = event.stream_id
                if self._goaway_last is not None and stream_id > self._goaway_last:
                    h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
                    h2.stream_closed(stream_id)
                    continue
                headers = {
                    bytes(name).decode("latin-1"): bytes(value).decode("utf-8", "replace")
                    for name, value in event.headers or ()
                }
                self._pending[stream_id] = (headers, bytearray())
            elif kind is DataReceived:
                assert isinstance(event, DataReceived)
                pending = self._pending.get(event.stream_id)
                if pending is not None and event.data:
                    pending[1].extend(event.data)
                if event.flow_controlled_length:
                    h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif kind is StreamEnded:
                if not self._respond(event.stream_id):  # type: ignore[attr-defined]
                    return
            elif kind is StreamReset:
                self._pending.pop(event.stream_id, None)  # type: ignore[attr-defined]
                h2.stream_closed(event.stream_id)  # type: ignore[attr-defined]
            elif kind is ConnectionTerminated:
                self._flush()
                self.drop()
                return
        self._flush()
        if self._goaway_last is not None and not self._pending:
            self.drop()

    def _respond(self, stream_id: int) -> bool:
        """Answer one request; False when the connection was dropped instead."""
        pending = self._pending.pop(stream_id, None)
        if pending is None:
            return True
        headers, raw = pending
        body = bytes(raw)
        server = self._server
        token, bearer, payload = server._parse(headers, body)
        status, reason, retry_after = server._answer(headers, body, token, bearer, payload)
        server._record(
            ApnsRequest(token, headers, payload, bearer, stream_id, self._id, time.time(), status)
        )
        if status == 0:
            self._flush()
            self.drop()
            return False
        h2 = self._h2
        apns_id = headers.get("apns-id") or f"{_APNS_ID_PREFIX}{next(_apns_ids):012X}"
        if status == 200:
            h2.send_headers(
                stream_id,
                [(b":status", b"200"), NeverIndexedHeaderTuple(b"apns-id", apns_id.encode())],
                end_stream=True,
            )
        else:
            error: dict[str, Any] = {"reason": reason}
            if status == 410:
                gone_since = server._gone_since(token.lower())
                error["timestamp"] = gone_since or int(time.time() * 1000)
            answer = orjson.dumps(error)
            response = [
                (b":status", str(status).encode()),
                NeverIndexedHeaderTuple(b"apns-id", apns_id.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer)).encode()),
            ]
            if retry_after is not None:
                response.append((b"retry-after", f"{retry_after:g}".encode()))
            h2.send_headers(stream_id, response)
            h2.send_data(stream_id, answer, end_stream=True)
        h2.stream_closed(stream_id)
        self._unflushed += 1
        if self._unflushed >= WRITE_EVERY:
            self._flush()
        if server._answered(status):
            # (later requests of this read may be below the GOAWAY's last stream id: the
            # connection closes at the end of the read if nothing is left to answer)
            self.goaway(close_if_idle=False)
        return True

    def goaway(self, *, close_if_idle: bool = True) -> None:
        """GOAWAY: answer what was received, refuse newer streams, then close."""
        if self._goaway_last is not None or self._transport is None:
            return
        self._goaway_last = self._h2.highest_inbound_stream_id
        self._h2.graceful_goaway(self._goaway_last)
        self._flush()
        if close_if_idle and not self._pending:
            self.drop()

    def drop(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _flush(self) -> None:
        self._unflushed = 0
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; print the credentials and CA file as one JSON line."""
    parser = argparse.ArgumentParser(description="A local fake APNs for benchmarks and demos.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--topic", default="com.example.app")
    parser.add_argument("--max-concurrent-streams", type=int, default=1000)
    parser.add_argument("--keep-requests", action="store_true", help="keep every request")
    args = parser.parse_args(argv)
    server = FakeApns(
        max_concurrent_streams=args.max_concurrent_streams,
        keep_requests=args.keep_requests,
        port=args.port,
    )
    with server:
        info = {
            "url": server.url,
            "ca_file": str(server.ca_file),
            "credentials": server.credentials(topic=args.topic),
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(1.0)
                sys.stderr.write(f"received {server.received_count}\n")
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
