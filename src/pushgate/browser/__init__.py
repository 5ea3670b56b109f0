"""The browser SDK: ``/sdk/pushgate.js`` (for a site's pages), ``/sdk/pushgate-sw.js`` (its
service worker, imported by a one-line worker on the site's own origin), and the two
endpoints they call from another origin (CORS, no cookies):

    GET  /sdk/v1/vapid?key=        the app's VAPID public key (to subscribe to Web Push)
    POST /sdk/v1/devices           register this browser as a web (or channel) device
    POST /sdk/v1/opened            {"device_token", "ids"}: the user opened these

A page cannot hold the account's user token or a native API key, so these endpoints take a
**browser key** (API key kind ``browser``): a public key of one app that can only do the
above. It is rate limited like any key (600 requests a minute unless set) and revocable. What
a stranger holding it can do is bounded (docs/browser.md, "Abuse"):

- register devices of that app: anonymous ones (a new subscriber each, reached only by sends
  to the whole app or by an audience that matches their own attributes), web ones only on the
  browsers' push services (setting ``browser_push_hosts``);
- name a subscriber (identifiers, and set its attributes) only with an ``identity``: the
  HMAC-SHA256 of the identifiers under the app's secret, which the site's server computes
  (``identity_of``), so that no page can attach its browser to someone else's subscriber.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from pushgate.domain.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PushgateError,
    TooManyRequests,
    Unauthorized,
)
from pushgate.domain.subscribers import parse_identifiers, parse_profile
from pushgate.runtime import Runtime
from pushgate.services.api_keys import Principal
from pushgate.services.devices import DeviceRegistration
from pushgate.web.auth import client_address
from pushgate.web.body import parse_json_object, read_body
from pushgate.web.errors import native_error

STATIC = Path(__file__).parent / "static"
KIND = "browser"
KEY_HEADER = "x-pushgate-key"
MAX_BODY = 16_384
MAX_OPENED = 100
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST",
    "Access-Control-Allow-Headers": f"content-type, {KEY_HEADER}",
    "Access-Control-Max-Age": "600",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
SCRIPT_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=300",
}
TEXT_FIELDS = ("name", "language", "timezone", "country")
# What a page may send; anything else is refused by name.
REGISTRATION_KEYS = frozenset(
    {"platform", "subscription", "identifiers", "identity", "attributes", "language",
     "timezone", "country", "name"}
)  # fmt: skip


def push_host_allowed(subscription: object, hosts: tuple[str, ...]) -> bool:
    """Whether a subscription's endpoint is on one of these push services (a host or one
    under it); any host when ``hosts`` is empty. One that is no subscription passes: the
    registration itself refuses it, naming what is wrong."""
    if not hosts or not isinstance(subscription, dict):
        return True
    endpoint = subscription.get("endpoint")
    host = urlsplit(endpoint).hostname if isinstance(endpoint, str) else None
    if host is None:
        return True
    host = host.rstrip(".").lower()
    return any(host == h.lower() or host.endswith("." + h.lower()) for h in hosts)


def identity_message(identifiers: Mapping[str, str]) -> bytes:
    """What an identity signs: ``key=value`` lines, keys in sorted order (unambiguous: a key
    holds no ``=``, and nothing a line break; the registration refuses those)."""
    return "\n".join(f"{key}={identifiers[key]}" for key in sorted(identifiers)).encode()


def identity_of(app_secret: str, identifiers: Mapping[str, str]) -> str:
    """The ``identity`` a site's server gives its page for these identifiers (hex)."""
    return hmac.new(app_secret.encode(), identity_message(identifiers), hashlib.sha256).hexdigest()


def _script(name: str, worker: bool = False) -> Callable[[Request], Awaitable[Response]]:
    headers = dict(SCRIPT_HEADERS)
    if worker:
        # The worker may control every page of the origin serving it (the try page's own).
        headers["Service-Worker-Allowed"] = "/"

    async def serve(request: Request) -> Response:
        return FileResponse(
            STATIC / name, media_type="text/javascript; charset=utf-8", headers=headers
        )

    return serve


