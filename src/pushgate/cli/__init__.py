"""The ``pushgate`` command line."""

from __future__ import annotations

from pushgate.cli.main import app, main

__all__ = ["app", "main"]
