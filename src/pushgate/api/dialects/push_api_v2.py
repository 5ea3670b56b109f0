"""Push API v2 (shared/reference/push-api-v2-xml-json.txt): ``POST /api/v2/push``, one
notification to one user, in JSON or XML.

This module only translates: the body (``web/documents.py``; XML in the DataContract style of
``web/datacontract.py``) into a ``SendCommand`` to one subscriber of the key's app, and the
result or error into the requested format. docs/push-api-v2.md has the details.

- Format of the request: ``Content-Type`` ``application/json`` or ``application/xml`` /
  ``text/xml``; none is XML. An XML root must declare
  ``xmlns:i="http://www.w3.org/2001/XMLSchema-instance"``.
- Format of the answer: ``?format=xml|json``, else the request's.
- ``CompanyId`` (the account) and ``IntegrationKey`` (an API key of kind ``push-api-v2``)
  authenticate; either wrong is 401.
- Status codes: 200, 400 (missing or invalid parameters), 401, 405 (another method or
  endpoint), and 429 past the key's quota. Errors have one shape in both formats:
  ``{"ResponseStatus": {"ErrorCode", "Message", "Errors": [{"ErrorCode", "FieldName",
  "Message"}]}}`` (XML: ``<ErrorResponse>`` with the same elements, alphabetically).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.api.dialects.base import ALL_METHODS, Face, Faces, KeyAuthenticator, KeySource
from pushgate.domain.audience import all_of_user
from pushgate.domain.errors import Conflict, InvalidInput, PushgateError
from pushgate.domain.push_options import PushOptions
from pushgate.domain.subscribers import Identifiers, parse_identifiers
from pushgate.domain.templates import MAX_MESSAGE_CHARS
from pushgate.services.api_keys import ApiKeyService
from pushgate.services.pipeline import PipelineUnavailable
from pushgate.services.send import SendCommand, SendService
from pushgate.services.user_sends import UserSendService
from pushgate.throttle import AuthThrottle
from pushgate.web.body import read_body
from pushgate.web.datacontract import fields, root_declares_xsi, to_xml
from pushgate.web.documents import Document, Kind, media_kind, parse_document

PATH = "/api/v2/push"
KIND = "push-api-v2"
NAMESPACE = "http://schemas.datacontract.org/2004/07/Pushgate.PushApi"
MAX_TITLE_CHARS = 200
MAX_EXPIRY_SECS = 28 * 86_400
STRINGS = ("UserId", "UserEmail", "UserExternalId", "Title", "Body", "IntegrationKey")
INTEGERS = ("ExpirySecs", "CompanyId")
BOOLEANS = ("Sound",)
IDENTIFIERS = {"UserId": "user_id", "UserEmail": "email", "UserExternalId": "external_id"}

Format = Literal["json", "xml"]
# The format this request's answers are written in (for errors raised anywhere).
_FORMAT: ContextVar[Format] = ContextVar("push_api_v2_format", default="xml")

_CODES = {
    400: "InvalidParameter",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
}


@dataclass(frozen=True, slots=True)
class FieldError:
    code: str
    field: str
    message: str


class Problem(Exception):  # noqa: N818 - it is what the answer reports
    def __init__(
        self, status: int, code: str, message: str, errors: tuple[FieldError, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors


def _answer(
    body: Mapping[str, Any],
    status: int,
    fmt: Format,
    root: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    if fmt == "json":
        return Response(orjson.dumps(body), status, media_type="application/json", headers=headers)
    xml = to_xml(root, body, NAMESPACE, {"Errors": "ResponseError"})
    return Response(xml, status, media_type="application/xml", headers=headers)


def problem_response(
    problem: Problem, fmt: Format, headers: Mapping[str, str] | None = None
) -> Response:
    status = {
        "ResponseStatus": {
            "ErrorCode": problem.code,
            "Message": problem.message,
            "Errors": [
                {"ErrorCode": e.code, "FieldName": e.field, "Message": e.message}
                for e in problem.errors
            ],
        }
    }
    return _answer(status, problem.status, fmt, "ErrorResponse", headers)


def error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    """Any error of this face, in the format of the request it answers."""
    if status >= 500:
        problem = Problem(503 if status == 503 else 500, "ServiceUnavailable", message)
    else:
        # The vendor answers 405 for an endpoint that does not exist, too.
        wire = 405 if status == 404 else status if status in (401, 405, 429) else 400
        problem = Problem(wire, _CODES.get(wire, "InvalidParameter"), message)
    return problem_response(problem, _FORMAT.get(), headers)


FACE = Face("push-api-v2", error, (PATH, "/api/v2/push/"))


@dataclass(frozen=True, slots=True)
class PushRequest:
    user_id: str | None = None
    user_email: str | None = None
    user_external_id: str | None = None
    title: str | None = None
    body: str | None = None
    sound: bool = False
    expiry_secs: int | None = None
    company_id: int | None = None
    integration_key: str | None = None


def _raw_values(document: Document) -> dict[str, Any]:
    if isinstance(document.value, dict):
        return document.value
    return dict(fields(document.value))


def read_request(document: Document) -> PushRequest:
    """The request's parameters, typed; every wrong type is reported at once (400)."""
    raw = _raw_values(document)
    xml = document.kind == "xml"
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if name in STRINGS:
            if not isinstance(value, str):
                errors.append(FieldError("InvalidType", name, f"{name} must be a string"))
            else:
                values[name] = value
        elif name in BOOLEANS:
            if xml and isinstance(value, str) and value.lower() in ("true", "false"):
                values[name] = value.lower() == "true"
            elif not xml and isinstance(value, bool):
                values[name] = value
            else:
                errors.append(FieldError("InvalidType", name, f"{name} must be true or false"))
        elif name in INTEGERS:
            number: int | None = None
            if xml and isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 19:
                number = int(value)
            elif not xml and isinstance(value, int) and not isinstance(value, bool):
                number = value
            if number is None:
                errors.append(FieldError("InvalidType", name, f"{name} must be an integer"))
            else:
                values[name] = number
        elif isinstance(value, dict | list):
            errors.append(FieldError("InvalidType", name, f"{name} is not a parameter of this API"))
    if errors:
        raise Problem(400, "InvalidParameter", "Some parameters have the wrong type", tuple(errors))
    return PushRequest(
        user_id=values.get("UserId"),
        user_email=values.get("UserEmail"),
        user_external_id=values.get("UserExternalId"),
        title=values.get("Title"),
        body=values.get("Body"),
        sound=values.get("Sound", False),
        expiry_secs=values.get("ExpirySecs"),
        company_id=values.get("CompanyId"),
        integration_key=values.get("IntegrationKey"),
    )


