"""A helper process of a benchmark (a load generator, device receivers, a fake provider, a
baseline server): forked, so it shares no GIL with the server or the benchmark, and driven
over a pipe.

``entry(pipe, *args)`` runs in the child; it answers each command ``(cmd, args)`` it reads
with ``("ok", value)`` or ``("error", text)`` (a one-shot child just sends its one answer).

    child = Child("device receivers", _receivers_entry, ack_interval, batch)
    child.call("connect", host, port, tokens)      # send, then wait for the answer
    child.close()                                  # "close", then join (kill if need be)
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.harness import HarnessError
from benchmarks.harness.machine import cpu_seconds_pid


class Child:
    """``name`` is what errors call it; see the module docstring."""

    def __init__(self, name: str, entry: Callable[..., None], *args: Any) -> None:
        ctx = mp.get_context("fork")
        self.name = name
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=entry, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, cmd: str, *args: Any) -> None:
        self.pipe.send((cmd, args))

    def result(self, timeout: float, what: str = "") -> Any:
        """The next answer's value; HarnessError when it is an error, when none comes within
        ``timeout`` seconds, or when the child died."""
        if not self.pipe.poll(timeout):
            raise HarnessError(f"{self.name} did not answer {what!r} within {timeout:.0f}s")
        try:
            kind, value = self.pipe.recv()
        except EOFError as exc:
            raise HarnessError(f"{self.name} died") from exc
        if kind != "ok":
            raise HarnessError(f"{self.name}: {what}: {value}")
        return value

    def call(self, cmd: str, *args: Any, timeout: float = 60.0) -> Any:
        self.send(cmd, *args)
        return self.result(timeout, cmd)

    def cpu(self) -> float | None:
        """CPU seconds the child has used."""
        return cpu_seconds_pid(self.proc.pid)

    def close(self, command: str | None = "close", grace: float = 5.0) -> None:
        """Send ``command`` (if any) and wait up to ``grace`` seconds for the answer; then
        ``join``."""
        if command is not None:
            with contextlib.suppress(Exception):
                self.call(command, timeout=grace)
        self.join(grace)

    def join(self, grace: float = 5.0) -> None:
        """Wait up to ``grace`` seconds for the child to end, then kill it."""
        self.proc.join(grace)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def ask_all(
    children: Sequence[Child], cmd: str, per_child_args: Sequence[tuple[Any, ...]], timeout: float
) -> list[Any]:
    """Send ``cmd`` to every child at once (each with its own args), then collect the answers
    within ``timeout`` seconds in all."""
    for child, args in zip(children, per_child_args, strict=True):
        child.send(cmd, *args)
    deadline = time.monotonic() + timeout
    return [child.result(max(0.0, deadline - time.monotonic()), cmd) for child in children]
