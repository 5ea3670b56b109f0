"""Push.express (shared/reference/push-express-instant.txt): instant sends, one-time sendings
in the future, and pushes with translations.

    POST   /api/b/v2/send/instant                          {name, filters, push} -> 201
    POST   /api/b/v2/sched/onesend                         {name, date, time, local_time,
                                                            timezone, filters...} -> 201
    GET    /api/b/v2/sched/onesend/{id}                    the sending, its pushes, its state
    PUT    /api/b/v2/sched/{sched_type}/{id}/pushes        [push ids]: replaces its pushes
    POST   /api/b/v2/pushes                                {default_lang, translations} -> 201
    GET    /api/b/v2/pushes/{id}, DELETE /api/b/v2/pushes/{id}

This module only translates: bodies into the core's sendings and pushes
(``services/sendings.py``), run by the scheduler. ``Authorization: Bearer <key>``: an account
key of kind ``push-express``. Errors are ``{"error": "...", "req_id": "..."}`` with 400, 401,
403, 404 (and 409 for a change to a sending that has started); ``req_id`` is the request id
that the server's log lines of the request carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.api.dialects.base import (
    Face,
    KeyAuthenticator,
    KeySource,
    face_methods,
    face_route,
    json_response,
)
from pushgate.api.dialects.push_express_input import Filters, read_filters, read_push
from pushgate.domain.audience import Audience
from pushgate.domain.errors import InvalidInput
from pushgate.domain.schedules import (
    format_offset,
    parse_offset,
    parse_wall_time,
    wall_ms,
    wall_of,
)
from pushgate.observability.logs import REQUEST_ID
from pushgate.services.api_keys import ApiKeyService, Principal
from pushgate.services.sendings import (
    NewSending,
    PushContent,
    PushView,
    SendingService,
    SendingView,
)
from pushgate.services.stats import Counts
from pushgate.storage.database import now_ms
from pushgate.throttle import AuthThrottle
from pushgate.web.body import parse_json_object, read_body

PREFIX = "/api/b/v2"
KIND = "push-express"
SCHED_TYPES = ("onesend",)
SOURCE = "push-express"
ONESEND_KEYS = ("name", "date", "time", "local_time", "timezone", "fallback_timezone", "filters")


def error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    if status == 400 and not message.startswith("validation error"):
        message = f"validation error: {message}"
    return json_response({"error": message, "req_id": REQUEST_ID.get() or ""}, status, headers)


FACE = Face(KIND, error, (f"{PREFIX}/",))


def _id(request: Request, name: str, what: str) -> int:
    raw = request.path_params.get(name, "")
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput(f"{what} must be a positive integer id, got {raw!r}")
    return int(raw)


def _translations(view: PushView) -> list[dict[str, Any]]:
    return [{"id": t.id, "language": t.translation.language} for t in view.translations]


def _stats(counts: Counts) -> dict[str, Any]:
    return {
        "targeted": counts.targeted,
        **counts.statuses,
        "failed_by_reason": counts.failed_by_reason,
    }


def _sending(view: SendingView) -> dict[str, Any]:
    wall = wall_of(view.wall_ms)
    offset = format_offset(view.offset_minutes)
    return {
        "id": view.id,
        "name": view.name,
        "date": wall.strftime("%Y-%m-%d"),
        "time": wall.strftime("%H:%M"),
        "local_time": view.local_time,
        "timezone": None if view.local_time else offset,
        "fallback_timezone": offset if view.local_time else None,
        "filters": view.filters,
        "pushes": list(view.push_ids),
        "state": view.state,
        "created_at": view.created_ms // 1000,
        "started_at": None if view.started_ms is None else view.started_ms // 1000,
        "finished_at": None if view.finished_ms is None else view.finished_ms // 1000,
        "stats": None if view.counts is None else _stats(view.counts),
    }


def _name(body: Mapping[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name is required: a non-empty string")
    if len(name) > 200:
        raise InvalidInput("name is at most 200 characters")
    return name


class PushExpressRouter:
    def __init__(
        self,
        keys: ApiKeyService,
        throttle: AuthThrottle,
        sendings: SendingService,
        max_body_bytes: int,
        instant_delay_seconds: float = 120.0,
    ) -> None:
        self._auth = KeyAuthenticator(
            KIND,
            KeySource(bearer=True),
            keys,
            throttle,
            "invalid API token: send Authorization: Bearer <API key of kind push-express>",
        )
        self._sendings = sendings
        self._limit = max_body_bytes
        self._instant_delay_ms = int(instant_delay_seconds * 1000)

    async def _body(self, request: Request) -> Any:
        return parse_json_object(await read_body(request, self._limit))

    async def _audience(self, principal: Principal, filters: Filters) -> Audience:
        tags, exclude_tags = list(filters.tags), list(filters.exclude_tags)
        if filters.tag_groups:
            tags += await self._sendings.audience_groups(principal.account_id, filters.tag_groups)
        if filters.exclude_tag_groups:
            exclude_tags += await self._sendings.audience_groups(
                principal.account_id, filters.exclude_tag_groups
            )
        return Audience(
            countries=filters.countries,
            exclude_countries=filters.exclude_countries,
            languages=filters.languages,
            exclude_languages=filters.exclude_languages,
            tags=tuple(dict.fromkeys(tags)),
            exclude_tags=tuple(dict.fromkeys(exclude_tags)),
            events=filters.events,
            exclude_events=filters.exclude_events,
        )

    async def instant(self, request: Request) -> Response:
        principal = await self._auth.principal(request)
        body = await self._body(request)
        for key in ("name", "filters", "push"):
            if key not in body:
                raise InvalidInput(f"{key} is required")
        unknown = sorted(set(body) - {"name", "filters", "push"})
        if unknown:
            raise InvalidInput(
                f"unknown keys: {', '.join(unknown)}; the keys are name, filters, push"
            )
        name = _name(body)
        raw_filters = body["filters"]
        filters = read_filters(raw_filters)
        translations = read_push(body["push"])
        audience = await self._audience(principal, filters)
        due = now_ms() + self._instant_delay_ms
        sending_id, created = await self._sendings.create(
            principal.account_id,
            NewSending(
                name=name,
                wall_ms=due,
                offset_minutes=0,
                local_time=False,
                apps=filters.apps,
                audience=audience,
                filters=raw_filters,
                source=SOURCE,
            ),
            [PushContent.of_translations(translations)],
        )
        push = created[0]
        return json_response(
            {"sched_id": sending_id, "push_id": push.id, "translations": _translations(push)},
            201,
        )

    async def create_onesend(self, request: Request) -> Response:
        principal = await self._auth.principal(request)
        body = await self._body(request)
        if "filters" in body:
            raw_filters = body["filters"]
            unknown = sorted(set(body) - set(ONESEND_KEYS))
        else:  # the filter keys beside the others
            raw_filters = {k: v for k, v in body.items() if k not in ONESEND_KEYS}
            unknown = []
        if unknown:
            raise InvalidInput(f"unknown keys: {', '.join(unknown)}")
        name = _name(body)
        for key in ("date", "time"):
            if key not in body:
                raise InvalidInput(f"{key} is required")
        wall = parse_wall_time(body["date"], body["time"])
        local_time = body.get("local_time", False)
        if local_time is None:
            local_time = False
        if not isinstance(local_time, bool):
            raise InvalidInput("local_time must be true or false")
        timezone = body.get("timezone")
        if local_time:
            if timezone is not None:
                raise InvalidInput(
                    "timezone must be left out when local_time is true (each device's own "
                    "timezone is used; fallback_timezone covers devices without one)"
                )
            fallback = body.get("fallback_timezone")
            offset = 0 if fallback is None else parse_offset(fallback, "fallback_timezone")
        else:
            if timezone is None:
                raise InvalidInput('timezone is required when local_time is false, e.g. "+03:00"')
            if body.get("fallback_timezone") is not None:
                raise InvalidInput("fallback_timezone is only for local_time sendings")
            offset = parse_offset(timezone, "timezone")
        filters = read_filters(raw_filters)
        audience = await self._audience(principal, filters)
        sending_id, _ = await self._sendings.create(
            principal.account_id,
            NewSending(
                name=name,
                wall_ms=wall_ms(wall),
                offset_minutes=offset,
                local_time=local_time,
                apps=filters.apps,
                audience=audience,
                filters=raw_filters,
                source=SOURCE,
            ),
        )
        return json_response({"id": sending_id}, 201)

    async def show_onesend(self, request: Request) -> Response:
        principal = await self._auth.principal(request)
        sending_id = _id(request, "sched_id", "sched_id")
        view = await self._sendings.get(principal.account_id, sending_id, counts=True)
        return json_response(_sending(view), 200)

    async def bind(self, request: Request) -> Response:
        principal = await self._auth.principal(request)
        sched_type = request.path_params.get("sched_type", "")
        sending_id = _id(request, "sched_id", "sched_id")
        if sched_type not in SCHED_TYPES:
            raise InvalidInput(
                f"unknown sched_type {sched_type!r}: the known types are {', '.join(SCHED_TYPES)}"
            )
        raw = await read_body(request, self._limit)
        ids = _push_ids(raw)
        bound = await self._sendings.bind_pushes(principal.account_id, sending_id, ids)
        return json_response({"id": sending_id, "pushes": list(bound)}, 200)

    async def create_push(self, request: Request) -> Response:
        principal = await self._auth.principal(request)
        translations = read_push(await self._body(request))
        view = await self._sendings.create_push(
            principal.account_id, PushContent.of_translations(translations)
        )
        return json_response({"id": view.id, "translations": _translations(view)}, 201)

    async def show_push(self, request: Request) -> Response:
        principal = await self._auth.principal(request)
        push_id = _id(request, "push_id", "push id")
        view = await self._sendings.get_push(principal.account_id, push_id)
        counts = await self._sendings.push_counts(principal.account_id, push_id)
        return json_response(
            {
                "id": view.id,
                "default_lang": view.default_language,
                "translations": [
                    {
                        "id": t.id,
                        "language": t.translation.language,
                        "title": t.translation.title,
                        "text": t.translation.message,
                        "image": t.translation.image_url,
                        "icon": t.translation.icon_url,
                        "link": t.translation.link,
                    }
                    for t in view.translations
                ],
                "sched_id": view.sending_id,
                "stats": _stats(counts),
            },
            200,
        )

    async def delete_push(self, request: Request) -> Response:
        principal = await self._auth.principal(request)
        push_id = _id(request, "push_id", "push id")
        await self._sendings.delete_push(principal.account_id, push_id)
        return json_response({"id": push_id}, 200)

    def routes(self) -> list[Route]:
        return [
            face_route(f"{PREFIX}/send/instant", FACE, "POST", self.instant),
            face_route(f"{PREFIX}/sched/onesend", FACE, "POST", self.create_onesend),
            face_route(f"{PREFIX}/sched/onesend/{{sched_id}}", FACE, "GET", self.show_onesend),
            face_route(
                f"{PREFIX}/sched/{{sched_type}}/{{sched_id}}/pushes", FACE, "PUT", self.bind
            ),
            face_route(f"{PREFIX}/pushes", FACE, "POST", self.create_push),
            face_methods(
                f"{PREFIX}/pushes/{{push_id}}",
                FACE,
                {"GET": self.show_push, "DELETE": self.delete_push},
            ),
        ]


def _push_ids(raw: bytes) -> list[int]:
    """The body of a PUT of pushes: a list of push ids, or ``{"pushes": [...]}``."""
    try:
        value = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Request body is not valid JSON: {exc}") from None
    if isinstance(value, dict):
        value = value.get("pushes", value.get("push_ids"))
    if not isinstance(value, list):
        raise InvalidInput('send a list of push ids: [1, 2] (or {"pushes": [1, 2]})')
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            raise InvalidInput("push ids are positive integers")
    return list(value)
