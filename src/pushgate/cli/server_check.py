"""Whether the server a command points the user to works on the command's data.

A command that tells the user to call a server (``account create`` prints a curl example)
asks that server's ``GET /api/v1/health`` for its ``data_id`` and compares it with its own
(``data_identity.py``): a server on another data directory or database would refuse the
tokens the command just made, and the user is told so instead of meeting a 401.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from pushgate.config import Settings
from pushgate.data_identity import data_id

HEALTH_PATH = "/api/v1/health"
TIMEOUT_SECONDS = 1.0
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def server_url(settings: Settings, port: int | None = None) -> str:
    """The URL of a server run with ``settings`` (``port`` when it differs), as a client on
    this machine reaches it."""
    host = _ANY_ADDRESS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port if port is None else port}"


def on_every_address(host: str) -> bool:
    """Whether listening on ``host`` means every address of the machine."""
    return host in _ANY_ADDRESS


@dataclass(frozen=True, slots=True)
class ServerSeen:
    # None: nothing answered; "": something answered, but not with a data id.
    data_id: str | None

    @property
    def answered(self) -> bool:
        return self.data_id is not None


def look_at(url: str) -> ServerSeen:
    """What answers at ``url``'s health path (within ``TIMEOUT_SECONDS``)."""
    try:
        with httpx2.Client(timeout=TIMEOUT_SECONDS, trust_env=False) as client:
            resp = client.get(url.rstrip("/") + HEALTH_PATH)
    except httpx2.HTTPError:
        return ServerSeen(None)
    try:
        found = resp.json().get("data_id") if resp.status_code == 200 else None
    except (ValueError, AttributeError):
        found = None
    return ServerSeen(found if isinstance(found, str) else "")


def mismatch_note(settings: Settings, url: str) -> str | None:
    """What to tell the user when the server at ``url`` does not work on ``settings``' data
    (or none runs there); None when it does."""
    seen = look_at(url)
    if not seen.answered:
        return (
            f"No Pushgate server answers at {url} yet: start one with `pushgate serve` on "
            "this data directory."
        )
    if seen.data_id == data_id(settings):
        return None
    return (
        f"The server at {url} works on another data directory (or database): it does not "
        "know what this command made here, and refuses its tokens. Run the command with the "
        "server's --data-dir (or PUSHGATE_DATA_DIR), or start a server on this data "
        "directory with another --port."
    )


def occupant_note(settings: Settings, url: str) -> str:
    """Who holds the busy port at ``url``, when it is a Pushgate server."""
    seen = look_at(url)
    if not seen.answered:
        return ""
    if seen.data_id == data_id(settings):
        return f" A Pushgate server on this data directory is already running at {url}."
    if seen.data_id:
        return f" A Pushgate server on another data directory is running at {url}."
    return ""
