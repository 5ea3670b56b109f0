"""``create_app(settings)``: the ASGI application. No import-time globals."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate import __version__
from pushgate.api.dialects import insider_mobile, insider_web, push_api_v2, push_express
from pushgate.api.dialects import instapush as instapush_face
from pushgate.api.dialects.base import Faces
from pushgate.api.dialects.instapush import InstapushRouter
from pushgate.api.docs import api_docs_routes
from pushgate.api.errors import install_error_handlers
from pushgate.api.native import face as native_face
from pushgate.api.native.apps import apps_router
from pushgate.api.native.bulk import bulk_router
from pushgate.api.native.credentials import credentials_router
from pushgate.api.native.deps import user_auth
from pushgate.api.native.devices import devices_router
from pushgate.api.native.groups import groups_router
from pushgate.api.native.keys import keys_router
from pushgate.api.native.notifications import notifications_router
from pushgate.api.native.send import send_router
from pushgate.api.native.sendings import sendings_router
from pushgate.api.native.stats import stats_router
from pushgate.api.native.subscribers import subscribers_router
from pushgate.browser import browser_routes
from pushgate.channel.routes import channel_router
from pushgate.channel.server import ChannelServer
from pushgate.config import Settings
from pushgate.dashboard import dashboard_routes
from pushgate.data_identity import data_id
from pushgate.egress import parse_networks
from pushgate.observability.exposition import metrics_listener, metrics_route
from pushgate.observability.health import readiness_checks, ready_route
from pushgate.observability.logs import AccessLog, redact
from pushgate.observability.requests import RequestObserver
from pushgate.runtime import Runtime, build_runtime
from pushgate.storage.migrate import migrate
from pushgate.web.body import read_body
from pushgate.web.home import home_route

_PONG = b'{"ok":true}'
SWITCH_INTERVAL_SECONDS = 0.0001


def _health(settings: Settings) -> Route:
    """``{"status": "ok", "version", "data_id"}``: ``data_id`` tells which data the server
    works on, without saying where it is (data_identity.py)."""
    body = orjson.dumps({"status": "ok", "version": __version__, "data_id": data_id(settings)})

    async def health(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Route("/api/v1/health", health, methods=["GET"], include_in_schema=False)


def _ping(limit: int) -> Route:
    """A no-op POST on the same stack as the send endpoints: the floor for benchmarks."""

    async def ping(request: Request) -> Response:
        await read_body(request, limit)
        return Response(_PONG, media_type="application/json")

    return Route("/api/v1/ping", ping, methods=["POST"], include_in_schema=False)


def tune_interpreter() -> None:
    """Fewer, cheaper collections: everything alive after start-up is frozen out of the
    cyclic collector, and the young generation is collected less often. A full collection
    over a busy heap otherwise stalls every request and device for tens of milliseconds.

    A short GIL switch interval: the SQLite thread gives the GIL up during every statement
    and must get it back before the writer can go on; with the default 5 ms it can wait that
    long each time while the event loop is busy."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    rt = runtime or build_runtime(settings)
    access = AccessLog.create(settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(rt.db)
        tune_interpreter()
        await rt.start(accepting=True, working=settings.run_workers)
        listener = await metrics_listener(settings, rt)
        try:
            yield
        finally:
            if listener is not None:
                listener.close()
            await rt.stop()
            if access is not None:
                access.flush()

    app = FastAPI(
        title="Pushgate",
        version=__version__,
        summary="Self-hosted push-notification gateway: native API and device channel.",
        lifespan=lifespan,
        # Served below from assets in the package: nothing loads from a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI's built-in OpenTelemetry hooks cost ~5% of every request even with no
        # provider configured; Pushgate exposes its own metrics instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = rt
    # The device channel's WebSocket is served beside the application, on the same port
    # (``pushgate serve`` hands its upgrades to it; see channel.server).
    app.state.channel = ChannelServer(
        rt,
        settings.websocket_ping_seconds,
        [str(network) for network in parse_networks(settings.trusted_proxies)],
    )
    faces = Faces(default=instapush_face.FACE)
    faces.add(native_face.FACE)
    faces.add(insider_mobile.FACE)
    faces.add(insider_web.FACE)
    faces.add(push_api_v2.FACE)
    faces.add(push_express.FACE)
    install_error_handlers(app, faces)

    instapush = InstapushRouter(
        rt.accounts,
        rt.apps,
        rt.events,
        rt.send,
        rt.throttle,
        settings.max_body_bytes,
        rt.metrics.accepted(instapush_face.FACE.name),
    )
    app.router.routes.extend(instapush.routes())
    app.router.routes.extend(
        insider_mobile.InsiderMobileRouter(
            rt.keys,
            rt.throttle,
            rt.user_sends,
            rt.reports,
            settings.max_body_bytes,
            rt.metrics.accepted(insider_mobile.FACE.name),
        ).routes()
    )
    app.router.routes.extend(
        insider_web.InsiderWebRouter(
            rt.keys,
            rt.throttle,
            rt.apps,
            rt.credentials,
            rt.send,
            settings.max_body_bytes,
            rt.metrics.accepted(insider_web.FACE.name),
        ).routes()
    )
    app.router.routes.extend(
        push_api_v2.PushApiV2Router(
            rt.keys,
            rt.throttle,
            rt.user_sends,
            rt.send,
            settings.max_body_bytes,
            rt.metrics.accepted(push_api_v2.FACE.name),
        ).routes()
    )
    app.router.routes.extend(
        push_express.PushExpressRouter(
            rt.keys,
            rt.throttle,
            rt.sendings,
            settings.max_body_bytes,
            settings.instant_delay_seconds,
        ).routes()
    )
    app.router.routes.append(_health(settings))
    app.router.routes.append(home_route(__version__))
    app.router.routes.append(_ping(settings.max_body_bytes))
    app.router.routes.append(ready_route(readiness_checks(rt.db, rt.queue), lambda: rt.stopping))
    if settings.metrics_token is not None:
        app.router.routes.append(
            metrics_route(rt.metrics, rt.refresh_metrics, settings.metrics_token)
        )

    current_account = user_auth(rt.accounts, rt.throttle, rt.keys)
    app.include_router(apps_router(rt.apps, current_account))
    app.include_router(subscribers_router(rt.subscribers, current_account))
    app.include_router(keys_router(rt.keys, current_account))
    app.include_router(devices_router(rt.devices, current_account))
    app.include_router(notifications_router(rt.notifications, current_account))
    app.include_router(stats_router(rt.stats, current_account))
    app.include_router(credentials_router(rt.credentials, current_account))
    app.include_router(
        send_router(
            rt.apps,
            rt.send,
            rt.subscribers,
            current_account,
            rt.metrics.accepted(native_face.FACE.name),
            rt.sendings,
        )
    )
    app.include_router(groups_router(rt.groups, current_account))
    app.include_router(bulk_router(rt.apps, rt.subscriber_import, current_account))
    app.include_router(sendings_router(rt.sendings, current_account))
    app.include_router(channel_router(rt))
    app.router.routes.extend(dashboard_routes(rt))
    app.router.routes.extend(browser_routes(rt))
    app.router.routes.extend(api_docs_routes(app.openapi_url or "/openapi.json", app.title))
    app.add_middleware(
        RequestObserver,
        metrics=rt.metrics,
        routes=app.router.routes,
        face_of=lambda path: faces.for_path(path).name,
        access=access,
        redact=redact,
    )
    return app
