"""Event message templates such as ``{email} has signed up from {country}``.

The grammar is deliberately tiny and never evaluates anything:

* ``{name}`` is a placeholder; ``name`` must be one of the event's trackers;
* ``{{`` and ``}}`` are a literal ``{`` and ``}``;
* any other brace is an error reported when the event is created.

Values are inserted verbatim, so a value containing braces stays as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pushgate.domain.errors import InvalidInput

TRACKER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$")
MAX_TRACKERS = 64
MAX_TEMPLATE_CHARS = 4096
MAX_MESSAGE_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text alternating with placeholder names."""

    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for part in self.parts:
            if isinstance(part, Placeholder):
                seen.setdefault(part.name, None)
        return tuple(seen)

    def render(self, values: Mapping[str, str]) -> str:
        missing = [name for name in self.placeholders if name not in values]
        if missing:
            raise InvalidInput(f"Missing tracker value: {', '.join(missing)}")
        pieces = [
            values[part.name] if isinstance(part, Placeholder) else part for part in self.parts
        ]
        if sum(map(len, pieces)) > MAX_MESSAGE_CHARS:
            raise InvalidInput(
                f"The rendered message is longer than {MAX_MESSAGE_CHARS} characters; "
                "send shorter tracker values"
            )
        return "".join(pieces)


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str


def validate_trackers(trackers: Sequence[str]) -> tuple[str, ...]:
    if len(trackers) > MAX_TRACKERS:
        raise InvalidInput(f"An event can have at most {MAX_TRACKERS} trackers")
    for name in trackers:
        if not TRACKER_NAME.match(name):
            raise InvalidInput(
                f"Invalid tracker name {name!r}: use 1-64 letters, digits, '_' or '-'"
            )
    if len(set(trackers)) != len(trackers):
        raise InvalidInput("Tracker names must be unique")
    return tuple(trackers)


def parse_template(text: str, trackers: Sequence[str]) -> Template:
    """Parse ``text``; every placeholder must name one of ``trackers``."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise InvalidInput(f"message is longer than {MAX_TEMPLATE_CHARS} characters")
    known = set(trackers)
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "{":
            if text.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = text.find("}", i + 1)
            nested = text.find("{", i + 1)
            if end == -1 or (nested != -1 and nested < end):
                raise InvalidInput(
                    f"Unclosed '{{' at position {i} in message; write '{{{{' for a literal brace"
                )
            name = text[i + 1 : end]
            if name not in known:
                listed = ", ".join(trackers) if trackers else "(none)"
                raise InvalidInput(
                    f"Message uses {{{name}}}, which is not one of the event's trackers: {listed}"
                )
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Placeholder(name))
            i = end + 1
        elif char == "}":
            if text.startswith("}}", i):
                literal.append("}")
                i += 2
                continue
            raise InvalidInput(
                f"Unmatched '}}' at position {i} in message; write '}}}}' for a literal brace"
            )
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append("".join(literal))
    return Template(tuple(parts))
