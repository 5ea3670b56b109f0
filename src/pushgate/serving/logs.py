"""Log configuration of ``pushgate serve``, and the filter that keeps secrets out of it.

Every handler passes its records through ``RedactSecrets``: a query parameter whose name
says it carries a secret (``token``, ``key``, ``secret``, ``password``...) has its value
replaced, and device tokens (``dvt_...``) are replaced wherever they appear. User tokens, app
secrets and keys travel in headers and bodies, which are never logged.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

REDACTED = "[redacted]"
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


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, every handler filtered by ``RedactSecrets``; the
    ``pushgate`` loggers go to the same handler at ``level``; a refused WebSocket handshake
    is logged once (by uvicorn), not twice."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "redact": {"()": f"{__name__}.RedactSecrets"},
        "handshakes": {"()": f"{__name__}.OneLinePerHandshake"},
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["loggers"]["uvicorn.error"]["filters"] = ["handshakes"]
    config["loggers"]["pushgate"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
