"""XML in the style of .NET's DataContract serializer, as Push API v2's clients send and expect it.

Reading (``fields``): the root element may have any name and a default namespace; its
children are the fields, named like the JSON members, in any order; ``i:nil="true"`` (the
``http://www.w3.org/2001/XMLSchema-instance`` namespace) is null; a field with child elements
is deeper than a flat request allows and is refused. The root must declare that namespace
(``xmlns:i``), as the vendor requires.

Writing (``to_xml``): the root and its children in alphabetical order (the order the
serializer itself writes and requires), ``i:nil="true"`` for null, ``true``/``false`` for
booleans, nested objects as elements and lists as repeated elements named by ``item_names``.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET  # noqa: S405 - only building and types; parsing is defusedxml
from collections.abc import Mapping
from typing import Any

from defusedxml.ElementTree import iterparse

from pushgate.domain.errors import InvalidInput
from pushgate.web.documents import local_name

XSI = "http://www.w3.org/2001/XMLSchema-instance"
NIL = f"{{{XSI}}}nil"


def root_declares_xsi(raw: bytes) -> bool:
    """Whether the root element declares ``xmlns:i`` as the XML Schema instance namespace
    (call after the document was parsed safely: it has no DTD)."""
    for event, value in iterparse(
        io.BytesIO(raw), events=("start-ns", "start"), forbid_dtd=True, forbid_entities=True
    ):
        if event == "start":
            return False
        prefix, uri = value
        if prefix == "i" and uri == XSI:
            return True
    return False


def fields(root: ET.Element) -> dict[str, str | None]:
    """The root's children by local name: their text (stripped), None for ``i:nil``."""
    found: dict[str, str | None] = {}
    for child in root:
        name = local_name(child.tag)
        if len(child):
            raise InvalidInput(f"{name} must be a single value, not nested elements")
        if name in found:
            raise InvalidInput(f"{name} is given twice")
        nil = child.get(NIL, "").strip().lower() == "true"
        found[name] = None if nil else (child.text or "").strip()
    return found


def to_xml(
    root: str,
    values: Mapping[str, Any],
    namespace: str,
    item_names: Mapping[str, str] | None = None,
) -> bytes:
    """``values`` as a DataContract document rooted at ``root`` in ``namespace``."""
    ET.register_namespace("i", XSI)
    element = ET.Element(f"{{{namespace}}}{root}")
    _fill(element, values, namespace, item_names or {})
    text = ET.tostring(element, encoding="unicode", default_namespace=namespace)
    if "xmlns:i=" not in text:  # the serializer always declares it on the root
        declared = f'xmlns="{namespace}"'
        text = text.replace(declared, f'{declared} xmlns:i="{XSI}"', 1)
    return text.encode()


def _fill(
    element: ET.Element, values: Mapping[str, Any], namespace: str, items: Mapping[str, str]
) -> None:
    for name in sorted(values):
        child = ET.SubElement(element, f"{{{namespace}}}{name}")
        _value(child, name, values[name], namespace, items)


def _value(
    element: ET.Element, name: str, value: Any, namespace: str, items: Mapping[str, str]
) -> None:
    if value is None:
        element.set(NIL, "true")
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif isinstance(value, Mapping):
        _fill(element, value, namespace, items)
    elif isinstance(value, list | tuple):
        item = items.get(name, "item")
        for entry in value:
            _value(ET.SubElement(element, f"{{{namespace}}}{item}"), item, entry, namespace, items)
    else:
        element.text = str(value)
