"""The CLI's help: every command and argument described, flags shown without a type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from pushgate.cli import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if hasattr(group, "commands"):
        for name, command in group.commands.items():
            yield from _commands(command, (*path, name))


ROOT = typer.main.get_command(app)
PATHS = list(_commands(ROOT))


def _command(path: tuple[str, ...]) -> Any:
    command: Any = ROOT
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "pushgate")
def test_every_parameter_has_a_description(path: tuple[str, ...]) -> None:
    command = _command(path)
    assert command.help or command.short_help, f"pushgate {' '.join(path)} has no help"
    for param in command.params:
        assert getattr(param, "help", None), f"{param.name} of pushgate {' '.join(path)}"


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "pushgate")
def test_help_shows_flags_without_a_type(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output


def test_version() -> None:
    from pushgate import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"pushgate {__version__}"


LONG_RUNNING = {("serve",), ("worker",)}


@pytest.mark.parametrize(
    "path",
    [path for path in PATHS if path and not hasattr(_command(path), "commands")],
    ids=" ".join,
)
def test_every_command_prints_json_when_asked(path: tuple[str, ...]) -> None:
    options = {opt for param in _command(path).params for opt in getattr(param, "opts", [])}
    assert ("--json" in options) != (path in LONG_RUNNING), f"pushgate {' '.join(path)}"
