"""FCM HTTP v1: the signed assertion, the message mapping, and answers mapped to outcomes."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pushgate.domain.credentials import FcmCredentials
from pushgate.domain.outcomes import (
    Delivered,
    Outcome,
    PermanentFailure,
    RetryLater,
    TokenInvalid,
)
from pushgate.domain.push_options import PushOptions
from pushgate.transports.base import Content, Target
from pushgate.transports.fcm import (
    SCOPE,
    assertion,
    needs_new_token,
    outcome,
    payload,
    send_request,
    token_request,
)
from pushgate.transports.http import ProviderResponse

NOW_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def credentials(key: rsa.RSAPrivateKey) -> FcmCredentials:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return FcmCredentials.parse(
        {
            "service_account": {
                "type": "service_account",
                "project_id": "my-project-1",
                "client_email": "sender@my-project-1.iam.gserviceaccount.com",
                "private_key_id": "kid-123",
                "private_key": pem,
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        }
    )


def content(
    *, title: str | None = "Hello", data: dict[str, Any] | None = None, **options: Any
) -> Content:
    return Content(
        notification_id=42,
        account_id=1,
        app_key="app",
        event=None,
        title=title,
        message="World",
        data_json=orjson.dumps(data if data is not None else {}).decode(),
        created_ms=NOW_MS,
        expires_ms=NOW_MS + 3_600_000,
        options=PushOptions(**options),
    )


def test_assertion_is_signed_with_the_service_account_key(
    credentials: FcmCredentials, key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    token = assertion(credentials, now)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == "kid-123"
    claims = jwt.decode(
        token, key.public_key(), algorithms=["RS256"], audience=credentials.token_uri
    )
    assert claims == {
        "iss": "sender@my-project-1.iam.gserviceaccount.com",
        "scope": SCOPE,
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 3600,
    }


def test_token_request_is_a_form_post_to_token_uri(credentials: FcmCredentials) -> None:
    request = token_request(credentials, int(time.time()))
    assert request.method == "POST"
    assert request.url == "https://oauth2.googleapis.com/token"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.body.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert jwt.get_unverified_header(form["assertion"][0])["kid"] == "kid-123"


def test_payload_maps_every_field() -> None:
    message = payload(
        content(
            data={"order": 7, "text": "x", "nested": {"a": [1, 2]}},
            image_url="https://img.example/a.png",
            deep_link="https://example.com/orders/7",
            sound="ping.wav",
            badge=3,
            collapse_key="orders",
            priority="high",
        ),
        NOW_MS,
    )
    assert message == {
        "notification": {"title": "Hello", "body": "World", "image": "https://img.example/a.png"},
        "data": {
            "order": "7",
            "text": "x",
            "nested": '{"a":[1,2]}',
            "pushgate_notification_id": "42",
            "pushgate_deep_link": "https://example.com/orders/7",
        },
        "android": {
            "priority": "HIGH",
            "ttl": "3600s",
            "collapse_key": "orders",
            "notification": {"sound": "ping.wav", "tag": "orders"},
        },
        "apns": {
            "headers": {
                "apns-priority": "10",
                "apns-expiration": str((NOW_MS + 3_600_000) // 1000),
                "apns-collapse-id": "orders",
            },
            "payload": {"aps": {"sound": "ping.wav", "badge": 3, "mutable-content": 1}},
            "fcm_options": {"image": "https://img.example/a.png"},
        },
        "webpush": {
            "headers": {"TTL": "3600", "Urgency": "high", "Topic": "orders"},
            "fcm_options": {"link": "https://example.com/orders/7"},
        },
    }


def test_payload_of_a_plain_normal_priority_notification() -> None:
    message = payload(content(title=None, priority="normal"), NOW_MS)
    assert message["notification"] == {"body": "World"}
    assert message["data"] == {"pushgate_notification_id": "42"}
    assert message["android"] == {"priority": "NORMAL", "ttl": "3600s"}
    assert message["apns"]["headers"]["apns-priority"] == "5"
    assert "payload" not in message["apns"]
    assert message["webpush"] == {"headers": {"TTL": "3600", "Urgency": "normal"}}


def test_expired_notification_is_now_or_never() -> None:
    message = payload(content(), NOW_MS + 4_000_000)
    assert message["android"]["ttl"] == "0s"
    assert message["apns"]["headers"]["apns-expiration"] == "0"
    assert message["webpush"]["headers"]["TTL"] == "0"


def test_app_route_deep_link_and_odd_collapse_key() -> None:
    message = payload(content(deep_link="/orders/7", collapse_key="a key with spaces"), NOW_MS)
    assert message["data"]["pushgate_deep_link"] == "/orders/7"
    assert "fcm_options" not in message["webpush"]  # only https links
    assert "Topic" not in message["webpush"]["headers"]  # not a valid Web Push Topic


def test_send_request(credentials: FcmCredentials) -> None:
    request = send_request(
        "https://fcm.example/", credentials, content(), Target(1, 'tok"en'), "AT", NOW_MS
    )
    assert request.url == "https://fcm.example/v1/projects/my-project-1/messages:send"
    assert request.headers == {
        "authorization": "Bearer AT",
        "content-type": "application/json; charset=UTF-8",
    }
    body = orjson.loads(request.body)
    assert body == {"message": {"token": 'tok"en', **payload(content(), NOW_MS)}}


def error(status: int, message: str, code: str | None, **extra: Any) -> ProviderResponse:
    details: list[Any] = []
    if code is not None:
        details.append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        )
    details.extend(extra.get("details", []))
    names = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }
    body = {
        "error": {"code": status, "message": message, "status": names[status], "details": details}
    }
    return ProviderResponse(status, extra.get("headers", {}), orjson.dumps(body))


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (ProviderResponse(200, {}, b'{"name":"projects/p/messages/1"}'), Delivered()),
        (
            error(404, "Requested entity was not found.", "UNREGISTERED"),
            TokenInvalid("UNREGISTERED: Requested entity was not found."),
        ),
        (
            ProviderResponse(404, {}, b"not found"),
            TokenInvalid("UNREGISTERED: HTTP 404"),  # the body is not copied
        ),
        (
            error(403, "SenderId mismatch", "SENDER_ID_MISMATCH"),
            PermanentFailure("SENDER_ID_MISMATCH: SenderId mismatch"),
        ),
        (
            error(
                400,
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            ),
            TokenInvalid(
                "INVALID_ARGUMENT: The registration token is not a valid FCM registration token"
            ),
        ),
        (
            error(
                400,
                "Invalid value",
                None,
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [
                            {"field": "message.token", "description": "Invalid token"}
                        ],
                    }
                ],
            ),
            TokenInvalid("INVALID_ARGUMENT: Invalid value"),
        ),
        (
            error(400, "Message is too big", "INVALID_ARGUMENT"),
            PermanentFailure("INVALID_ARGUMENT: Message is too big"),
        ),
        (
            error(429, "Quota exceeded", "QUOTA_EXCEEDED", headers={"retry-after": "30"}),
            RetryLater("QUOTA_EXCEEDED: Quota exceeded", 30.0),
        ),
        (
            error(503, "The service is unavailable.", "UNAVAILABLE"),
            RetryLater("UNAVAILABLE: The service is unavailable."),
        ),
        (
            error(500, "Internal error", "INTERNAL", headers={"retry-after": "5"}),
            RetryLater("INTERNAL: Internal error", 5.0),
        ),
        (
            ProviderResponse(502, {}, b"<html>bad gateway</html>"),
            RetryLater("HTTP 502"),
        ),
        (
            error(401, "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"),
            PermanentFailure(
                "InvalidCertificate: THIRD_PARTY_AUTH_ERROR: Auth error from APNS or "
                "Web Push Service"
            ),
        ),
        (
            error(403, "Permission denied", None),
            PermanentFailure("InvalidCertificate: PERMISSION_DENIED: Permission denied"),
        ),
    ],
)
def test_outcome(response: ProviderResponse, expected: Outcome) -> None:
    assert outcome(response) == expected


def test_refused_access_token_is_retried_with_a_new_one() -> None:
    response = error(401, "Request had invalid authentication credentials.", None)
    result = outcome(response)
    assert isinstance(result, RetryLater)
    assert result.reason.startswith("UNAUTHENTICATED: Request had invalid authentication")
    assert needs_new_token(response)
    assert not needs_new_token(error(401, "APNs auth", "THIRD_PARTY_AUTH_ERROR"))
    assert not needs_new_token(error(503, "busy", "UNAVAILABLE"))
