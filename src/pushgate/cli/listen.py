"""``pushgate listen``: act as a channel device and print what arrives."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import sys
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import orjson
import typer
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from pushgate.cli.database import report_data_dir
from pushgate.cli.server_check import server_url
from pushgate.config import load_settings

STATE_FILE = "listen-devices.json"
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0


class TokenRejected(Exception):
    """The server does not accept the token we hold."""


def _state_key(server: str, user_token: str) -> str:
    return server + "|" + hashlib.sha256(user_token.encode()).hexdigest()[:16]


class DeviceState:
    """The device this data directory registered for a server and account."""

    def __init__(self, path: Path, key: str) -> None:
        self._path = path
        self._key = key

    def _read(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self._path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def load(self) -> dict[str, Any] | None:
        entry = self._read().get(self._key)
        return entry if isinstance(entry, dict) else None

    def save(self, entry: dict[str, Any]) -> None:
        everything = self._read()
        everything[self._key] = entry
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(everything, handle)
        tmp.replace(self._path)


def _ws_url(server: str) -> str:
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/api/v1/channel/ws"
    return urlunsplit((scheme, parts.netloc, path, "batch=1", ""))


def _status(text: str) -> None:
    print(f"pushgate listen: {text}", file=sys.stderr, flush=True)


class Listener:
    def __init__(self, server: str, user_token: str, state: DeviceState, as_json: bool) -> None:
        self._server = server.rstrip("/")
        self._user_token = user_token
        self._state = state
        self._json = as_json
        self.received = 0
        self.backoff = BACKOFF_START

    async def _register(self) -> dict[str, Any]:
        async with httpx2.AsyncClient(timeout=10) as client:
            response = await client.post(
                self._server + "/api/v1/devices",
                headers={"Authorization": f"Bearer {self._user_token}"},
                json={"platform": "channel", "name": f"pushgate listen on {socket.gethostname()}"},
            )
        if response.status_code == 401:
            raise TokenRejected("the server does not accept this user token")
        response.raise_for_status()
        body = response.json()
        entry = {"device_id": body["id"], "device_token": body["device_token"]}
        self._state.save(entry)
        _status(f"registered channel device {entry['device_id']}")
        return entry

    def _show(self, message: dict[str, Any]) -> None:
        if self._json:
            sys.stdout.write(orjson.dumps(message).decode() + "\n")
        else:
            stamp = datetime.now().strftime("%H:%M:%S")
            event = message.get("event") or message.get("title") or "notification"
            sys.stdout.write(f"[{stamp}] {event}: {message.get('message')}\n")
        sys.stdout.flush()

    async def _session(self, device_token: str, limit: int | None) -> bool:
        """One connection; returns True when ``limit`` notifications have been shown."""
        headers = {"Authorization": f"Bearer {device_token}"}
        try:
            async with connect(
                _ws_url(self._server), additional_headers=headers, compression=None
            ) as websocket:
                async for raw in websocket:
                    message = orjson.loads(raw)
                    kind = message.get("type")
                    if kind == "ready":
                        _status(f"connected to {self._server} as device {message['device_id']}")
                        self.backoff = BACKOFF_START
                    elif kind in ("notification", "batch"):
                        items = message["notifications"] if kind == "batch" else [message]
                        if limit is not None:
                            items = items[: limit - self.received]
                        for item in items:
                            self._show(item)
                        ids = [item["id"] for item in items]
                        await websocket.send(orjson.dumps({"type": "ack", "ids": ids}).decode())
                        self.received += len(items)
                        if limit is not None and self.received >= limit:
                            return True
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise TokenRejected("the server does not accept the saved device token") from exc
            raise
        return False

    async def run(self, limit: int | None) -> None:
        entry = self._state.load()
        while True:
            try:
                if entry is None:
                    entry = await self._register()
                if await self._session(entry["device_token"], limit):
                    return
                _status("connection closed by the server")
            except TokenRejected as exc:
                if entry is not None and "saved device token" in str(exc):
                    _status("saved device is no longer known; registering a new one")
                    entry = None
                    continue
                raise
            except (OSError, WebSocketException, httpx2.HTTPError) as exc:
                _status(f"connection to {self._server} lost or refused ({exc.__class__.__name__})")
            delay = self.backoff * random.uniform(0.8, 1.2)
            _status(f"reconnecting in {delay:.1f}s")
            await asyncio.sleep(delay)
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)


async def _until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work``; SIGINT or SIGTERM stop it cleanly, so the acknowledgement of what was
    printed last still goes out and the connection is closed properly."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        _status("stopped")


def listen(
    user_token: Annotated[
        str, typer.Option(help="User token of the account (pushgate account create).")
    ],
    server: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the Pushgate server (default: http://127.0.0.1:PORT, the port "
            "of the settings, PUSHGATE_PORT).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per notification.")
    ] = False,
    count: Annotated[
        int | None, typer.Option(min=1, help="Exit after this many notifications.")
    ] = None,
) -> None:
    """Act as a channel device of an account and print every notification it receives.

    Registers a device the first time (saved in the data directory and reused later),
    acknowledges what it prints, and reconnects by itself, with backoff, when the server
    goes away; on reconnect it receives what it missed.
    """
    settings = load_settings()
    if server is None:
        server = server_url(settings)
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        typer.secho("--server must be an http:// or https:// URL", fg="red", err=True)
        raise typer.Exit(2)
    report_data_dir(settings)
    state = DeviceState(
        settings.ensure_data_dir() / STATE_FILE, _state_key(server.rstrip("/"), user_token)
    )
    listener = Listener(server, user_token, state, as_json)
    try:
        asyncio.run(_until_signalled(listener.run(count)))
    except TokenRejected as exc:
        typer.secho(f"pushgate listen: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    with contextlib.suppress(Exception):
        sys.stdout.flush()
