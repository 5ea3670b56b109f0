"""Reading the files of ``pushgate subscribers import``: CSV and NDJSON, into entries (one
``SourceRow`` each, with the line it starts on) that ``services/subscriber_import.py``
checks and writes.

An NDJSON line is an entry as it stands. A CSV row is turned into one (``csv_body``): its
header names the fields (``pushgate subscribers import --help`` lists the columns), an empty
cell leaves a field out, and a row that cannot be read becomes a ``SourceRow`` with the
reason, so that the import rejects it with its line and goes on. A file that cannot be
imported at all (its format or its header) is a ``BadFile``, before the first entry.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from pushgate.domain.import_entries import SourceRow
from pushgate.domain.subscribers import OPTINS, STANDARD, VENDOR_PREFIX

FORMATS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}
LIST_SEPARATOR = "|"
ATTRIBUTE_TYPES = ("string", "number", "bool", "date", "json")
_TYPE_NAMES = {"number": "a number", "json": "JSON"}
PROFILE_COLUMNS = ("language", "country", "timezone")
_DEVICE_COLUMNS = {
    "platform": "platform",
    "token": "token",
    "push_token": "token",
    **{
        f"device_{name}": name
        for name in ("name", "language", "country", "timezone", "model", "os_version")
    },
    "device_app_version": "app_version",
}
_WEB_KEYS = ("endpoint", "p256dh", "auth")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


class BadFile(Exception):
    """The file cannot be imported at all (its format or header); nothing was written."""


# -- CSV -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    kind: str  # identifier, profile, optin, tags, attribute, device, web, subscription
    name: str
    type: str | None = None


def _column(header: str) -> _Column:
    name = header.strip()
    if name in STANDARD or name.startswith(VENDOR_PREFIX):
        return _Column(header, "identifier", name)
    if name.startswith("identifiers.") and len(name) > len("identifiers."):
        return _Column(header, "identifier", name.removeprefix("identifiers."))
    if name in PROFILE_COLUMNS:
        return _Column(header, "profile", name)
    if name.startswith("optin_") and name.removeprefix("optin_") in OPTINS:
        return _Column(header, "optin", name.removeprefix("optin_"))
    if name in ("tags", "add_tags"):
        return _Column(header, "tags", name)
    if name.startswith(("d_", "c_")):
        attribute, _, kind = name.partition(":")
        if kind and kind not in ATTRIBUTE_TYPES:
            raise BadFile(
                f"column {header!r}: the type of an attribute is one of "
                f"{', '.join(ATTRIBUTE_TYPES)}"
            )
        return _Column(header, "attribute", attribute, kind or None)
    if name in _DEVICE_COLUMNS:
        return _Column(header, "device", _DEVICE_COLUMNS[name])
    if name in _WEB_KEYS:
        return _Column(header, "web", name)
    if name == "subscription":
        return _Column(header, "subscription", name)
    raise BadFile(
        f"column {header!r} is not an import column: see `pushgate subscribers import --help`"
    )


def csv_columns(header: list[str]) -> list[_Column]:
    columns = [_column(cell) for cell in header]
    names = [(column.kind, column.name) for column in columns]
    for number, item in enumerate(names):
        if item in names[:number]:
            raise BadFile(f"column {header[number]!r} repeats an earlier column")
    return columns


def _boolean(cell: str, header: str) -> bool:
    if cell.lower() in _TRUE:
        return True
    if cell.lower() in _FALSE:
        return False
    raise ValueError(f"{header}: {cell!r} is not true or false")


def _attribute(cell: str, column: _Column) -> Any:
    if column.type == "string":
        return cell
    if column.type == "date":
        return {"date": cell}
    if column.type == "bool":
        return _boolean(cell, column.header)
    try:
        value = orjson.loads(cell)
    except orjson.JSONDecodeError:
        if column.type is not None:
            raise ValueError(
                f"{column.header}: {cell!r} is not {_TYPE_NAMES[column.type]}"
            ) from None
        return cell
    if column.type == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{column.header}: {cell!r} is not a number")
    if column.type is None and isinstance(value, str | dict):
        return cell  # quoted text or an object: as written
    return value


def csv_body(columns: list[_Column], cells: list[str]) -> dict[str, Any]:
    """The NDJSON entry a CSV row stands for. ``ValueError`` says what is wrong with it."""
    if len(cells) != len(columns):
        raise ValueError(f"the row has {len(cells)} cells, the header {len(columns)} columns")
    identifiers: dict[str, Any] = {}
    body: dict[str, Any] = {"identifiers": identifiers}
    device: dict[str, Any] = {}
    web: dict[str, str] = {}
    for column, raw in zip(columns, cells, strict=True):
        cell = raw.strip()
        if not cell:
            continue
        if column.kind == "identifier":
            identifiers[column.name] = cell
        elif column.kind == "profile":
            body[column.name] = cell
        elif column.kind == "optin":
            body.setdefault("optins", {})[column.name] = _boolean(cell, column.header)
        elif column.kind == "tags":
            body[column.name] = [tag.strip() for tag in cell.split(LIST_SEPARATOR) if tag.strip()]
        elif column.kind == "attribute":
            body.setdefault("attributes", {})[column.name] = _attribute(cell, column)
        elif column.kind == "device":
            device[column.name] = cell
        elif column.kind == "web":
            web[column.name] = cell
        else:
            try:
                device["subscription"] = orjson.loads(cell)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"subscription is not JSON: {exc}") from None
    if web:
        keys = {name: web[name] for name in ("p256dh", "auth") if name in web}
        device["subscription"] = {"endpoint": web.get("endpoint"), "keys": keys}
    if device:
        body["devices"] = [device]
    return body


def csv_rows(handle: TextIO) -> Iterator[SourceRow]:
    """The entries of a CSV file, each with the line its row starts on. ``BadFile`` (before
    the first entry) when the header cannot be used."""
    reader = csv.reader(handle, strict=True)
    try:
        header = next(row for row in reader if row)
    except StopIteration:
        raise BadFile("the file is empty: a CSV import starts with a header row") from None
    except csv.Error as exc:
        raise BadFile(f"line {reader.line_num}: {exc}") from exc
    columns = csv_columns(header)
    return _csv_entries(reader, columns)


def _csv_entries(reader: Any, columns: list[_Column]) -> Iterator[SourceRow]:
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield SourceRow(line, error=f"not CSV: {exc}")
            continue
        if not cells:
            continue
        if any(_NOT_UTF8.search(cell) for cell in cells):
            yield SourceRow(line, error="the row is not UTF-8 text")
            continue
        try:
            yield SourceRow(line, csv_body(columns, cells))
        except ValueError as exc:
            yield SourceRow(line, error=str(exc))


# -- NDJSON ----------------------------------------------------------------------------------


def ndjson_rows(handle: TextIO) -> Iterator[SourceRow]:
    """One entry per line that is not blank."""
    for number, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        if _NOT_UTF8.search(raw):
            yield SourceRow(number, error="the line is not UTF-8 text")
            continue
        try:
            yield SourceRow(number, orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            yield SourceRow(number, error=f"not JSON: {exc}")


# -- the file ---------------------------------------------------------------------------------


def format_of(path: Path, given: str | None) -> str:
    """``csv`` or ``ndjson``: as ``given`` (``--format``), else by the file's extension."""
    if given is not None:
        if given not in ("csv", "ndjson"):
            raise BadFile(f"--format is csv or ndjson, not {given!r}")
        return given
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise BadFile(
            f"{path.name}: say which format it is with --format csv or --format ndjson "
            f"(known extensions: {', '.join(FORMATS)})"
        )
    return found


def count_lines(path: Path) -> int:
    """The lines of the file (for the progress bar)."""
    count = 0
    last = b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")
