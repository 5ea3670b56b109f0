"""The native API's error format: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from pushgate.api.body import client_address
from pushgate.api.dialects.instapush import error as instapush_error
from pushgate.domain.errors import PushgateError
from pushgate.services.pipeline import PipelineUnavailable

log = logging.getLogger(__name__)

_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


def native_error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    code = _CODES.get(status, "error")
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _is_native(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def install_error_handlers(app: FastAPI) -> None:
    async def on_pushgate_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PushgateError)
        return native_error(exc.message, exc.status, exc.headers)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        return native_error("Service temporarily unavailable, please retry", 503)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        return native_error(f"Invalid request: {problems}", 400)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        if _is_native(request) or request.url.path in ("/docs", "/openapi.json"):
            return native_error(message, exc.status_code)
        # Everything outside /api/ is the Instapush "latest version" surface.
        return instapush_error(message, exc.status_code)

    def render(request: Request, message: str, status: int) -> Response:
        if _is_native(request):
            return native_error(message, status)
        return instapush_error(message, status)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # Nobody is left to read an answer: one line, no traceback.
        log.info(
            "client %s disconnected before its request to %s was complete",
            client_address(request) or "?",
            request.url.path,
        )
        return Response(status_code=400)

    async def on_database(request: Request, exc: Exception) -> Response:
        log.error("database unavailable: %s", exc)
        return render(request, "The database is unavailable right now, please retry", 503)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Starlette raises the exception again after this answer: uvicorn logs it.
        return render(request, "Internal error; it has been logged", 500)

    # Handlers of specific exceptions answer and are done; the one for ``Exception`` (500)
    # answers and lets the server log the traceback.
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(OperationalError, on_database)
    app.add_exception_handler(InterfaceError, on_database)
    app.add_exception_handler(PushgateError, on_pushgate_error)
    app.add_exception_handler(PipelineUnavailable, on_unavailable)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
