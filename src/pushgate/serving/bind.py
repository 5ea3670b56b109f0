"""The listening socket of ``pushgate serve``, bound before anything else starts, so that a
busy port is reported at once, by the option that changes it."""

from __future__ import annotations

import errno
import socket


class CannotListen(Exception):  # noqa: N818 - it says what it is
    """The address or port cannot be listened on; ``str()`` says what to change."""

    def __init__(self, message: str, *, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (not listening yet: uvicorn starts that)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _explained(host, port, exc) from exc
    return sock


def _explained(host: str, port: int, exc: OSError) -> CannotListen:
    where = f"Cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return CannotListen(
            f"{where}: the port is in use. Choose another with --port N (or PUSHGATE_PORT=N).",
            in_use=True,
        )
    if exc.errno == errno.EACCES:
        return CannotListen(
            f"{where}: ports below 1024 need privileges. Choose another with --port N "
            "(or PUSHGATE_PORT=N)."
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return CannotListen(
            f"{where}: {host} is not an address of this machine. Choose another with "
            "--host ADDRESS (or PUSHGATE_HOST=ADDRESS), e.g. 127.0.0.1 or 0.0.0.0."
        )
    return CannotListen(
        f"{where}: {exc.strerror or exc}. Change --host or --port (PUSHGATE_HOST, PUSHGATE_PORT)."
    )
