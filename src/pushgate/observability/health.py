"""Readiness: can this process do its work right now? ``/api/v1/ready`` answers 200 when every
part it needs answers, 503 naming the part that did not (and why) otherwise.

Parts: the database (a ``SELECT 1``), the queue engine (with Redis, a round trip to Redis,
which also carries the device channel between processes; the embedded engine lives in the
database). ``/api/v1/health`` stays a liveness check that touches nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.queue.base import QueueEngine
from pushgate.services.delivery_jobs import FANOUT_QUEUE
from pushgate.storage.database import Database

CHECK_TIMEOUT_SECONDS = 3.0

Check = Callable[[], Awaitable[None]]


def readiness_checks(db: Database, queue: QueueEngine) -> dict[str, Check]:
    async def database() -> None:
        async with db.read.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await queue.depth(FANOUT_QUEUE)

    checks: dict[str, Check] = {"database": database}
    if queue.kind == "redis":
        checks["redis"] = redis
    return checks


async def run_checks(checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
    """(all passed, part -> "ok" or what went wrong)."""

    async def one(check: Check) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
        except Exception as exc:
            return f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return "ok"

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    report = dict(zip(checks, results, strict=True))
    return all(result == "ok" for result in results), report


def ready_route(checks: dict[str, Check], stopping: Callable[[], bool]) -> Route:
    """``GET /api/v1/ready``; ``stopping()`` true (a SIGTERM was received) answers 503 too, so
    a load balancer takes the process out while it drains."""

    async def ready(request: Request) -> Response:
        ok, report = await run_checks(checks)
        if stopping():
            ok, report = False, {**report, "server": "shutting down"}
        failed = [part for part, result in report.items() if result != "ok"]
        body: dict[str, object] = {"status": "ready" if ok else "unavailable", "checks": report}
        if failed:
            body["failed"] = failed
        return Response(
            orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json"
        )

    return Route("/api/v1/ready", ready, methods=["GET"], include_in_schema=False)
