"""The Send page's form read into the native API's send request (``api.native.send.SendIn``,
with its ``AudienceIn`` and ``TranslationsIn``): the same checks and the same command as
``POST /api/v1/notifications``. Nothing here decides what a send means; it only turns form
fields into that request.

- content: ``title``, ``message``, ``image_url``, ``deep_link``, ``priority``, ``campaign``;
- translations: the content is the ``default_language``'s text, and up to
  ``TRANSLATION_ROWS`` rows add other languages (``t0_language``, ``t0_title``,
  ``t0_message``, ...);
- audience: ``platforms`` (checkboxes), lists typed as ``a, b`` (countries, languages, tags,
  events and their exclusions), one subscriber a line as ``key=value``, one attribute
  condition, and flags. Untouched (and ``personal`` checked): no audience, i.e. every enabled
  device of the app and the account's personal channel devices;
- when: ``now``, ``at`` (``send_date`` at ``send_offset``) or ``local`` (that date and time
  in each device's timezone; ``send_offset`` for devices without one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pushgate.dashboard.web import Page
from pushgate.domain.errors import InvalidInput
from pushgate.domain.schedules import MAX_OFFSET, MIN_OFFSET, format_offset

TRANSLATION_ROWS = 3
PLATFORMS = ("ios", "android", "huawei", "web", "channel")
LISTS = (
    "countries",
    "exclude_countries",
    "languages",
    "exclude_languages",
    "tags",
    "exclude_tags",
    "events",
    "exclude_events",
)
FLAGS = ("optin_required", "engaged_only", "last_active_device_only", "personal")
OPERATORS = ("in", "not_in", "exists", "missing", "gt", "gte", "lt", "lte")
TEXTS = (
    "app_id",
    "title",
    "message",
    "image_url",
    "deep_link",
    "priority",
    "campaign",
    "default_language",
    "when",
    "send_date",
    "send_offset",
    "subscribers",
    "attr_name",
    "attr_op",
    "attr_values",
    *LISTS,
    *(f"t{n}_{name}" for n in range(TRANSLATION_ROWS) for name in ("language", "title", "message")),
)
# Where an error is shown: a field of the form, or one of its groups.
GROUPS = {
    "audience": "audience",
    "translations": "translations",
    "send_at": "when",
    "local_time": "when",
}
FIELDS = ("app_id", "title", "message", "image_url", "deep_link", "priority", "campaign")
OFFSETS = tuple(format_offset(m) for m in range(MIN_OFFSET, MAX_OFFSET + 1, 15))
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")


def form_values(page: Page) -> dict[str, Any]:
    """The form as given (shown back when it is refused)."""
    form: dict[str, Any] = {name: page.text(name) for name in TEXTS}
    given = [] if page.form is None else page.form.getlist("platforms")
    form["platforms"] = [p for p in PLATFORMS if p in given]
    for flag in FLAGS:
        form[flag] = page.text(flag) == "on"
    return form


def blank_form() -> dict[str, Any]:
    """A new form: sent now, with the personal channel devices, at offset +00:00."""
    return {"when": "now", "personal": True, "send_offset": "+00:00", "platforms": []}


def words(text: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", text) if part]


def _value(text: str) -> str | float | bool:
    if _NUMBER.fullmatch(text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def _subscribers(text: str) -> list[dict[str, str]] | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    found = []
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInput(f"audience.subscribers: write one a line as key=value, not {line!r}")
        found.append({key.strip(): value.strip()})
    return found


def audience_body(form: dict[str, Any]) -> dict[str, Any] | None:
    """The request's ``audience``; None when the form leaves the default."""
    body: dict[str, Any] = {}
    if form["platforms"]:
        body["platforms"] = form["platforms"]
    for name in LISTS:
        items = words(form[name])
        if items:
            body[name] = items
    subscribers = _subscribers(form["subscribers"])
    if subscribers is not None:
        body["subscribers"] = subscribers
    if form["attr_name"]:
        values = [_value(v.strip()) for v in form["attr_values"].split(",") if v.strip()]
        body["attributes"] = [
            {"name": form["attr_name"], "op": form["attr_op"] or "in", "values": values}
        ]
    for flag in FLAGS[:-1]:
        if form[flag]:
            body[flag] = True
    if not body and form["personal"]:
        return None
    body["personal"] = form["personal"]
    return body


def translations_body(form: dict[str, Any]) -> dict[str, Any] | None:
    rows = [
        {
            "language": form[f"t{n}_language"],
            "title": form[f"t{n}_title"] or None,
            "message": form[f"t{n}_message"],
        }
        for n in range(TRANSLATION_ROWS)
        if form[f"t{n}_language"] or form[f"t{n}_message"]
    ]
    default = form["default_language"]
    if not rows:
        return None
    if not default:
        raise InvalidInput("translations: name the default language (the text above is in it)")
    own = {
        "language": default,
        "title": form["title"] or None,
        "message": form["message"],
        "image_url": form["image_url"] or None,
        "link": form["deep_link"] or None,
    }
    return {"default_language": default, "items": [own, *rows]}


def send_at(form: dict[str, Any]) -> str | None:
    if form["when"] not in ("at", "local"):
        return None
    date, offset = form["send_date"], form["send_offset"] or "+00:00"
    if not _DATE.fullmatch(date):
        raise InvalidInput("send_at: choose a date and a time")
    if offset not in OFFSETS:
        raise InvalidInput("send_at: choose an offset such as +01:00")
    return f"{date if len(date) > 16 else date + ':00'}{offset}"


def send_body(form: dict[str, Any]) -> dict[str, Any]:
    """The native send request of the form (``InvalidInput`` for what it cannot say)."""
    body: dict[str, Any] = {
        name: form[name]
        for name in ("app_id", "title", "message", "image_url", "deep_link", "priority")
        if form[name]
    }
    if form["campaign"]:
        body["campaign"] = {"id": form["campaign"]}
    audience = audience_body(form)
    if audience is not None:
        body["audience"] = audience
    translations = translations_body(form)
    if translations is not None:
        body["translations"] = translations
    when = send_at(form)
    if when is not None:
        body["send_at"] = when
        body["local_time"] = form["when"] == "local"
    return body


def group_of(message: str) -> str:
    """Where a refusal's message is shown: the group or field it starts with, else the form."""
    head = re.split(r"[.:\[ ]", message.removeprefix("Invalid request: "), maxsplit=1)[0]
    return GROUPS.get(head, head if head in FIELDS else "form")


def validation_errors(exc: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = loc[0] if loc else "form"
        where = GROUPS.get(name, name if name in FIELDS else "form")
        detail = ".".join(loc[1:])
        found.setdefault(where, f"{detail}: {error['msg']}" if detail else str(error["msg"]))
    return found


@dataclass(frozen=True, slots=True)
class Preview:
    """One language's text, as the previews show it (a translation's own title, image and
    link when it has them: the text a device of that language gets)."""

    language: str
    title: str
    message: str


def previews(form: dict[str, Any]) -> list[Preview]:
    found = [Preview(form["default_language"] or "", form["title"], form["message"])]
    for n in range(TRANSLATION_ROWS):
        if form[f"t{n}_language"] or form[f"t{n}_message"]:
            found.append(
                Preview(
                    form[f"t{n}_language"],
                    form[f"t{n}_title"],
                    form[f"t{n}_message"],
                )
            )
    return found