def check_request(request: PushRequest) -> Identifiers:
    """The user's identifiers, when every parameter is valid (400 with each problem)."""
    errors: list[FieldError] = []
    given = {
        key: value
        for key, value in (
            ("UserId", request.user_id),
            ("UserEmail", request.user_email),
            ("UserExternalId", request.user_external_id),
        )
        if value
    }
    if not given:
        errors.append(
            FieldError(
                "NotEmpty",
                "UserId",
                "Give at least one user identifier: UserId, UserEmail or UserExternalId",
            )
        )
    for name, text, limit in (
        ("Title", request.title, MAX_TITLE_CHARS),
        ("Body", request.body, MAX_MESSAGE_CHARS),
    ):
        if not text or not text.strip():
            errors.append(FieldError("NotEmpty", name, f"{name} is required"))
        elif len(text) > limit:
            errors.append(FieldError("MaxLength", name, f"{name} is at most {limit} characters"))
    if request.expiry_secs is not None and not 0 <= request.expiry_secs <= MAX_EXPIRY_SECS:
        errors.append(
            FieldError(
                "OutOfRange",
                "ExpirySecs",
                f"ExpirySecs is 0 (the server default) to {MAX_EXPIRY_SECS} seconds",
            )
        )
    identifiers = Identifiers()
    if given:
        try:
            identifiers = parse_identifiers(
                {IDENTIFIERS[key]: value for key, value in given.items()}, field=""
            )
        except InvalidInput as exc:
            errors.append(FieldError("InvalidFormat", next(iter(given)), exc.message))
    if errors:
        raise Problem(
            400, "InvalidParameter", "Some parameters are missing or invalid", tuple(errors)
        )
    return identifiers


