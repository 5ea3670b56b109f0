"""How ``--help`` shows options: a flag takes no value, so it gets no type.

typer renders every option's type in its help panel, flags included (``--json <bool>``),
which reads as if the flag took a value. This module is the one place that changes that:
``TyperOption.display_type_rich`` answers None (no type column) for flags and counters.
``tests/unit/test_cli_help.py`` pins the behaviour it relies on.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_original = TyperOption.display_type_rich


def _display_type(self: TyperOption, ctx: Any) -> Any:
    if self.is_flag or self.count:
        return None
    return _original(self, ctx)


def install() -> None:
    """Render flags without a type (idempotent)."""
    TyperOption.display_type_rich = _display_type  # type: ignore[method-assign]
