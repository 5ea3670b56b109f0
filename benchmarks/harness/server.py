"""A Pushgate server for a benchmark, the event loop to drive clients with, a time limit."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson

from benchmarks.harness import HarnessError
from benchmarks.harness.http import post_json
from pushgate.testing.server import ServerProcess, ServerStartError, free_port

try:  # uvloop is a dependency of uvicorn[standard]; the harness works without it too
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

__all__ = [
    "LOOP",
    "Account",
    "Clock",
    "OwnServer",
    "free_port",
    "require_loopback",
    "run_loop",
    "uvloop",
]

LOOP = "uvloop" if uvloop is not None else "asyncio"
T = TypeVar("T")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    if uvloop is not None:
        return uvloop.run(coro)  # type: ignore[no-any-return]
    return asyncio.run(coro)


class OwnServer(ServerProcess):
    """``python -m pushgate serve`` on a free loopback port with a temporary data dir
    (``dir``), removed by ``stop()`` unless ``keep_dir``. Unlike ``ServerProcess`` it passes
    this process's ``PUSHGATE_*`` variables on (e.g. ``PUSHGATE_LOG_LEVELS``), and ``env``
    may be changed before ``start()``. The log is ``log_path`` (``server.log`` in ``dir``)."""

    def __init__(self, keep_dir: bool = False) -> None:
        super().__init__(tempfile.mkdtemp(prefix="pushgate-bench-"))
        self.keep_dir = keep_dir
        self.env = {
            **os.environ,
            "PUSHGATE_DATA_DIR": str(self.data_dir),
            # The fan-out benchmark holds as many device connections as the open-files limit
            # allows; the server's own default leaves 512 descriptors spare below it.
            "PUSHGATE_MAX_CONNECTIONS": "1000000",
        }

    @property
    def dir(self) -> Path:
        return self.data_dir

    @dir.setter
    def dir(self, path: Path) -> None:
        self.data_dir = path

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._proc

    def start(self, timeout: float = 30.0) -> OwnServer:
        """Start the server and wait until it answers; HarnessError when it does not."""
        self.startup_timeout = timeout
        if self._proc is not None and not self.running:
            self._reap()  # killed from outside (crash.py): close its log before a restart
        try:
            super().start()
        except ServerStartError as exc:
            raise HarnessError(str(exc)) from exc
        return self

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``python -m pushgate ARGS`` with the server's environment (its data dir)."""
        return subprocess.run(
            [sys.executable, "-m", "pushgate", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pushgate(self, *args: str, timeout: float = 600) -> str:
        """The output of ``python -m pushgate ARGS``; HarnessError when it fails."""
        done = self.cli(*args, timeout=timeout)
        if done.returncode != 0:
            raise HarnessError(f"pushgate {args[0]} failed: {done.stderr or done.stdout}")
        return done.stdout

    def settle(self, timeout: float) -> float:
        """Wait until the server (SQLite, in ``dir``) has no fan-out or delivery job left;
        the seconds waited. HarnessError after ``timeout`` seconds."""
        db = self.data_dir / "pushgate.db"
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with sqlite3.connect(db, timeout=30) as conn:
                (jobs,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
            if jobs == 0:
                return time.monotonic() - started
            time.sleep(0.2)
        raise HarnessError(f"the server still had jobs after {timeout} s")

    def create_account(self) -> str:
        """A new account's user token."""
        cp = self.cli("account", "create", "bench", "--json")
        if cp.returncode != 0:
            raise HarnessError(f"account create failed: {cp.stderr or cp.stdout}")
        try:
            data = orjson.loads(cp.stdout.strip().splitlines()[-1])
            return str(data["user_token"])
        except (ValueError, KeyError, IndexError) as exc:
            raise HarnessError(f"account create printed no user_token: {cp.stdout!r}") from exc

    def account(self) -> Account:
        """A new account, for set-up requests with its user token."""
        return Account(self.url, self.create_account())

    def stop(self) -> int | None:
        code = super().stop()
        if not self.keep_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return code


class Account:
    """An account of a running server, for set-up: ``post`` sends JSON with the account's
    bearer token (or other headers), ``instapush_app`` makes an app with one event."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.auth = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        """The answer's JSON (``http.post_json``)."""
        return post_json(self.base, path, self.auth if headers is None else headers, body)

    def instapush_app(self, title: str, event: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """A new app made through Instapush's ``/v1/apps/add``, with ``event`` added: its
        appID and the Instapush credential headers."""
        app = self.post("/v1/apps/add", {"title": title}, {"x-instapush-token": self.token})
        app_id = str(app["id"])
        creds = {"x-instapush-appid": app_id, "x-instapush-appsecret": str(app["secret"])}
        self.post("/v1/events/add", event, creds)
        return app_id, creds


def require_loopback(url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL whose host resolves to loopback only; else HarnessError."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise HarnessError(f"--server must be an http:// URL, got {url!r}")
    host = u.hostname
    try:
        addrs = {
            ai[4][0] for ai in socket.getaddrinfo(host, u.port or 80, proto=socket.IPPROTO_TCP)
        }
    except OSError as exc:
        raise HarnessError(f"cannot resolve {host!r}: {exc}") from exc
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise HarnessError(f"refusing non-loopback server {url!r} ({sorted(addrs)})")
    return host, u.port or 80


class Clock:
    """A time limit: ``left()`` seconds; ``need(what, s)`` raises HarnessError when fewer
    than ``s`` are left, ``check(what)`` when none are."""

    def __init__(self, limit: float) -> None:
        self.t0 = time.monotonic()
        self.deadline = self.t0 + limit

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def need(self, what: str, seconds: float = 1.0) -> float:
        left = self.left()
        if left < seconds:
            raise HarnessError(f"time limit reached before {what}")
        return left

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise HarnessError(f"time limit reached before {what}")