class PushApiV2Router:
    def __init__(
        self,
        keys: ApiKeyService,
        throttle: AuthThrottle,
        user_sends: UserSendService,
        send: SendService,
        max_body_bytes: int,
        accepted: Callable[[int], None] = lambda _: None,
    ) -> None:
        """``accepted(notification_id)`` is called for each notification it accepted."""
        self._auth = KeyAuthenticator(
            KIND,
            KeySource(field="IntegrationKey"),
            keys,
            throttle,
            "The IntegrationKey or CompanyId is not valid",
        )
        self._user_sends = user_sends
        self._send = send
        self._limit = max_body_bytes
        self._accepted = accepted

    async def push(self, request: Request) -> Response:
        Faces.mark(request.scope, FACE)
        wanted = request.query_params.get("format")
        try:
            kind: Kind = media_kind(request.headers.get("content-type"), "xml")
        except PushgateError:
            kind = "xml"
        fmt: Format = kind
        if wanted is not None:
            if wanted.lower() not in ("json", "xml"):
                _FORMAT.set(fmt)
                problem = Problem(400, "InvalidParameter", "format must be xml or json")
                return problem_response(problem, fmt)
            fmt = "json" if wanted.lower() == "json" else "xml"
        _FORMAT.set(fmt)
        if request.method != "POST":
            problem = Problem(405, "MethodNotAllowed", f"{request.method} is not allowed: use POST")
            return problem_response(problem, fmt, {"Allow": "POST"})
        try:
            return await self._push(request, fmt)
        except Problem as problem:
            return problem_response(problem, fmt)
        except PipelineUnavailable:
            return error("The service is unavailable right now, please retry", 503)
        except PushgateError as exc:
            return error(exc.message, exc.status, exc.headers)

    async def _push(self, request: Request, fmt: Format) -> Response:
        raw = await read_body(request, self._limit)
        kind = media_kind(request.headers.get("content-type"), "xml")
        document = parse_document(raw, kind)
        if kind == "xml" and not root_declares_xsi(raw):
            raise Problem(
                400,
                "InvalidParameter",
                'The XML root element must declare xmlns:i="http://www.w3.org/2001/XMLSchema-instance"',
            )
        parsed = read_request(document)
        principal = await self._auth.principal(request, document)
        if parsed.company_id is None or parsed.company_id != principal.account_id:
            raise Problem(401, "Unauthorized", "The IntegrationKey or CompanyId is not valid")
        app = principal.app
        if app is None:  # pragma: no cover - push-api-v2 keys always have an app
            raise Problem(401, "Unauthorized", "The IntegrationKey has no app")
        identifiers = check_request(parsed)
        try:
            target = await self._user_sends.target(app, identifiers)
        except Conflict as exc:
            raise Problem(400, "InvalidParameter", exc.message) from exc
        if target.subscriber_id is None:
            raise Problem(
                400,
                "UserNotFound",
                "No user of this app has these identifiers",
                tuple(
                    FieldError("NotFound", name, f"{name} names no user")
                    for name, value in (
                        ("UserId", parsed.user_id),
                        ("UserEmail", parsed.user_email),
                        ("UserExternalId", parsed.user_external_id),
                    )
                    if value
                ),
            )
        notification_id = await self._send.send(
            SendCommand(
                app=app,
                title=parsed.title,
                message=parsed.body or "",
                options=PushOptions(sound="default" if parsed.sound else None),
                # 0 or absent: the server's default.
                ttl_seconds=parsed.expiry_secs or None,
                audience=all_of_user(target.subscriber_id),
            )
        )
        self._accepted(notification_id)
        answer = {
            "DevicesTargeted": target.devices,
            "NotificationId": notification_id,
            "SubscriberId": target.subscriber_id,
            "UserEmail": target.identifiers.get("email"),
            "UserExternalId": target.identifiers.get("external_id"),
            "UserId": target.identifiers.get("user_id"),
        }
        return _answer(answer, 200, fmt, "PushResponse")

    def routes(self) -> list[Route]:
        return [Route(PATH, self.push, methods=ALL_METHODS, include_in_schema=False)]
