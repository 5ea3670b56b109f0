"""Request documents: JSON or XML by Content-Type, XML without DTDs or entities."""

from __future__ import annotations

import pytest

from pushgate.domain.errors import InvalidInput, UnsupportedMediaType
from pushgate.web.documents import MAX_XML_ELEMENTS, Document, media_kind, parse_document

PUSH = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<Push xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
    b"<UserEmail> ann@example.com </UserEmail><Title>Hi</Title><Body/>"
    b"<CompanyId>12</CompanyId><IntegrationKey>pgk_abc</IntegrationKey></Push>"
)


def test_the_content_type_chooses_the_kind() -> None:
    assert media_kind("application/json; charset=utf-8", "xml") == "json"
    assert media_kind("application/problem+json", "xml") == "json"
    assert media_kind("Application/XML", "json") == "xml"
    assert media_kind("text/xml; charset=utf-8", "json") == "xml"
    assert media_kind(None, "xml") == "xml"
    assert media_kind("  ", "json") == "json"
    with pytest.raises(UnsupportedMediaType, match="application/json or application/xml"):
        media_kind("text/plain", "json")


def test_fields_come_from_json_members_or_xml_children() -> None:
    xml = parse_document(PUSH, "xml")
    assert xml.field("UserEmail") == "ann@example.com"
    assert xml.field("Body") == ""
    assert xml.field("CompanyId") == "12"
    assert xml.field("Missing") is None
    js = parse_document(b'{"IntegrationKey": "pgk_abc", "CompanyId": 12, "Sound": true}', "json")
    assert (js.field("IntegrationKey"), js.field("CompanyId")) == ("pgk_abc", "12")
    assert js.field("Sound") is None  # not text
    assert Document("json", {"a": ["x"]}).field("a") is None


@pytest.mark.parametrize(
    "body",
    [
        # entity expansion ("billion laughs")
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><Push><Title>&lol2;</Title></Push>',
        # an external entity
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<Push><Title>&x;</Title></Push>",
        # an external DTD
        b'<?xml version="1.0"?><!DOCTYPE Push SYSTEM "http://127.0.0.1:1/p.dtd"><Push/>',
        # a DTD without entities
        b"<!DOCTYPE Push><Push/>",
    ],
)
def test_xml_with_a_dtd_or_entities_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="DTD, entities or external references"):
        parse_document(body, "xml")


def test_malformed_empty_and_huge_documents_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not well-formed XML"):
        parse_document(b"<Push><Title>x</Push>", "xml")
    with pytest.raises(InvalidInput, match="empty"):
        parse_document(b"  ", "xml")
    many = b"<Push>" + b"<a/>" * MAX_XML_ELEMENTS + b"</Push>"
    with pytest.raises(InvalidInput, match="elements"):
        parse_document(many, "xml")
    with pytest.raises(InvalidInput, match="JSON object"):
        parse_document(b"[1]", "json")
