"""``pushgate worker``: delivery workers in a process of their own."""

from __future__ import annotations

import asyncio
import signal

import typer

from pushgate.config import Settings


def worker_loop() -> asyncio.AbstractEventLoop:
    """The worker's event loop: uvloop where it is installed (``uvicorn[standard]`` brings it
    on Linux and macOS, and ``pushgate serve`` runs on it through uvicorn), else asyncio's
    own. On uvloop a worker spends about a fifth less CPU on the same jobs (its sockets to
    Redis, PostgreSQL and the providers; see docs/performance.md, "Scale-out")."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or an install without uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def run_worker(settings: Settings) -> None:
    """Run fan-out, channel and push workers until SIGTERM or SIGINT, then stop cleanly
    (jobs in flight are finished for a few seconds, or left to come back after their lease)."""
    from pushgate.app import tune_interpreter
    from pushgate.observability.exposition import metrics_listener
    from pushgate.runtime import build_runtime
    from pushgate.storage.migrate import migrate

    runtime = build_runtime(settings, accepting=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await migrate(runtime.db)
    tune_interpreter()
    await runtime.start(accepting=False, working=True)
    listener = await metrics_listener(settings, runtime)
    typer.echo(
        f"Pushgate worker running (queue: {runtime.queue.kind}, "
        f"platforms: channel, {', '.join(sorted(runtime.transports))}); Ctrl-C stops it",
        err=True,
    )
    try:
        await stop.wait()
    finally:
        if listener is not None:
            listener.close()
        await runtime.stop()
