"""Logs of ``pushgate serve`` and ``pushgate worker``: structured with structlog, and the one
place where secrets are taken out of them.

Every line is rendered by structlog: JSON (one object per line) when the output is not a
terminal, readable columns when it is (``log_format``). Lines of the standard ``logging``
module (uvicorn's, Pushgate's own ``logging.getLogger`` loggers, with their ``extra`` fields)
go through ``structlog.stdlib.ProcessorFormatter``, and carry the ``request_id`` and
``notification_id`` of the request they were written for (``REQUEST_ID``,
``NOTIFICATION_ID``). The access line, written once per request, takes a short path
(``AccessLog``): its fields are few and known (the path is redacted by its writer), it is
rendered by the same renderer and written in batches (at most ``ACCESS_FLUSH_SECONDS`` late),
so that it costs a few microseconds.

Redaction (``redact``): a query parameter whose name says it carries a secret (``token``,
``key``, ``secret``, ``password``...) has its value replaced, and device tokens (``dvt_...``)
are replaced wherever they appear; a field whose name is a secret's (``SECRET_FIELDS``) is
replaced whole. User tokens, app secrets and keys travel in headers and bodies, which are
never logged. Every stdlib handler also passes its records through ``RedactSecrets``.

Levels are set per logger (``log_levels``, e.g. ``pushgate.access=warning``) on top of
``log_level``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
ACCESS_LOGGER = "pushgate.access"
ACCESS_FLUSH_SECONDS = 0.2
ACCESS_BUFFER_BYTES = 65_536
# The request a line is written for, and the notification it accepted or a push job
# delivers (set by observability.requests, the faces and the push workers; every request and
# every job runs in a task of its own).
REQUEST_ID: ContextVar[str | None] = ContextVar("pushgate_request_id", default=None)
NOTIFICATION_ID: ContextVar[int | None] = ContextVar("pushgate_notification_id", default=None)
SECRET_FIELDS = frozenset(
    {"token", "secret", "password", "authorization", "api_key", "user_token", "app_secret"}
)
_SECRET_PARAMETER = re.compile(
    r"(?i)([?&;](?:[a-z_-]*token|[a-z_-]*key|[a-z_-]*secret|password|passwd|auth|signature"
    r"|sig|code)=)[^&#\s\"']*"
)
_DEVICE_TOKEN = re.compile(r"dvt_[0-9A-Za-z_-]{6,}")


def redact(text: str) -> str:
    """``text`` without the secrets a URL or message may carry."""
    if "=" in text:
        text = _SECRET_PARAMETER.sub(r"\1" + REDACTED, text)
    if "dvt_" in text:
        text = _DEVICE_TOKEN.sub("dvt_" + REDACTED, text)
    return text


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Redacts the message and its string arguments (uvicorn passes paths as arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_clean(value) for value in args)
        elif isinstance(args, dict):
            record.args = {key: _clean(value) for key, value in args.items()}
        return True


class OneLinePerHandshake(logging.Filter):
    """Drops the ``websockets`` protocol's own "connection rejected" line: uvicorn has
    already logged the refused handshake, with its status."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("connection rejected"))


def redact_fields(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The structlog processor of ``redact``: every string field, and secret-named fields."""
    for key, value in event.items():
        if key in SECRET_FIELDS:
            event[key] = REDACTED
        elif isinstance(value, str) and ("=" in value or "dvt_" in value):
            event[key] = redact(value)
    return event


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds; the seconds part is formatted once per
    second (structlog's ``TimeStamper`` costs more than the rest of an access line)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["ts"] = f"{self._prefix}.{int((now - second) * 1000):03d}Z"
        return event


def add_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """``request_id`` and ``notification_id`` of the request being served, if any."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    notification_id = NOTIFICATION_ID.get()
    if notification_id is not None:
        event.setdefault("notification_id", notification_id)
    return event


def _shared(clock: _Clock) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_ids,
        structlog.processors.add_log_level,
        clock,
        redact_fields,
    ]


def _json_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _json_bytes(value: Any, **_: Any) -> bytes:
    return orjson.dumps(value, default=str)


def _drop_color(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """uvicorn's copy of its message with terminal colour codes."""
    event.pop("color_message", None)
    return event


def _use_json(log_format: str, stream: Any) -> bool:
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty is not None and isatty())
    return log_format == "json"


