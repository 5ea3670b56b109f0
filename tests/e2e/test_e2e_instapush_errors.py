"""Instapush failure answers: exact reference bodies for bad credentials, and Instapush-style
errors (never a 500) for bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from e2e_support import (
    ServerFactory,
    Tenant,
    add_app,
    add_event,
    client_for,
    make_tenant,
    make_tenant_sync,
    new_account,
    post_event,
    post_ok,
)

from pushgate.testing.server import ServerProcess

INVALID_USER_TOKEN = {"msg": "Invalid User Token", "error": True, "status": 401}
WRONG_APP = {"msg": "Wrong APPID or APPSECRET", "error": True, "status": 401}

# the reference's own events/add example: its body lacks the closing brace
REFERENCE_EVENT_BODY = (
    b'{"title":"MYAPI","trackers":["email","country"],'
    b'"message":"{email} has signed up from {country}"'
)


def assert_error(resp: httpx2.Response, status: int | None = None) -> dict[str, Any]:
    """An Instapush-style error: {"msg": <non-empty>, "error": true, "status": <HTTP status>}."""
    assert resp.status_code != 500, resp.text
    if status is not None:
        assert resp.status_code == status, resp.text
    else:
        assert 400 <= resp.status_code < 500, resp.text
    body = resp.json()
    assert isinstance(body, dict), body
    assert body.get("error") is True, body
    assert body.get("status") == resp.status_code, body
    assert isinstance(body.get("msg"), str) and body["msg"].strip(), body
    return body


@pytest.fixture(scope="module")
def tenant(server: ServerProcess) -> Tenant:
    """Shared by the tests of this module: none of them may change its apps or events."""
    return make_tenant_sync(server)


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize("path", ["/v1/apps/list", "/apps/list"])
@pytest.mark.parametrize("token", [None, "", "not-a-token"], ids=["missing", "empty", "wrong"])
async def test_apps_list_invalid_user_token(
    http: httpx2.AsyncClient, path: str, token: str | None
) -> None:
    headers = {} if token is None else {"x-instapush-token": token}
    resp = await http.get(path, headers=headers)
    assert resp.status_code == 401
    assert resp.json() == INVALID_USER_TOKEN


@pytest.mark.parametrize("path", ["/v1/apps/add", "/apps/add"])
@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["missing", "wrong"])
async def test_apps_add_invalid_user_token(
    http: httpx2.AsyncClient, path: str, token: str | None
) -> None:
    headers = {} if token is None else {"x-instapush-token": token}
    resp = await http.post(path, headers=headers, json={"title": "test"})
    assert resp.status_code == 401
    assert resp.json() == INVALID_USER_TOKEN


def wrong_credentials(tenant: Tenant, other: Tenant) -> list[dict[str, str]]:
    return [
        {},
        {"x-instapush-appid": tenant.app_id},
        {"x-instapush-appsecret": tenant.app_secret},
        {"x-instapush-appid": tenant.app_id, "x-instapush-appsecret": "wrong"},
        {"x-instapush-appid": "nope", "x-instapush-appsecret": tenant.app_secret},
        {"x-instapush-appid": tenant.app_id, "x-instapush-appsecret": ""},
        # a valid pair, mixed across two apps
        {"x-instapush-appid": tenant.app_id, "x-instapush-appsecret": other.app_secret},
        # the user token is not an app credential
        {"x-instapush-token": tenant.user_token},
    ]


async def test_events_and_post_wrong_app_credentials(
    server: ServerProcess, http: httpx2.AsyncClient, tenant: Tenant
) -> None:
    other = await make_tenant(http, server.data_dir)
    event = {"title": "other", "trackers": ["a"], "message": "{a}"}
    send = {"event": "signups", "trackers": {"email": "x", "country": "y"}}
    for headers in wrong_credentials(tenant, other):
        for prefix in ("/v1", ""):
            resp = await http.get(f"{prefix}/events/list", headers=headers)
            assert (resp.status_code, resp.json()) == (401, WRONG_APP), headers
            resp = await http.post(f"{prefix}/events/add", headers=headers, json=event)
            assert (resp.status_code, resp.json()) == (401, WRONG_APP), headers
            resp = await http.post(f"{prefix}/post", headers=headers, json=send)
            assert (resp.status_code, resp.json()) == (401, WRONG_APP), headers
    # nothing was created through the failed calls
    resp = await http.get("/v1/events/list", headers=tenant.app_headers)
    assert [event["title"] for event in resp.json()] == ["signups"]


async def test_apps_are_listed_per_account(server: ServerProcess, http: httpx2.AsyncClient) -> None:
    alice, bob = new_account(server.data_dir), new_account(server.data_dir)
    await add_app(http, alice, "alice app")
    await add_app(http, bob, "bob app")
    await add_app(http, bob, "bob second")
    resp = await http.get("/v1/apps/list", headers=alice.user_headers)
    assert resp.json() == [
        {"title": "alice app", "appID": alice.app_id, "appSecret": alice.app_secret}
    ]
    resp = await http.get("/v1/apps/list", headers=bob.user_headers)
    assert sorted(app["title"] for app in resp.json()) == ["bob app", "bob second"]


async def test_new_account_lists_no_apps(server: ServerProcess, http: httpx2.AsyncClient) -> None:
    fresh = new_account(server.data_dir)
    resp = await http.get("/v1/apps/list", headers=fresh.user_headers)
    assert resp.status_code == 200
    assert resp.json() == []


async def test_events_are_listed_per_app(server: ServerProcess, http: httpx2.AsyncClient) -> None:
    tenant = new_account(server.data_dir)
    await add_app(http, tenant, "one")
    first = Tenant(tenant.data_dir, tenant.user_token, tenant.app_id, tenant.app_secret)
    await add_app(http, tenant, "two")
    assert (await add_event(http, first, "a-event", ["a"], "{a}")).status_code == 201
    assert (await add_event(http, tenant, "b-event", ["b", "c"], "{b}{c}")).status_code == 201
    resp = await http.get("/v1/events/list", headers=first.app_headers)
    assert resp.json() == [{"title": "a-event", "trackers": ["a"]}]
    resp = await http.get("/v1/events/list", headers=tenant.app_headers)
    assert resp.json() == [{"title": "b-event", "trackers": ["b", "c"]}]
    # an event of another app cannot be posted with this app's credentials
    resp = await post_event(http, tenant, {"a": "x"}, event="a-event")
    assert_error(resp)


# --------------------------------------------------------------------------- malformed input


async def test_reference_events_add_body_without_closing_brace_is_400(
    http: httpx2.AsyncClient, tenant: Tenant
) -> None:
    resp = await http.post(
        "/v1/events/add",
        headers={**tenant.app_headers, "Content-Type": "application/json"},
        content=REFERENCE_EVENT_BODY,
    )
    assert_error(resp, 400)
    resp = await http.get("/v1/events/list", headers=tenant.app_headers)
    assert "MYAPI" not in [event["title"] for event in resp.json()]


MALFORMED_BODIES = [
    b"",
    b"{",
    b"not json",
    b"null",
    b"[]",
    b'"a string"',
    b"42",
    b"\xff\xfe\x00",
    b'{"title": "x",}',
]


@pytest.mark.parametrize("body", MALFORMED_BODIES)
@pytest.mark.parametrize("path", ["/v1/apps/add", "/v1/events/add", "/v1/post", "/post"])
async def test_malformed_bodies_are_400(
    http: httpx2.AsyncClient, tenant: Tenant, path: str, body: bytes
) -> None:
    headers = {**tenant.app_headers, **tenant.user_headers, "Content-Type": "application/json"}
    resp = await http.post(path, headers=headers, content=body)
    assert_error(resp, 400)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"title": ""},
        {"title": None},
        {"title": 5},
        {"title": ["x"]},
        {"title": {"x": 1}},
        {"name": "test"},
    ],
)
async def test_apps_add_bad_fields_are_400(
    http: httpx2.AsyncClient, tenant: Tenant, payload: dict[str, Any]
) -> None:
    resp = await http.post("/v1/apps/add", headers=tenant.user_headers, json=payload)
    assert_error(resp, 400)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"trackers": ["email"], "message": "{email}"},
        {"title": "e", "message": "{email}"},
        {"title": "e", "trackers": ["email"]},
        {"title": "", "trackers": ["email"], "message": "{email}"},
        {"title": 7, "trackers": ["email"], "message": "{email}"},
        {"title": "e", "trackers": "email", "message": "{email}"},
        {"title": "e", "trackers": {"email": "x"}, "message": "{email}"},
        {"title": "e", "trackers": [1, 2], "message": "{email}"},
        {"title": "e", "trackers": [["email"]], "message": "{email}"},
        {"title": "e", "trackers": [None], "message": "{email}"},
        {"title": "e", "trackers": ["email", 3], "message": "{email}"},
        {"title": "e", "trackers": None, "message": "{email}"},
        {"title": "e", "trackers": ["email"], "message": 5},
        {"title": "e", "trackers": ["email"], "message": None},
        {"title": "e", "trackers": ["email"], "message": ["{email}"]},
    ],
)
async def test_events_add_bad_fields_are_400(
    http: httpx2.AsyncClient, tenant: Tenant, payload: dict[str, Any]
) -> None:
    resp = await http.post("/v1/events/add", headers=tenant.app_headers, json=payload)
    assert_error(resp, 400)
    resp = await http.get("/v1/events/list", headers=tenant.app_headers)
    assert [event["title"] for event in resp.json()] == ["signups"]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"trackers": {"email": "a", "country": "b"}},
        {"event": "signups"},
        {"event": None, "trackers": {"email": "a", "country": "b"}},
        {"event": 1, "trackers": {"email": "a", "country": "b"}},
        {"event": ["signups"], "trackers": {"email": "a", "country": "b"}},
        {"event": "signups", "trackers": ["email", "country"]},
        {"event": "signups", "trackers": "email=a"},
        {"event": "signups", "trackers": None},
    ],
)
async def test_post_bad_fields_are_400(
    http: httpx2.AsyncClient, tenant: Tenant, payload: dict[str, Any]
) -> None:
    resp = await http.post("/v1/post", headers=tenant.app_headers, json=payload)
    assert_error(resp, 400)


@pytest.mark.parametrize(
    "trackers",
    [{}, {"email": "ann@example.com"}, {"country": "NL"}, {"Email": "a", "country": "NL"}],
)
async def test_post_missing_a_tracker_the_template_needs_is_400(
    http: httpx2.AsyncClient, tenant: Tenant, trackers: dict[str, str]
) -> None:
    assert_error(await post_event(http, tenant, trackers), 400)


@pytest.mark.parametrize("event", ["nope", "Signups", "signups ", ""])
async def test_post_unknown_event_is_4xx(
    http: httpx2.AsyncClient, tenant: Tenant, event: str
) -> None:
    assert_error(await post_event(http, tenant, event=event))


async def test_post_with_extra_trackers_is_accepted(
    http: httpx2.AsyncClient, tenant: Tenant
) -> None:
    await post_ok(http, tenant, {"email": "a@b.c", "country": "NL", "plan": "pro"})


async def test_duplicate_event_title_is_409(http: httpx2.AsyncClient, tenant: Tenant) -> None:
    resp = await add_event(http, tenant, "signups", ["email"], "{email} again")
    assert_error(resp, 409)
    resp = await http.get("/v1/events/list", headers=tenant.app_headers)
    assert resp.json() == [{"title": "signups", "trackers": ["email", "country"]}]


async def test_same_event_title_in_two_apps_is_fine(
    server: ServerProcess, http: httpx2.AsyncClient, tenant: Tenant
) -> None:
    other = await make_tenant(http, server.data_dir)
    resp = await http.get("/v1/events/list", headers=other.app_headers)
    assert resp.json() == [{"title": "signups", "trackers": ["email", "country"]}]


async def test_unknown_paths_and_methods_never_500(
    http: httpx2.AsyncClient, tenant: Tenant
) -> None:
    resp = await http.get("/v1/post", headers=tenant.app_headers)
    assert 400 <= resp.status_code < 500
    resp = await http.post("/v1/apps/list", headers=tenant.user_headers, json={})
    assert 400 <= resp.status_code < 500
    resp = await http.get("/v1/nothing-here")
    assert resp.status_code == 404


# --------------------------------------------------------------------------- body size limit


@pytest.fixture
async def small_server(make_server: ServerFactory) -> ServerProcess:
    return make_server(env={"PUSHGATE_MAX_BODY_BYTES": "1024"})


@pytest.fixture
async def small_http(small_server: ServerProcess) -> AsyncIterator[httpx2.AsyncClient]:
    async with client_for(small_server) as client:
        yield client


async def test_body_over_the_limit_is_413(
    small_server: ServerProcess, small_http: httpx2.AsyncClient
) -> None:
    http = small_http
    tenant = await make_tenant(http, small_server.data_dir)
    big = "x" * 2000

    resp = await http.post("/v1/apps/add", headers=tenant.user_headers, json={"title": big})
    assert_error(resp, 413)
    resp = await add_event(http, tenant, "big", ["email"], "{email}" + big)
    assert_error(resp, 413)
    resp = await post_event(http, tenant, {"email": big, "country": "NL"})
    assert_error(resp, 413)

    # no Content-Length (chunked upload): still capped
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"event": "signups", "trackers": {"email": "'
        for _ in range(20):
            yield b"y" * 100
        yield b'", "country": "NL"}}'

    resp = await http.post(
        "/v1/post",
        headers={**tenant.app_headers, "Content-Type": "application/json"},
        content=chunks(),
    )
    assert_error(resp, 413)

    # just under the limit is fine
    await post_ok(http, tenant, {"email": "e" * 900, "country": "NL"})
    resp = await add_event(http, tenant, "medium", ["email"], "{email} " + "m" * 800)
    assert resp.status_code == 201, resp.text


async def test_default_limit_accepts_ordinary_bodies(
    server: ServerProcess, http: httpx2.AsyncClient
) -> None:
    tenant = await make_tenant(http, server.data_dir)
    # Tracker values of nearly 4 KiB (the cap on a notification's data) are accepted
    await post_ok(http, tenant, {"email": "e" * 4000, "country": "NL"})
    resp = await add_event(http, tenant, "long", ["a"], "{a} " + "t" * 4000)
    assert resp.status_code == 201, resp.text
