"""PostgreSQL notices between processes: ``NOTIFY`` on a channel, heard by every process that
``listen``s to it.

A notice sent in a transaction (``pg_notify``) reaches the listeners when that transaction
commits, and never if it rolls back, so a notice never announces what is not there yet. Notices
are a wake-up, not a store: one sent while nobody listens (or while a listener's connection is
down) is gone, so whoever relies on them also looks for itself now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

# How long a listening connection may stay silent before it is asked whether it still answers.
CHECK_SECONDS = 30.0
# Options of a database URL that SQLAlchemy's asyncpg adapter takes, not asyncpg.
_ADAPTER_ONLY = (
    "async_creator_fn",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
)


def connect_arguments(url: str) -> dict[str, Any]:
    """``asyncpg.connect``'s arguments for a SQLAlchemy ``postgresql+asyncpg://`` URL, made by
    SQLAlchemy's own dialect as for the pool's connections (host, port, user, password,
    database, and query options such as ``ssl``), without those only its adapter takes."""
    parsed = make_url(url)
    _, arguments = parsed.get_dialect()().create_connect_args(parsed)
    for adapter_only in _ADAPTER_ONLY:
        arguments.pop(adapter_only, None)
    return dict(arguments)


async def listen(
    url: str,
    channel: str,
    on_payload: Callable[[str], None],
    *,
    on_listening: Callable[[], None] = lambda: None,
    check_seconds: float = CHECK_SECONDS,
) -> None:
    """Call ``on_payload`` with the payload of every notice on ``channel``, over a connection
    of its own, until that connection is lost or stops answering; then return (call again to
    listen again). ``on_listening`` is called once the notices are being heard. Raises what
    connecting raises."""
    conn = await asyncpg.connect(**connect_arguments(url), timeout=check_seconds)
    try:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(channel, lambda _conn, _pid, _channel, payload: on_payload(payload))
        on_listening()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), check_seconds)
                return
            # Silent for a while: a connection cut off without a word looks the same.
            await asyncio.wait_for(conn.fetchval("SELECT 1"), check_seconds)
    finally:
        conn.terminate()
