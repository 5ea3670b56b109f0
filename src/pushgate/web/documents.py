"""Request documents: a JSON object or an XML element, read through one size-capped reader.

A face that takes both (Push API v2) reads its body with ``read_document``: the
``Content-Type`` chooses JSON (``application/json``) or XML (``application/xml``,
``text/xml``), and a face names the kind it assumes when there is none. XML is parsed without
DTDs, entities or external references (defusedxml): a document that declares any of them is
refused, so no entity expansion and no outbound fetch can happen.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - only the types; parsing goes through defusedxml
from dataclasses import dataclass
from typing import Any, Literal

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from starlette.requests import Request

from pushgate.domain.errors import InvalidInput, UnsupportedMediaType
from pushgate.web.body import is_json, parse_json_object, read_body

Kind = Literal["json", "xml"]
XML_MEDIA = ("application/xml", "text/xml")
MAX_XML_ELEMENTS = 10_000


@dataclass(frozen=True, slots=True)
class Document:
    """A request body: ``json`` (an object) or ``xml`` (the root element)."""

    kind: Kind
    value: dict[str, Any] | ET.Element

    def field(self, name: str) -> str | None:
        """A top-level text field: a JSON string (or number) member, or the text of a child
        element of the root with this local name (namespaces ignored)."""
        if isinstance(self.value, dict):
            found = self.value.get(name)
            if isinstance(found, bool) or not isinstance(found, str | int):
                return None
            return str(found)
        for child in self.value:
            if local_name(child.tag) == name:
                return (child.text or "").strip()
        return None


def local_name(tag: str) -> str:
    """``{namespace}Name`` -> ``Name``."""
    return tag.rsplit("}", 1)[-1]


def media_kind(content_type: str | None, default: Kind) -> Kind:
    """The kind a Content-Type names; ``default`` when it names none. ``UnsupportedMediaType``
    for anything else."""
    if not content_type or not content_type.strip():
        return default
    if is_json(content_type):
        return "json"
    media = content_type.split(";", 1)[0].strip().lower()
    if media in XML_MEDIA or (media.startswith("application/") and media.endswith("+xml")):
        return "xml"
    raise UnsupportedMediaType(
        f"Unsupported Content-Type {media!r}: send application/json or application/xml"
    )


def parse_xml(raw: bytes) -> ET.Element:
    """The root element of an XML document without DTD, entities or external references."""
    if not raw.strip():
        raise InvalidInput("Request body is empty: send an XML document")
    try:
        root = fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise InvalidInput(
            "XML with a DTD, entities or external references is not accepted: remove the "
            f"<!DOCTYPE> declaration ({type(exc).__name__})"
        ) from exc
    except ET.ParseError as exc:
        raise InvalidInput(f"Request body is not well-formed XML: {exc}") from exc
    count = sum(1 for _ in root.iter())
    if count > MAX_XML_ELEMENTS:
        raise InvalidInput(f"XML document has {count} elements; at most {MAX_XML_ELEMENTS}")
    return root


def parse_document(raw: bytes, kind: Kind) -> Document:
    if kind == "json":
        return Document("json", parse_json_object(raw))
    return Document("xml", parse_xml(raw))


async def read_document(request: Request, limit: int, default: Kind = "json") -> Document:
    """The request's body as a document, at most ``limit`` bytes (``PayloadTooLarge``)."""
    kind = media_kind(request.headers.get("content-type"), default)
    return parse_document(await read_body(request, limit), kind)