def browser_routes(rt: Runtime) -> list[BaseRoute]:
    async def principal(request: Request, body: Mapping[str, Any] | None = None) -> Principal:
        key = request.headers.get(KEY_HEADER) or request.query_params.get("key")
        if key is None and body is not None and isinstance(body.get("key"), str):
            key = body["key"]
        address = client_address(request)
        found = await rt.throttle.authenticate(
            address, None, lambda: rt.keys.authenticate(KIND, key, address)
        )
        if found is None or found.app is None:
            raise Unauthorized("Missing or invalid browser key (an API key of kind browser)")
        return found

    def answer(status: int, body: object) -> Response:
        return Response(orjson.dumps(body), status, media_type="application/json", headers=CORS)

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=CORS)
            try:
                return await handler(request)
            except PushgateError as exc:
                status = 404 if isinstance(exc, NotFound) else exc.status
                headers = dict(CORS)
                if isinstance(exc, TooManyRequests):
                    headers["Retry-After"] = str(exc.retry_after)
                return native_error(exc.message, status, headers)

        return endpoint

    async def read(request: Request) -> dict[str, Any]:
        return parse_json_object(
            await read_body(request, min(MAX_BODY, rt.settings.max_body_bytes))
        )

    async def vapid(request: Request) -> Response:
        found = await principal(request)
        assert found.app is not None
        return answer(
            200, {"vapid_public_key": await rt.credentials.vapid_public_key(found.app.app_key)}
        )

    async def register(request: Request) -> Response:
        body = await read(request)
        found = await principal(request, body)
        app = found.app
        assert app is not None
        body.pop("key", None)
        unknown = sorted(set(body) - REGISTRATION_KEYS)
        if unknown:
            raise InvalidInput(f"unknown keys: {', '.join(unknown)}")
        platform = body.get("platform", "web")
        if platform not in ("web", "channel"):
            raise InvalidInput('platform must be "web" or "channel"')
        hosts = rt.settings.browser_push_hosts
        if platform == "web" and not push_host_allowed(body.get("subscription"), hosts):
            raise InvalidInput(
                "subscription.endpoint is not on a push service this server takes from "
                f"browsers ({', '.join(hosts)}: setting browser_push_hosts)"
            )
        for name in TEXT_FIELDS:
            if body.get(name) is not None and not isinstance(body[name], str):
                raise InvalidInput(f"{name} must be text")
        raw_ids = body.get("identifiers") or {}
        if not isinstance(raw_ids, dict) or not all(isinstance(v, str) for v in raw_ids.values()):
            raise InvalidInput("identifiers must be an object of strings")
        if any("=" in k or "\n" in k + v for k, v in raw_ids.items()):
            raise InvalidInput("identifiers: no '=' in a key, no line break anywhere")
        attributes = body.get("attributes")
        if raw_ids or attributes:
            if not raw_ids:
                raise InvalidInput("attributes need identifiers (with their identity)")
            secret = (await rt.apps.get(found.account_id, app.app_key)).secret
            given = body.get("identity")
            expected = identity_of(secret, raw_ids)
            if not isinstance(given, str) or not hmac.compare_digest(
                given.encode(), expected.encode()
            ):
                raise Forbidden(
                    "identity does not match the identifiers: the site's server computes it "
                    "with the app's secret (docs/browser.md)"
                )
        registered = await rt.devices.register(
            found.account_id,
            DeviceRegistration(
                platform=platform,
                app_key=app.app_key,
                name=body.get("name"),
                language=body.get("language"),
                timezone=body.get("timezone"),
                country=body.get("country"),
                subscription=body.get("subscription"),
                identifiers=raw_ids or None,
            ),
        )
        if attributes is not None:
            profile = parse_profile({"attributes": attributes})
            await rt.subscribers.upsert(
                found.account_id, app.app_key, parse_identifiers(raw_ids), profile
            )
        device = registered.device
        return answer(
            201 if registered.created else 200,
            {
                "id": device.id,
                "platform": device.platform,
                "subscriber_id": device.subscriber_id,
                "device_token": registered.device_token,
            },
        )

    async def opened(request: Request) -> Response:
        body = await read(request)
        token, ids = body.get("device_token"), body.get("ids")
        if not isinstance(ids, list) or not 0 < len(ids) <= MAX_OPENED:
            raise InvalidInput(f"ids must be a list of 1 to {MAX_OPENED} notification ids")
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in ids):
            raise InvalidInput("ids must be notification ids")
        address = client_address(request)

        async def check() -> Any:
            device = await rt.devices.authenticate(token if isinstance(token, str) else None)
            return device if device is not None and device.enabled else None

        device = await rt.throttle.authenticate(address, None, check)
        if device is None:
            raise Unauthorized("Missing or invalid device_token")
        return answer(200, {"opened": await rt.stats.opened_on_device(device.id, ids)})

    methods = ["POST", "OPTIONS"]
    return [
        Route("/sdk/pushgate.js", _script("pushgate.js"), methods=["GET"]),
        Route("/sdk/pushgate-sw.js", _script("pushgate-sw.js", worker=True), methods=["GET"]),
        Route("/sdk/v1/vapid", guarded(vapid), methods=["GET", "OPTIONS"]),
        Route("/sdk/v1/devices", guarded(register), methods=methods),
        Route("/sdk/v1/opened", guarded(opened), methods=methods),
    ]
