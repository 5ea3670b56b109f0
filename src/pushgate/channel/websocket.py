"""The device channel's connection rules, shared by its WebSocket (``channel.server``), SSE
and poll endpoints (``channel.routes``): the device's token, the ``since`` and ``batch``
options, and the reports a device sends (docs/channel.md)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import HTTPConnection

from pushgate.channel.session import DeviceSession
from pushgate.domain.errors import MAX_ID, InvalidInput
from pushgate.runtime import Runtime
from pushgate.services.devices import Device
from pushgate.web.auth import bearer

PATH = "/api/v1/channel/ws"
MAX_ACK_IDS = 1000
INVALID_DEVICE_TOKEN = (
    "Missing or invalid device token: send a channel device's token as 'Authorization: "
    "Bearer <device_token>' or '?token=<device_token>' (POST /api/v1/devices with platform "
    "channel issues one; devices of other platforms are reached through their provider)"
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


async def connecting_device(rt: Runtime, connection: HTTPConnection) -> Device | None:
    """The enabled channel device whose token the request carries (``Authorization: Bearer``
    or ``?token=``), for every channel endpoint: a device of a push platform is not one (its
    deliveries are its provider's to report). Failures count towards the client's throttle
    (``TooManyRequests`` while it is throttled)."""
    token = bearer(connection) or connection.query_params.get("token")

    async def check() -> Device | None:
        device = await rt.devices.authenticate(token)
        if device is None or not device.enabled or device.platform != "channel":
            return None
        return device

    client = connection.client
    return await rt.throttle.authenticate(client.host if client else None, None, check)


def device_session(rt: Runtime, device: Device) -> DeviceSession:
    return DeviceSession(device.id, rt.hub, rt.notifications, rt.pipeline)


REPORTS = ("ack", "opened")


def report_ids(message: object) -> tuple[str, list[int]]:
    """A device's report: ``{"type": "ack" | "opened", "ids": [<notification id>, ...]}``."""
    kind = message.get("type") if isinstance(message, dict) else None
    if kind not in REPORTS or not isinstance(message, dict):
        raise InvalidInput(
            'Expected {"type": "ack", "ids": [<notification id>, ...]} (shown) or '
            '{"type": "opened", "ids": [...]} (the user opened them)'
        )
    ids = message.get("ids")
    if not isinstance(ids, list) or len(ids) > MAX_ACK_IDS:
        raise InvalidInput(f"ids must be a list of at most {MAX_ACK_IDS} notification ids")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ID for i in ids):
        raise InvalidInput("ids must be positive integers")
    return str(kind), ids


def parse_options(query: Mapping[str, str]) -> tuple[int | None, bool]:
    """``since`` and ``batch`` from the query string; ``InvalidInput`` says what is wrong."""
    since: int | None = None
    raw_since = query.get("since")
    if raw_since is not None:
        if not raw_since.isdigit() or len(raw_since) > 19 or int(raw_since) > MAX_ID:
            raise InvalidInput(f"since must be a notification id from 0 to {MAX_ID}")
        since = int(raw_since)
    raw_batch = query.get("batch", "").lower()
    if raw_batch not in _TRUE | _FALSE:
        raise InvalidInput("batch must be 1 or 0 (true or false)")
    return since, raw_batch in _TRUE
