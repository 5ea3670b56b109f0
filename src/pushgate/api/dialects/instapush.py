"""Instapush v1 (shared/reference/instapush-v1.txt): apps, events and post.

Served under ``/v1/`` and, as "latest version", without it. This router only translates:
headers and JSON in, a core call, the vendor's exact response body out (HTTP status equals the
body's ``status``). Errors use the vendor's shape: ``{"msg": ..., "error": true, "status": N}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.api.dialects.base import Face, Faces, json_response
from pushgate.domain.errors import InvalidInput, PushgateError
from pushgate.services.accounts import Account, AccountService
from pushgate.services.apps import App, AppService
from pushgate.services.events import EventService
from pushgate.services.pipeline import PipelineUnavailable
from pushgate.services.send import SendService
from pushgate.throttle import AuthThrottle
from pushgate.web.auth import client_address
from pushgate.web.body import parse_json_object, read_body

INVALID_USER_TOKEN = "Invalid User Token"
WRONG_APP_CREDENTIALS = "Wrong APPID or APPSECRET"
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

Handler = Callable[[Request], Awaitable[Response]]


def error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"msg": message, "error": True, "status": status}, status, headers)


# Served under /v1/ and, as the vendor's "latest version", without it: the default face.
FACE = Face("instapush", error, ("/v1/", "/apps/", "/events/", "/post"))


def _require_str(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if value is None:
        raise InvalidInput(f"Missing required field: {field} (string)")
    if not isinstance(value, str):
        raise InvalidInput(f"Field {field} must be a string")
    if not value.strip():
        raise InvalidInput(f"Field {field} must not be empty")
    return value


def _tracker_names(body: dict[str, Any]) -> list[str]:
    value = body.get("trackers")
    if value is None:
        raise InvalidInput("Missing required field: trackers (array of tracker names)")
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise InvalidInput('Field trackers must be an array of names, e.g. ["email","country"]')
    return value


def _tracker_values(body: dict[str, Any]) -> dict[str, str]:
    value = body.get("trackers")
    if value is None:
        raise InvalidInput("Missing required field: trackers (object of tracker values)")
    if not isinstance(value, dict):
        raise InvalidInput('Field trackers must be an object, e.g. {"email":"ann@example.com"}')
    values: dict[str, str] = {}
    for name, item in value.items():
        if isinstance(item, str):
            values[name] = item
        elif isinstance(item, bool):
            values[name] = "true" if item else "false"
        elif isinstance(item, int | float):
            values[name] = str(item)
        else:
            raise InvalidInput(f"Tracker {name} must be a string or a number")
    return values


class InstapushRouter:
    def __init__(
        self,
        accounts: AccountService,
        apps: AppService,
        events: EventService,
        send: SendService,
        throttle: AuthThrottle,
        max_body_bytes: int,
        accepted: Callable[[int], None],
    ) -> None:
        """``accepted(notification_id)`` is called for each notification it accepted."""
        self._accepted = accepted
        self._accounts = accounts
        self._apps = apps
        self._events = events
        self._send = send
        self._throttle = throttle
        self._limit = max_body_bytes

    # -- authentication ------------------------------------------------------------------

    async def _account(self, request: Request) -> Account | None:
        token = request.headers.get("x-instapush-token")
        return await self._throttle.authenticate(
            client_address(request), None, lambda: self._accounts.authenticate(token)
        )

    async def _app(self, request: Request) -> App | None:
        headers = request.headers
        app_key, secret = headers.get("x-instapush-appid"), headers.get("x-instapush-appsecret")
        return await self._throttle.authenticate(
            client_address(request),
            app_key[:64] if app_key else None,
            lambda: self._apps.authenticate(app_key, secret),
        )

    async def _json(self, request: Request) -> dict[str, Any]:
        return parse_json_object(await read_body(request, self._limit))

    # -- endpoints -----------------------------------------------------------------------

    async def apps_list(self, request: Request) -> Response:
        account = await self._account(request)
        if account is None:
            return error(INVALID_USER_TOKEN, 401)
        items = await self._apps.list(account.id)
        return json_response(
            [{"title": a.app.title, "appID": a.app.app_key, "appSecret": a.secret} for a in items],
            200,
        )

    async def apps_add(self, request: Request) -> Response:
        account = await self._account(request)
        if account is None:
            return error(INVALID_USER_TOKEN, 401)
        body = await self._json(request)
        created = await self._apps.create(account.id, _require_str(body, "title"))
        return json_response(
            {
                "msg": "App Created Successfully",
                "id": created.app.app_key,
                "secret": created.secret,
                "error": False,
                "status": 201,
            },
            201,
        )

    async def events_list(self, request: Request) -> Response:
        app = await self._app(request)
        if app is None:
            return error(WRONG_APP_CREDENTIALS, 401)
        items = await self._events.list(app.id)
        return json_response([{"title": e.title, "trackers": list(e.trackers)} for e in items], 200)

    async def events_add(self, request: Request) -> Response:
        app = await self._app(request)
        if app is None:
            return error(WRONG_APP_CREDENTIALS, 401)
        body = await self._json(request)
        title = _require_str(body, "title")
        trackers = _tracker_names(body)
        message = _require_str(body, "message")
        await self._events.create(app.id, title, trackers, message)
        return json_response(
            {"msg": "Event Created Succesfully", "error": False, "status": 201}, 201
        )

    async def post(self, request: Request) -> Response:
        app = await self._app(request)
        if app is None:
            return error(WRONG_APP_CREDENTIALS, 401)
        body = await self._json(request)
        event = _require_str(body, "event")
        notification_id = await self._send.post_event(app, event, _tracker_values(body))
        self._accepted(notification_id)
        return json_response(
            {"msg": "Notification Sent Succesfully", "error": False, "status": 201},
            201,
            {"X-Pushgate-Notification-Id": str(notification_id)},
        )

    # -- routing -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        table: dict[str, tuple[str, Handler]] = {
            "/apps/list": ("GET", self.apps_list),
            "/apps/add": ("POST", self.apps_add),
            "/events/list": ("GET", self.events_list),
            "/events/add": ("POST", self.events_add),
            "/post": ("POST", self.post),
        }
        routes: list[Route] = []
        for prefix in ("/v1", ""):
            for path, (method, handler) in table.items():
                routes.append(
                    Route(
                        prefix + path,
                        _guarded(method, handler),
                        methods=ALL_METHODS,
                        include_in_schema=False,
                    )
                )
        return routes


def _guarded(method: str, handler: Handler) -> Handler:
    """Method check and error translation around one endpoint."""
    allowed = {method, "HEAD"} if method == "GET" else {method}

    async def endpoint(request: Request) -> Response:
        Faces.mark(request.scope, FACE)
        if request.method not in allowed:
            return error(
                f"Method {request.method} not allowed here; use {method}",
                405,
                {"Allow": method},
            )
        try:
            return await handler(request)
        except PushgateError as exc:
            return error(exc.message, exc.status, exc.headers)
        except PipelineUnavailable:
            return error("Service temporarily unavailable, please retry", 503)

    return endpoint