def parse_levels(text: str | Iterable[str]) -> dict[str, str]:
    """``"pushgate.access=warning, uvicorn=error"`` -> ``{"pushgate.access": "WARNING", ...}``;
    ``ValueError`` naming a bad entry."""
    items = text.split(",") if isinstance(text, str) else list(text)
    levels: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, sep, level = item.partition("=")
        level = level.strip().upper()
        if not sep or not name.strip() or level not in logging.getLevelNamesMapping():
            raise ValueError(
                f"bad log level entry {item!r}: expected LOGGER=LEVEL, e.g. uvicorn=info"
            )
        levels[name.strip()] = level
    return levels


def logging_config(
    level: str, levels: Mapping[str, str] | None = None, log_format: str = "auto"
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: one handler on stderr, formatted by structlog
    and filtered by ``RedactSecrets``; uvicorn's and Pushgate's loggers at ``level``, then
    ``levels`` per logger."""
    clock = _Clock()
    renderer = (
        structlog.processors.JSONRenderer(serializer=_json_text)
        if _use_json(log_format, sys.stderr)
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": f"{__name__}.RedactSecrets"},
            "handshakes": {"()": f"{__name__}.OneLinePerHandshake"},
        },
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": [
                    structlog.stdlib.add_logger_name,
                    structlog.stdlib.ExtraAdder(),
                    _drop_color,
                    *_shared(clock),
                ],
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    renderer,
                ],
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper(), "filters": ["handshakes"]},
            "uvicorn.access": {"level": level.upper()},
            "pushgate": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        },
    }
    for name, named in (levels or {}).items():
        config["loggers"].setdefault(name, {})["level"] = named
    return config


def configure_logging(
    level: str, levels: Mapping[str, str] | None = None, log_format: str = "auto"
) -> None:
    """Configure the process's logging (standard ``logging`` and structlog) once, at start."""
    logging.config.dictConfig(logging_config(level, levels, log_format))
    renderer = (
        structlog.processors.JSONRenderer(serializer=_json_bytes)
        if _use_json(log_format, sys.stderr)
        else _to_bytes(structlog.dev.ConsoleRenderer(colors=False))
    )
    structlog.configure(
        processors=[*_shared(_Clock()), renderer],
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=True,
    )


def _to_bytes(renderer: Processor) -> Processor:
    def render(logger: WrappedLogger, name: str, event: EventDict) -> Any:
        out = renderer(logger, name, event)
        return out.encode() if isinstance(out, str) else out

    return render


class _Lines:
    """A structlog logger that keeps rendered lines and writes them to ``fd`` in batches:
    when ``ACCESS_BUFFER_BYTES`` have gathered, or ``ACCESS_FLUSH_SECONDS`` after the first
    line of a batch (on the running event loop), or at ``flush``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def msg(self, line: bytes) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= ACCESS_BUFFER_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(
                    ACCESS_FLUSH_SECONDS, self.flush
                )
            except RuntimeError:  # no loop: write at once
                self.flush()

    info = msg

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            data = b"\n".join(self._lines) + b"\n"
            self._lines.clear()
            self._size = 0
            with contextlib.suppress(OSError):
                while data:
                    data = data[os.write(self._fd, data) :]


class AccessLog:
    """The access line: ``line(event, **fields)`` with the request's fields (the path already
    redacted by the caller, the other fields are numbers and names). It skips structlog's
    processor chain (a few microseconds per request) but renders like it: ``orjson`` for JSON,
    structlog's console renderer on a terminal. ``create`` answers None when
    ``pushgate.access`` is not enabled for INFO: then nothing is spent per request."""

    def __init__(self, log_format: str = "auto", fd: int = 2) -> None:
        self._lines = _Lines(fd)
        self._json = _use_json(log_format, sys.stderr)
        self._console = _to_bytes(structlog.dev.ConsoleRenderer(colors=False))
        self._clock = _Clock()

    @classmethod
    def create(cls, log_format: str = "auto") -> AccessLog | None:
        if not logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO):
            return None
        return cls(log_format)

    def write(self, fields: dict[str, Any]) -> None:
        """One line of ``fields`` (``event`` among them); the dict is used up."""
        fields["logger"] = ACCESS_LOGGER
        fields["level"] = "info"
        self._clock(None, "info", fields)
        if self._json:
            self._lines.msg(orjson.dumps(fields))
        else:
            rendered = self._console(None, "info", fields)
            self._lines.msg(rendered if isinstance(rendered, bytes) else str(rendered).encode())

    def flush(self) -> None:
        self._lines.flush()
