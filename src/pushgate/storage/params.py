"""Bound-parameter markers for the plain SQL on the hot paths."""

from __future__ import annotations


def markers(postgres: bool, count: int, start: int = 1) -> list[str]:
    """``count`` numbered markers from ``start``: ``$n`` for asyncpg, ``?n`` for SQLite.
    Numbered on SQLite too, so a statement may use its parameters in any order."""
    sign = "$" if postgres else "?"
    return [f"{sign}{start + i}" for i in range(count)]
