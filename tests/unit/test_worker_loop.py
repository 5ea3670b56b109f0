"""`pushgate worker` runs on uvloop when it is installed, like `pushgate serve` (uvicorn)."""

from __future__ import annotations

import asyncio

import pytest

from pushgate.cli.worker import worker_loop


def test_worker_loop_is_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = worker_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()
