"""Insider mobile push (shared/reference/insider-mobile-push-v2.txt):
``POST /api/v2/notification/user``.

This module only translates: the JSON body into one ``UserSend`` per notification (the core's
``services/user_sends.py`` decides who gets what), and the results into the vendor's answer.
docs/insider.md has the field mapping and the limits.

- ``api_key`` in the body is an API key of kind ``insider-mobile`` (its IP allowlist and
  quota apply); a wrong key is a 401 and nothing is executed.
- Errors are ``{"error": <code>, "message": <text>}``. The reference's 400s keep their exact
  strings; a wrong type is ``invalid_payload`` with the reference's message and a ``detail``
  that names the field; other bad input gets the closest code with a message that says what
  to fix. When the core cannot store the notifications: the reference's 500.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.api.dialects.base import (
    Face,
    KeyAuthenticator,
    KeySource,
    face_route,
    json_response,
)
from pushgate.domain.errors import Conflict, InvalidInput, PushgateError
from pushgate.domain.push_options import PlatformOptions, PushOptions
from pushgate.domain.rich_push import RICH_KINDS, RichItem, RichPush
from pushgate.domain.subscribers import Identifiers, parse_identifiers
from pushgate.domain.templates import MAX_MESSAGE_CHARS
from pushgate.services.api_keys import ApiKeyService
from pushgate.services.pipeline import PipelineUnavailable
from pushgate.services.send import Campaign, SendCommand
from pushgate.services.subscriber_reports import SubscriberReports
from pushgate.services.user_sends import Outcome, UserSend, UserSendService
from pushgate.throttle import AuthThrottle
from pushgate.web.body import parse_json_object, read_body
from pushgate.web.documents import Document

PATH = "/api/v2/notification/user"
KIND = "insider-mobile"
MAX_NOTIFICATIONS = 20
MAX_ITEMS = 20
MAX_TTL_SECONDS = 28 * 86_400
MAX_TITLE_CHARS = 200
MAX_ATTRIBUTES = 100
DEEP_LINK_KEYS = ("ins_dl_internal", "ins_dl_external", "ins_dl_url_scheme", "ins_dl_json")

PARSE_MESSAGE = "Can't parse payload, check your keys and data types"
EMPTY_MESSAGE = "'notifications' is empty, add some notification objects"
TOO_MANY_MESSAGE = "'notifications' can't have more than 20 objects"
APS_MESSAGE = "deepLink can't contain 'aps' key"
NEGATIVE_MESSAGE = "camp_id' and/or 'channel_id' must be greater than zero"
PUSH_TYPE_MESSAGE = "'advanced_push_type' must be either Carousel or Slider"
CERTIFICATE_MESSAGE = (
    "You do not have a validated certificate. Please check Certificate section under "
    "Insider's Settings."
)
UNAVAILABLE_MESSAGE = "Insider API services might temporarily be unavailable. Try again."

# The answer's error classes, by the core's outcome.
CLASSES: dict[Outcome, str] = {
    "no_user": "NoUserFound",
    "opted_out": "OptOut",
    "unregistered": "Unregistered",
    "capped": "UserGloballyCapped",
    "invalid_certificate": "InvalidCertificate",
}

_CODES = {
    400: "invalid_payload",
    401: "unauthorized",
    403: "ip_not_allowed",
    404: "not_found",
    405: "method_not_allowed",
    409: "invalid_payload",
    413: "invalid_payload",
    415: "invalid_payload",
    429: "rate_limit_exceeded",
}


def error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """Any error of this face (the core's, a 404, a 405...) in the vendor's shape."""
    if status >= 500:
        return json_response(
            {"error": "internal_error", "message": UNAVAILABLE_MESSAGE}, 500, headers
        )
    return json_response(
        {"error": _CODES.get(status, "invalid_payload"), "message": message}, status, headers
    )


FACE = Face("insider-mobile", error, ("/api/v2/notification/",))


class Rejected(Exception):  # noqa: N818 - the request is rejected
    """A 400 with one of the reference's error codes."""

    def __init__(self, code: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    def response(self) -> Response:
        body = {"error": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return json_response(body, 400)


def _wrong_type(detail: str) -> Rejected:
    return Rejected("invalid_payload", PARSE_MESSAGE, detail)


# -- reading the body ----------------------------------------------------------------------


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong_type(f"{where} must be an object")
    return value


def _string(body: Mapping[str, Any], name: str, where: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise Rejected("invalid_payload", f"{where}.{name} is required (a string)")
        return None
    if not isinstance(value, str):
        raise _wrong_type(f"{where}.{name} must be a string")
    return value


def _integer(body: Mapping[str, Any], name: str, where: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(f"{where}.{name} must be an integer")
    return value


def _boolean(body: Mapping[str, Any], name: str, where: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _wrong_type(f"{where}.{name} must be true or false")
    return value


def _https(value: str | None, where: str) -> str | None:
    if value is not None and not value.startswith("https://"):
        raise Rejected("invalid_payload", f"{where} must be an https:// URL")
    return value


def _has_aps(value: Any) -> bool:
    """An ``aps`` key anywhere: in the object, nested, or inside JSON text of a value."""
    if isinstance(value, dict):
        return "aps" in value or any(_has_aps(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_aps(v) for v in value)
    if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
        try:
            return _has_aps(orjson.loads(value))
        except orjson.JSONDecodeError:
            return False
    return False


def _links(value: Any, where: str, *, item: bool) -> dict[str, str] | None:
    """A deep-link object: the reference's keys (a carousel item also takes custom keys),
    string values; the reference's keys take https:// URLs only."""
    if value is None:
        return None
    links = _object(value, where)
    if _has_aps(links):
        raise Rejected("blacklisted_deeplink", APS_MESSAGE)
    for key, link in links.items():
        if not item and key not in DEEP_LINK_KEYS:
            raise Rejected(
                "invalid_payload",
                f"{where}: unknown deep link key {key!r}; use {', '.join(DEEP_LINK_KEYS)}",
            )
        if not isinstance(link, str):
            raise _wrong_type(f"{where}.{key} must be a string")
        if key in DEEP_LINK_KEYS and not link.startswith("https://"):
            raise Rejected("invalid_payload", f"{where}.{key} must start with https://")
    return links


def _rich(value: Any, where: str) -> RichPush | None:
    if value is None:
        return None
    payload = _object(value, where)
    kind = _string(payload, "advanced_push_type", where)
    if kind is None or kind.lower() not in RICH_KINDS:
        raise Rejected("invalid_advanced_push_type", PUSH_TYPE_MESSAGE)
    raw_items = payload.get("advanced_push_items")
    if not isinstance(raw_items, list):
        raise _wrong_type(f"{where}.advanced_push_items must be an array")
    if not 0 < len(raw_items) <= MAX_ITEMS:
        raise Rejected(
            "invalid_payload",
            f"{where}.advanced_push_items must hold 1 to {MAX_ITEMS} items",
        )
    items = []
    for n, raw in enumerate(raw_items):
        at = f"{where}.advanced_push_items[{n}]"
        entry = _object(raw, at)
        item_id = _integer(entry, "id", at)
        if item_id is None:
            raise Rejected("invalid_payload", f"{at}.id is required (an integer)")
        image = _https(_string(entry, "image_url", at, required=True), f"{at}.image_url")
        items.append(
            RichItem(
                id=item_id,
                image_url=image or "",
                headline=_string(entry, "headline", at, required=True) or "",
                description=_string(entry, "description", at, required=True) or "",
                links=_links(entry.get("deep_links"), f"{at}.deep_links", item=True) or {},
            )
        )
    return RichPush(kind.lower(), tuple(items))  # type: ignore[arg-type]


def _platform(value: Any, where: str, *, ios: bool) -> tuple[PlatformOptions | None, str | None]:
    """The platform's overrides, and its ``ins_dl_*`` link to open on tap (the first one)."""
    if value is None:
        return None, None
    block = _object(value, where)
    links = _links(block.get("deep_link"), f"{where}.deep_link", item=False)
    sound = _string(block, "sound", where)
    if ios:
        thread = block.get("thread-id")
        if thread is not None and (isinstance(thread, bool) or not isinstance(thread, int | str)):
            raise _wrong_type(f"{where}.thread-id must be an integer or a string")
        badge = _integer(block, "badge", where)
        if badge is not None and badge < 0:
            raise Rejected("invalid_payload", f"{where}.badge must be 0 or more")
        options = PlatformOptions(
            sound=sound,
            badge=badge,
            thread_id=None if thread is None else str(thread),
            mutable_content=_boolean(block, "mutable-content", where),
            content_available=_boolean(block, "content-available", where),
            silent=_boolean(block, "deliver_silently", where),
            links=links,
        )
    else:
        channel = _integer(block, "channel_id", where)
        if channel is not None and channel <= 0:
            raise Rejected("negative_integer", NEGATIVE_MESSAGE)
        options = PlatformOptions(
            sound=sound, channel_id=None if channel is None else str(channel), links=links
        )
    return options, next(iter((links or {}).values()), None)


def _notification(raw: Any, n: int) -> tuple[Identifiers, dict[str, Any], dict[str, Any]]:
    """(identifiers, the notification's SendCommand fields, its identifiers as given)."""
    where = f"notifications[{n}]"
    body = _object(raw, where)
    given = _object(body.get("identifiers"), f"{where}.identifiers")
    if not given:
        raise Rejected("invalid_payload", f"{where}.identifiers must name the user, e.g. email")
    for key, value in given.items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise _wrong_type(f"{where}.identifiers.{key} must be a string")
    identifiers = parse_identifiers(given, field=f"{where}.identifiers", lenient=True)
    camp_id = _integer(body, "camp_id", where)
    if camp_id is not None and camp_id <= 0:
        raise Rejected("negative_integer", NEGATIVE_MESSAGE)
    camp_name = _string(body, "camp_name", where)
    title = _string(body, "title", where, required=True) or ""
    message = _string(body, "message", where, required=True) or ""
    if not 0 < len(title) <= MAX_TITLE_CHARS:
        raise Rejected(
            "invalid_payload", f"{where}.title must be 1 to {MAX_TITLE_CHARS} characters"
        )
    if not 0 < len(message) <= MAX_MESSAGE_CHARS:
        raise Rejected(
            "invalid_payload", f"{where}.message must be 1 to {MAX_MESSAGE_CHARS} characters"
        )
    image = _https(_string(body, "image_url", where), f"{where}.image_url")
    ttl = _integer(body, "ttl", where)
    if ttl is not None and not 0 < ttl <= MAX_TTL_SECONDS:
        raise Rejected("invalid_payload", f"{where}.ttl is 1 to {MAX_TTL_SECONDS} seconds")
    _boolean(body, "check_optin", where)
    rich = _rich(body.get("advanced_push_payload"), f"{where}.advanced_push_payload")
    android, android_link = _platform(body.get("android"), f"{where}.android", ios=False)
    ios, ios_link = _platform(body.get("ios"), f"{where}.ios", ios=True)
    try:
        options = PushOptions(
            image_url=image,
            deep_link=android_link or ios_link,
            rich=rich,
            ios=ios,
            android=android,
        )
    except InvalidInput as exc:
        raise Rejected("invalid_payload", f"{where}: {exc.message}") from exc
    fields: dict[str, Any] = {
        "title": title,
        "message": message,
        "options": options,
        "ttl_seconds": ttl,
        "campaign": None
        if camp_id is None
        else Campaign(str(camp_id), camp_name[:200] if camp_name else None),
    }
    return identifiers, fields, given


def _attributes(body: Mapping[str, Any]) -> list[str]:
    value = body.get("report_attributes")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise _wrong_type("report_attributes must be an array of strings")
    if len(value) > MAX_ATTRIBUTES:
        raise Rejected("invalid_payload", f"report_attributes holds at most {MAX_ATTRIBUTES} names")
    return list(dict.fromkeys(value))


class InsiderMobileRouter:
    def __init__(
        self,
        keys: ApiKeyService,
        throttle: AuthThrottle,
        user_sends: UserSendService,
        reports: SubscriberReports,
        max_body_bytes: int,
        accepted: Callable[[int], None] = lambda _: None,
    ) -> None:
        """``accepted(notification_id)`` is called for each notification it accepted."""
        self._auth = KeyAuthenticator(
            KIND,
            KeySource(field="api_key"),
            keys,
            throttle,
            "Invalid api_key: give an Insider mobile API key of this app in the body's api_key",
        )
        self._sends = user_sends
        self._reports = reports
        self._limit = max_body_bytes
        self._accepted = accepted

    async def notify(self, request: Request) -> Response:
        raw = await read_body(request, self._limit)
        try:
            body = parse_json_object(raw)
        except InvalidInput as exc:
            return Rejected("invalid_payload", PARSE_MESSAGE, exc.message).response()
        if body.get("api_key") is not None and not isinstance(body.get("api_key"), str):
            return _wrong_type("api_key must be a string").response()
        principal = await self._auth.principal(request, Document("json", body))
        app = principal.app
        if app is None:  # pragma: no cover - insider-mobile keys always have an app
            raise PushgateError("This key has no app")
        try:
            attributes = _attributes(body)
            raw_list = body.get("notifications")
            if raw_list is None or raw_list == []:
                raise Rejected("invalid_notifications", EMPTY_MESSAGE)
            if not isinstance(raw_list, list):
                raise _wrong_type("notifications must be an array")
            if len(raw_list) > MAX_NOTIFICATIONS:
                raise Rejected("invalid_notifications", TOO_MANY_MESSAGE)
            parsed = [_notification(item, n) for n, item in enumerate(raw_list)]
            check_optin = any(
                isinstance(item, dict) and item.get("check_optin") is True for item in raw_list
            )
        except Rejected as rejected:
            return rejected.response()
        except InvalidInput as exc:
            return Rejected("invalid_payload", exc.message).response()
        items = [
            UserSend(identifiers, SendCommand(app=app, **fields))
            for identifiers, fields, _ in parsed
        ]
        try:
            results = await self._sends.send(app, items)
        except PipelineUnavailable:
            return error(UNAVAILABLE_MESSAGE, 500)
        except Conflict as exc:
            return Rejected("invalid_payload", exc.message).response()
        sent = [r for r in results if r.outcome == "sent"]
        for result in sent:
            self._accepted(result.notification_id or 0)
        if not sent and any(r.outcome == "invalid_certificate" for r in results):
            return Rejected("invalid_certificate", CERTIFICATE_MESSAGE).response()
        reports = iter(
            await self._reports.report(
                [(r.subscriber_id or 0, None if r.device is None else r.device.id) for r in sent],
                attributes,
            )
        )
        successes: list[dict[str, Any]] = []
        errors: dict[str, list[dict[str, Any]]] = {}
        for (_, _, given), result in zip(parsed, results, strict=True):
            if result.outcome == "sent":
                successes.append({**given, **next(reports)})
            else:
                errors.setdefault(CLASSES[result.outcome], []).append(given)
        answer: dict[str, Any] = {"successes": successes, "errors": errors}
        if check_optin:
            answer["optin_delivery_count"] = len(sent)
        return json_response(
            answer,
            200,
            {"X-Pushgate-Notification-Ids": ",".join(str(r.notification_id) for r in sent)},
        )

    def routes(self) -> list[Route]:
        return [face_route(PATH, FACE, "POST", self.notify)]
