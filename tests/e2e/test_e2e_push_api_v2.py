"""Push API v2 (POST /api/v2/push) against a real server: the reference's sample body in JSON
and XML, the answer's format, every documented error, and XML attack bodies."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

import httpx2
import pytest
from e2e_support import Tenant, make_app, new_account, polled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushgate.testing.server import ServerProcess

PATH = "/api/v2/push"
XSI = 'xmlns:i="http://www.w3.org/2001/XMLSchema-instance"'
NS = "{http://schemas.datacontract.org/2004/07/Pushgate.PushApi}"


class Setup:
    def __init__(self, tenant: Tenant, key: str, token: str) -> None:
        self.tenant = tenant
        self.key = key
        self.token = token

    def body(self, **fields: Any) -> dict[str, Any]:
        """The reference's sample JSON body, with this setup's values."""
        sample: dict[str, Any] = {
            "UserId": "",
            "UserEmail": "",
            "UserExternalId": "",
            "Title": "",
            "Body": "",
            "Sound": False,
            "ExpirySecs": 0,
            "CompanyId": 0,
            "IntegrationKey": "",
        }
        sample.update(CompanyId=self.tenant.account_id, IntegrationKey=self.key)
        sample.update(fields)
        return sample


def xml_body(fields: dict[str, Any], root: str = "Push", xsi: bool = True) -> bytes:
    """The fields as DataContract XML, in reverse alphabetical order (any order is taken)."""
    parts = []
    for name in sorted(fields, reverse=True):
        value = fields[name]
        if value is None:
            parts.append(f'<{name} i:nil="true"/>')
        elif isinstance(value, bool):
            parts.append(f"<{name}>{'true' if value else 'false'}</{name}>")
        else:
            parts.append(f"<{name}>{value}</{name}>")
    declared = f" {XSI}" if xsi else ""
    return (
        f'<{root}{declared} xmlns="http://schemas.datacontract.org/2004/07/Acme">'
        + "".join(parts)
        + f"</{root}>"
    ).encode()


@pytest.fixture
async def setup(http: httpx2.AsyncClient, server: ServerProcess) -> Setup:
    tenant = new_account(server.data_dir)
    app_id = await make_app(http, tenant)
    made = await http.post(
        "/api/v1/keys", headers=tenant.bearer, json={"kind": "push-api-v2", "app_id": app_id}
    )
    assert made.status_code == 201, made.text
    device = await http.post(
        "/api/v1/devices",
        headers=tenant.bearer,
        json={
            "platform": "channel",
            "app_id": app_id,
            "external_id": "ext-1",
            "email": "ann@example.com",
            "user_id": "u-1",
        },
    )
    assert device.status_code == 201, device.text
    return Setup(tenant, made.json()["key"], device.json()["device_token"])


def xml_of(resp: httpx2.Response) -> dict[str, Any]:
    root = ET.fromstring(resp.content)  # noqa: S314 - our own server's answer
    return {child.tag.removeprefix(NS): child for child in root} | {"_root": root}


async def test_the_sample_body_in_json_reaches_the_user(
    http: httpx2.AsyncClient, setup: Setup
) -> None:
    body = setup.body(UserEmail="ann@example.com", Title="Order", Body="It shipped", Sound=True)
    resp = await http.post(PATH, json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["DevicesTargeted"] == 1 and answer["UserExternalId"] == "ext-1"
    assert answer["UserId"] == "u-1" and answer["UserEmail"] == "ann@example.com"
    deadline = time.monotonic() + 10
    while not (got := await polled(http, setup.token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(n["id"], n["title"], n["message"]) for n in got] == [
        (answer["NotificationId"], "Order", "It shipped")
    ]


async def test_xml_in_any_order_and_the_answer_follows_the_format(
    http: httpx2.AsyncClient, setup: Setup
) -> None:
    fields = setup.body(UserExternalId="ext-1", Title="Hi", Body="There", UserId=None)
    resp = await http.post(PATH, content=xml_body(fields), headers={"Content-Type": "text/xml"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/xml")
    shown = xml_of(resp)
    names = [child.tag.removeprefix(NS) for child in shown["_root"]]
    assert names == sorted(names) and shown["DevicesTargeted"].text == "1"
    assert shown["_root"].tag == f"{NS}PushResponse"
    # No Content-Type: XML. ?format=json answers JSON.
    bare = await http.post(f"{PATH}?format=json", content=xml_body(fields))
    assert bare.status_code == 200 and bare.json()["SubscriberId"] > 0
    as_xml = await http.post(f"{PATH}?format=xml", json=fields)
    assert as_xml.status_code == 200 and as_xml.content.startswith(b"<PushResponse")


async def test_documented_errors_in_both_formats(http: httpx2.AsyncClient, setup: Setup) -> None:
    good = setup.body(UserEmail="ann@example.com", Title="t", Body="b")
    nobody = await http.post(PATH, json={**good, "UserEmail": ""})
    assert nobody.status_code == 400
    status = nobody.json()["ResponseStatus"]
    assert {e["FieldName"] for e in status["Errors"]} == {"UserId"}
    assert all(
        n in status["Errors"][0]["Message"] for n in ("UserId", "UserEmail", "UserExternalId")
    )

    missing = await http.post(PATH, json={**good, "Title": "", "Body": None})
    assert {e["FieldName"] for e in missing.json()["ResponseStatus"]["Errors"]} == {"Title", "Body"}

    wrong = await http.post(PATH, json={**good, "Sound": "yes", "ExpirySecs": "10"})
    assert wrong.status_code == 400
    assert {e["FieldName"] for e in wrong.json()["ResponseStatus"]["Errors"]} == {
        "Sound",
        "ExpirySecs",
    }
    xml_wrong = await http.post(
        PATH, content=xml_body({**good, "Sound": "yes", "CompanyId": "abc"})
    )
    assert xml_wrong.status_code == 400
    errors = xml_of(xml_wrong)["ResponseStatus"].find(f"{NS}Errors")
    assert errors is not None
    assert sorted(e.find(f"{NS}FieldName").text or "" for e in errors) == ["CompanyId", "Sound"]

    for bad in ({**good, "IntegrationKey": "nope"}, {**good, "CompanyId": 999_999}):
        refused = await http.post(PATH, json=bad)
        assert refused.status_code == 401
        assert refused.json()["ResponseStatus"]["ErrorCode"] == "Unauthorized"

    unknown = await http.post(PATH, json={**good, "UserEmail": "zed@example.com"})
    assert unknown.status_code == 400
    assert unknown.json()["ResponseStatus"]["ErrorCode"] == "UserNotFound"

    other = await http.post(
        "/api/v1/devices",
        headers=setup.tenant.bearer,
        json={"platform": "channel", "app_id": setup.tenant.app_id, "external_id": "ext-2"},
    )
    assert other.status_code == 201
    clash = await http.post(PATH, json={**good, "UserExternalId": "ext-2"})
    assert clash.status_code == 400 and "different" in clash.json()["ResponseStatus"]["Message"]

    no_ns = await http.post(PATH, content=xml_body(good, xsi=False))
    message = xml_of(no_ns)["ResponseStatus"].find(f"{NS}Message")
    assert no_ns.status_code == 400 and message is not None and "xmlns:i" in (message.text or "")

    nested = xml_body(good).replace(b"<Title>t</Title>", b"<Title><b>t</b></Title>")
    assert (await http.post(PATH, content=nested)).status_code == 400

    for method in ("GET", "PUT", "DELETE"):
        resp = await http.request(method, f"{PATH}?format=json")
        assert resp.status_code == 405 and resp.json()["ResponseStatus"]["ErrorCode"]
    elsewhere = await http.post(f"{PATH}/extra", json=good)
    assert elsewhere.status_code == 405
    assert (await http.post(f"{PATH}?format=yaml", json=good)).status_code == 400


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<Push xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><Title>&lol9;</Title></Push>"""
QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "'
    + b"x" * 50_000
    + b'">]><Push xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><Title>'
    + b"&a;" * 10_000
    + b"</Title></Push>"
)
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Push xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><Title>&x;</Title></Push>"""


async def test_xml_attacks_are_refused_at_once(http: httpx2.AsyncClient, setup: Setup) -> None:
    for attack in (BILLION_LAUGHS, QUADRATIC, EXTERNAL):
        resp = await http.post(PATH, content=attack, headers={"Content-Type": "application/xml"})
        assert resp.status_code == 400, resp.text
        assert b"DTD" in resp.content or b"DOCTYPE" in resp.content
        assert b"root:" not in resp.content
    huge = b"<Push " + XSI.encode() + b">" + b"<Title>x</Title>" * 200_000 + b"</Push>"
    resp = await http.post(PATH, content=huge)
    assert resp.status_code == 400


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _as_xml(fields: dict[str, Any]) -> bytes:
    parts = [
        f'<{name} i:nil="true"/>' if value is None else f"<{name}>{_xml_text(value)}</{name}>"
        for name, value in fields.items()
    ]
    return (f"<Request {XSI}>" + "".join(parts) + "</Request>").encode()


_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<>&"),
    max_size=12,
)
_FIELDS = {
    "UserEmail": st.one_of(st.none(), st.just("ann@example.com"), st.just("x@example.com"), _TEXT),
    "UserExternalId": st.one_of(st.none(), st.just("ext-1"), _TEXT),
    "UserId": st.one_of(st.none(), st.just("u-1"), _TEXT),
    "Title": st.one_of(st.none(), _TEXT),
    "Body": st.one_of(st.none(), _TEXT),
    "Sound": st.one_of(st.none(), st.booleans(), st.just("maybe")),
    "ExpirySecs": st.one_of(st.none(), st.integers(-5, 3_000_000), st.just("soon")),
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_json_bodies_and_their_xml_give_the_same_answer(
    server: ServerProcess, push_key: tuple[int, str], data: st.DataObject
) -> None:
    company, key = push_key
    fields = {
        name: data.draw(strategy, label=name)
        for name, strategy in _FIELDS.items()
        if data.draw(st.booleans(), label=f"has {name}")
    }
    fields.update(CompanyId=company, IntegrationKey=key)
    with httpx2.Client(base_url=server.url, timeout=10) as client:
        as_json = client.post(f"{PATH}?format=json", json=fields)
        as_xml = client.post(f"{PATH}?format=json", content=_as_xml(fields))
    assert as_json.status_code == as_xml.status_code, (fields, as_json.text, as_xml.text)
    one, other = as_json.json(), as_xml.json()
    if as_json.status_code == 200:
        one.pop("NotificationId")
        other.pop("NotificationId")
    assert one == other, fields


@pytest.fixture(scope="module")
def push_key(server: ServerProcess) -> tuple[int, str]:
    """An account with an app, a push-api-v2 key and one user (ann@example.com, ext-1, u-1)."""
    tenant = new_account(server.data_dir)
    with httpx2.Client(base_url=server.url, timeout=10) as client:
        app = client.post("/api/v1/apps", headers=tenant.bearer, json={"title": "p"}).json()
        key = client.post(
            "/api/v1/keys", headers=tenant.bearer, json={"kind": "push-api-v2", "app_id": app["id"]}
        ).json()["key"]
        client.post(
            "/api/v1/devices",
            headers=tenant.bearer,
            json={
                "platform": "channel",
                "app_id": app["id"],
                "email": "ann@example.com",
                "external_id": "ext-1",
                "user_id": "u-1",
            },
        ).raise_for_status()
    return tenant.account_id, key
