"""Insider web push v2 (shared/reference/insider-web-push-v2.txt):
``POST /v2/single/campaign_id``, one single web push campaign per request.

This module only translates: the JSON body into a campaign and a ``SendCommand`` whose
audience is the app's web push devices that the target, language and engagement rules
select (``domain/audience.py``), and the answer ``{"success": true, "campaign_id": N}``.

- ``Authorization: Bearer <key>``: an API key of kind ``insider-web``; ``partner_id`` in the
  body must be the key's (the account's). Otherwise 401 ``{"message": "Unauthorized"}``.
- Errors are ``{"message": <text>}``: 400 for each invalid field, 424 ``SERVICE:-`` when the
  app cannot send web pushes (no VAPID key pair), 429 past the key's quota.
- ``ttl`` is in seconds (a string of digits or an integer), at most 240 hours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

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
from pushgate.domain import addresses
from pushgate.domain.audience import AttributeValue, Audience, Condition
from pushgate.domain.errors import InvalidInput, PushgateError, Unauthorized
from pushgate.domain.push_options import PushOptions
from pushgate.services.api_keys import ApiKeyService
from pushgate.services.apps import AppService
from pushgate.services.credentials import CredentialService
from pushgate.services.send import Campaign, SendCommand, SendService
from pushgate.throttle import AuthThrottle
from pushgate.web.body import parse_json_object, read_body

PATH = "/v2/single/campaign_id"
KIND = "insider-web"
UNAUTHORIZED = "Unauthorized"
NO_SERVICE = "SERVICE:-"
MAX_TITLE = 100
MAX_DESCRIPTION = 255
MAX_BANNER_DESCRIPTION = 30
MAX_TTL_SECONDS = 240 * 3600
MAX_URL = 2048
MAX_VALUES = 1000


def error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    if status == 401:
        message = UNAUTHORIZED
    elif status == 429:
        message = f"Request limit exceeded: {message}"
    return json_response({"message": message}, status, headers)


FACE = Face("insider-web", error, ("/v2/single/",))


class NoWebPush(PushgateError):
    """The app cannot send web pushes."""

    status = 424


def _text(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    if required and not value.strip():
        raise InvalidInput(f"{name} must not be empty")
    return value


def _url(
    body: Mapping[str, Any], name: str, *, schemes: tuple[str, ...] = ("https://",)
) -> str | None:
    value = _text(body, name)
    if value is None:
        return None
    if not value.startswith(schemes) or len(value) > MAX_URL:
        raise InvalidInput(
            f"{name} must be a URL starting with {' or '.join(schemes)} "
            f"(at most {MAX_URL} characters)"
        )
    return value


def _flag(body: Mapping[str, Any], *names: str) -> bool | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise InvalidInput(f"{name} must be true or false")
        return value
    return None


def _ttl(body: Mapping[str, Any]) -> int | None:
    value = body.get("ttl")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise InvalidInput('ttl must be a number of seconds, as a string or an integer ("3600")')
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise InvalidInput(f"ttl is 1 to {MAX_TTL_SECONDS} seconds (240 hours)")
    return seconds


def _target(body: Mapping[str, Any]) -> Condition | None:
    target = body.get("target")
    is_all = _flag(body, "is_all")
    if target is None:
        if is_all is False:
            raise InvalidInput("target {attribute, values} is required when is_all is false")
        return None
    if not isinstance(target, dict):
        raise InvalidInput('target must be an object: {"attribute": "d_...", "values": [...]}')
    attribute = target.get("attribute")
    if not isinstance(attribute, str) or not attribute.startswith(("d_", "c_")):
        raise InvalidInput(
            "target.attribute must name a default (d_<name>) or custom (c_<name>) attribute"
        )
    values = target.get("values")
    if not isinstance(values, list) or not values:
        raise InvalidInput("target.values must be a non-empty array of values")
    if len(values) > MAX_VALUES:
        raise InvalidInput(f"target.values holds at most {MAX_VALUES} values")
    checked: list[AttributeValue] = []
    for value in values:
        if not isinstance(value, str | int | float) or (
            isinstance(value, float) and value != value
        ):
            raise InvalidInput("target.values are strings, numbers or booleans")
        checked.append(value)
    return Condition(attribute, "in", tuple(checked))


class InsiderWebRouter:
    def __init__(
        self,
        keys: ApiKeyService,
        throttle: AuthThrottle,
        apps: AppService,
        credentials: CredentialService,
        send: SendService,
        max_body_bytes: int,
        accepted: Callable[[int], None] = lambda _: None,
    ) -> None:
        """``accepted(notification_id)`` is called for each notification it accepted."""
        self._auth = KeyAuthenticator(KIND, KeySource(bearer=True), keys, throttle, UNAUTHORIZED)
        self._apps = apps
        self._credentials = credentials
        self._send = send
        self._limit = max_body_bytes
        self._accepted = accepted

    async def campaign(self, request: Request) -> Response:
        principal = await self._auth.principal(request)
        app = principal.app
        if app is None:  # pragma: no cover - insider-web keys always have an app
            raise Unauthorized(UNAUTHORIZED)
        body = parse_json_object(await read_body(request, self._limit))
        partner = body.get("partner_id")
        if isinstance(partner, int) and not isinstance(partner, bool):
            partner = str(partner)
        if partner != str(principal.account_id):
            raise Unauthorized(UNAUTHORIZED)
        title = _text(body, "title", required=True) or ""
        if len(title) > MAX_TITLE:
            raise InvalidInput(f"title is at most {MAX_TITLE} characters ({len(title)} given)")
        description = _text(body, "description") or ""
        banner = _url(body, "banner")
        image = _url(body, "image")
        limit = MAX_BANNER_DESCRIPTION if banner else MAX_DESCRIPTION
        if len(description) > limit:
            raise InvalidInput(
                f"description is at most {limit} characters"
                + (" with a banner" if banner else "")
                + f" ({len(description)} given)"
            )
        link = _url(body, "link", schemes=("https://", "http://"))
        if link is None:
            raise InvalidInput("link is required: the page opened when the push is clicked")
        ttl = _ttl(body)
        condition = _target(body)
        language = body.get("language")
        languages = () if language is None else (addresses.language_tag(language, "language"),)
        include_unengaged = _flag(body, "include_unengaged", "include_unengage") or False
        if await self._credentials.get(app.app_key, "web") is None:
            raise NoWebPush(NO_SERVICE)
        settings = await self._apps.settings(app.account_id, app.app_key)
        number = await self._send.open_campaign(app, title)
        notification_id = await self._send.send(
            SendCommand(
                app=app,
                title=title,
                message=description,
                options=PushOptions(
                    image_url=banner,
                    icon_url=image or settings.default_icon_url,
                    deep_link=link,
                ),
                audience=Audience(
                    platforms=("web",),
                    languages=languages,
                    attributes=() if condition is None else (condition,),
                    optin_required=True,
                    engaged_only=not include_unengaged,
                ),
                ttl_seconds=ttl,
                campaign=Campaign(str(number), title),
            )
        )
        self._accepted(notification_id)
        return json_response({"success": True, "campaign_id": number}, 200)

    def routes(self) -> list[Route]:
        return [face_route(PATH, FACE, "POST", self.campaign)]
