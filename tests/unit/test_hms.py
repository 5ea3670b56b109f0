"""HMS Push Kit: the token request, the message mapping, chunks, and answers mapped to
outcomes per token."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest

from pushgate.domain.credentials import HmsCredentials
from pushgate.domain.outcomes import (
    Delivered,
    Outcome,
    PermanentFailure,
    RetryLater,
    TokenInvalid,
)
from pushgate.domain.push_options import PushOptions
from pushgate.transports.base import Content, Target
from pushgate.transports.hms import (
    chunks,
    collapse_number,
    illegal_tokens,
    needs_new_token,
    outcomes,
    payload,
    send_request,
    token_request,
)
from pushgate.transports.http import ProviderResponse

NOW_MS = 1_700_000_000_000
CREDENTIALS = HmsCredentials.parse({"app_id": "104857600", "client_secret": "s3cr&t=+"})


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
        expires_ms=NOW_MS + 7_200_000,
        options=PushOptions(**options),
    )


def test_token_request_is_the_client_credentials_grant() -> None:
    request = token_request(CREDENTIALS, "https://oauth.example/oauth2/v3/token")
    assert request.url == "https://oauth.example/oauth2/v3/token"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["104857600"],
        "client_secret": ["s3cr&t=+"],
    }


def test_payload_maps_every_field() -> None:
    message = payload(
        content(
            data={"order": 7},
            image_url="https://img.example/a.png",
            deep_link="myapp://orders/7",
            sound="ping",
            badge=3,
            collapse_key="orders",
            priority="high",
        ),
        NOW_MS,
    )
    assert orjson.loads(message.pop("data")) == {
        "order": 7,
        "pushgate_notification_id": "42",
        "pushgate_deep_link": "myapp://orders/7",
    }
    assert message == {
        "android": {
            "urgency": "HIGH",
            "ttl": "7200s",
            "collapse_key": collapse_number("orders"),
            "notification": {
                "title": "Hello",
                "body": "World",
                "image": "https://img.example/a.png",
                "sound": "ping",
                "default_sound": False,
                "tag": "orders",
                "click_action": {"type": 1, "intent": "myapp://orders/7"},
            },
        }
    }


def test_payload_of_a_plain_notification() -> None:
    message = payload(content(title=None, priority="normal", sound="default"), NOW_MS)
    assert orjson.loads(message["data"]) == {"pushgate_notification_id": "42"}
    assert message["android"] == {
        "urgency": "NORMAL",
        "ttl": "7200s",
        "notification": {"body": "World", "default_sound": True, "click_action": {"type": 3}},
    }


def test_ttl_is_at_least_one_second_and_at_most_fifteen_days() -> None:
    assert payload(content(), NOW_MS + 10_000_000)["android"]["ttl"] == "1s"
    far = Content(1, 1, None, None, None, "m", "{}", NOW_MS, NOW_MS + 10**11)
    assert payload(far, NOW_MS)["android"]["ttl"] == f"{15 * 24 * 3600}s"


def test_collapse_numbers() -> None:
    assert collapse_number("7") == 7
    assert collapse_number("-1") == -1
    assert collapse_number("100") == 100
    assert 1 <= collapse_number("101") <= 100
    assert collapse_number("orders") == collapse_number("orders")
    assert all(1 <= collapse_number(f"key-{n}") <= 100 for n in range(500))


def test_send_request_lists_the_tokens() -> None:
    message = payload(content(), NOW_MS)
    request = send_request("https://push.example/", "104857600", message, ["a", "b"], "AT")
    assert request.url == "https://push.example/v1/104857600/messages:send"
    assert request.headers["authorization"] == "Bearer AT"
    assert orjson.loads(request.body) == {
        "validate_only": False,
        "message": {**message, "token": ["a", "b"]},
    }


def test_chunks_of_a_thousand() -> None:
    targets = [Target(n, f"t{n}") for n in range(2500)]
    parts = chunks(targets)
    assert [len(part) for part in parts] == [1000, 1000, 500]
    assert [t for part in parts for t in part] == targets


def answer(status: int, code: str, msg: str, headers: dict[str, str] | None = None):
    body = orjson.dumps({"code": code, "msg": msg, "requestId": "1"})
    return ProviderResponse(status, headers or {}, body)


TOKENS = ["a", "b", "c"]


def test_success_delivers_every_token() -> None:
    assert outcomes(answer(200, "80000000", "Success"), TOKENS) == [Delivered()] * 3


def test_partial_success_names_the_illegal_tokens() -> None:
    msg = orjson.dumps({"success": 1, "failure": 2, "illegal_tokens": ["a", "c"]}).decode()
    result = outcomes(answer(200, "80100000", msg), TOKENS)
    assert isinstance(result[0], TokenInvalid)
    assert result[0].reason.startswith("80100000 ")
    assert result[1] == Delivered()
    assert isinstance(result[2], TokenInvalid)


def test_illegal_tokens_grouped_by_cause() -> None:
    msg = '{"illegalTokens":{"noRight":["x"],"tokenFormatError":["y"]},"failure":2}'
    assert illegal_tokens(msg) == {"x", "y"}
    assert illegal_tokens("not json") == set()


@pytest.mark.parametrize(
    ("response", "kind", "starts"),
    [
        (answer(400, "80300007", "All the tokens are invalid"), TokenInvalid, "80300007 "),
        (answer(401, "80200003", "Oauth Token expired"), RetryLater, "80200003 "),
        (answer(401, "80200001", "Oauth authentication error"), RetryLater, "80200001 "),
        (answer(500, "81000001", "Internal error"), RetryLater, "81000001 "),
        (answer(503, "503", "Traffic control"), RetryLater, "503 Traffic control"),
        (ProviderResponse(502, {}, b"bad gateway"), RetryLater, "HTTP 502"),
        (answer(413, "80300008", "too large"), PermanentFailure, "80300008 "),
        (answer(400, "80100003", "Illegal payload"), PermanentFailure, "80100003 "),
        (answer(400, "80100013", "collapse_key"), PermanentFailure, "80100013 "),
        (
            answer(403, "80300002", "No permission"),
            PermanentFailure,
            "InvalidCertificate: 80300002 ",
        ),
    ],
)
def test_whole_request_answers(response: ProviderResponse, kind: type, starts: str) -> None:
    result: list[Outcome] = outcomes(response, TOKENS)
    assert len(result) == 3
    assert all(isinstance(r, kind) for r in result)
    assert result[0].reason.startswith(starts)  # type: ignore[union-attr]


def test_retry_after_is_kept() -> None:
    result = outcomes(answer(503, "503", "Traffic control", {"retry-after": "9"}), ["a"])
    assert result == [RetryLater("503 Traffic control", 9.0)]


def test_refused_access_token_is_dropped() -> None:
    assert needs_new_token(answer(401, "80200003", "expired"))
    assert needs_new_token(answer(200, "80200001", "auth"))
    assert not needs_new_token(answer(200, "80000000", "Success"))
    assert not needs_new_token(answer(503, "503", "Traffic control"))


def test_an_answer_that_is_not_push_kit_json_is_not_copied_into_reasons() -> None:
    [result, *_] = outcomes(ProviderResponse(502, {}, b"internal-only text"), TOKENS)
    assert result == RetryLater("HTTP 502")
