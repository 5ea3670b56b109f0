"""Every error the application answers, written by the face the request belongs to
(``api/dialects/base.py``): a 404, a 405, a body too large, a database outage, a bug."""

from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from pushgate.api.dialects.base import Faces
from pushgate.domain.errors import PushgateError
from pushgate.services.pipeline import PipelineUnavailable
from pushgate.web.auth import client_address

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI, faces: Faces) -> None:
    async def on_pushgate_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PushgateError)
        return faces.error(request, exc.message, exc.status, exc.headers)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        return faces.error(request, "Service temporarily unavailable, please retry", 503)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        return faces.error(request, f"Invalid request: {problems}", 400)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return faces.error(request, message, exc.status_code)

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
        return faces.error(request, "The database is unavailable right now, please retry", 503)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Starlette raises the exception again after this answer: uvicorn logs it.
        return faces.error(request, "Internal error; it has been logged", 500)

    # Handlers of specific exceptions answer and are done; the one for ``Exception`` (500)
    # answers and lets the server log the traceback.
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(OperationalError, on_database)
    # Raised by SQLite's driver itself where a statement bypasses SQLAlchemy (storage/
    # database.py: BEGIN and the hot statements), e.g. "database is locked" when another
    # process held the write lock past the busy timeout.
    app.add_exception_handler(sqlite3.OperationalError, on_database)
    app.add_exception_handler(InterfaceError, on_database)
    app.add_exception_handler(PushgateError, on_pushgate_error)
    app.add_exception_handler(PipelineUnavailable, on_unavailable)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
