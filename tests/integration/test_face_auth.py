"""A face's key authentication: the key from a bearer token, a header, a JSON member or an
XML element, one Principal, throttled failures; on both databases."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from pushgate.api.dialects.base import KeyAuthenticator, KeySource
from pushgate.crypto import SecretBox
from pushgate.domain.errors import Forbidden, TooManyRequests, Unauthorized
from pushgate.services.accounts import AccountService
from pushgate.services.api_keys import ApiKeyService
from pushgate.services.apps import AppService
from pushgate.services.quotas import Quotas
from pushgate.storage.database import Database
from pushgate.throttle import AuthThrottle
from pushgate.web.documents import parse_document

BOX = SecretBox("test-secret-" * 4)


def request(headers: dict[str, str], address: str = "127.0.0.1") -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": (address, 5000),
        }
    )


async def test_every_source_yields_the_keys_principal(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    app = (await AppService(db, BOX).create(account.id, "shop")).app
    keys = ApiKeyService(db, BOX, Quotas())
    _, secret = await keys.create(account.id, "push-api-v2", app_key=app.app_key)
    throttle = AuthThrottle(per_address=3, per_key=10)

    def auth(source: KeySource) -> KeyAuthenticator:
        return KeyAuthenticator("push-api-v2", source, keys, throttle, "Invalid IntegrationKey")

    xml = parse_document(f"<Push><IntegrationKey>{secret}</IntegrationKey></Push>".encode(), "xml")
    js = parse_document(f'{{"IntegrationKey": "{secret}"}}'.encode(), "json")
    found = [
        await auth(KeySource(bearer=True)).principal(
            request({"Authorization": f"Bearer {secret}"})
        ),
        await auth(KeySource(header="X-Api-Key")).principal(request({"X-Api-Key": secret})),
        await auth(KeySource(field="IntegrationKey")).principal(request({}), xml),
        await auth(KeySource(field="IntegrationKey")).principal(request({}), js),
    ]
    assert {(p.account_id, p.app, p.kind) for p in found} == {(account.id, app, "push-api-v2")}

    # A key of another kind is no key for this face.
    _, web_key = await keys.create(account.id, "insider-web", app_key=app.app_key)
    with pytest.raises(Unauthorized, match="Invalid IntegrationKey"):
        await auth(KeySource(bearer=True)).principal(
            request({"Authorization": f"Bearer {web_key}"}, "10.0.0.2")
        )


async def test_failures_are_throttled_and_allowlists_hold(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    app = (await AppService(db, BOX).create(account.id, "shop")).app
    keys = ApiKeyService(db, BOX, Quotas())
    _, secret = await keys.create(account.id, "insider-mobile", app_key=app.app_key)
    auth = KeyAuthenticator(
        "insider-mobile",
        KeySource(field="api_key"),
        keys,
        AuthThrottle(per_address=3, per_key=10),
        "Invalid api_key",
    )
    wrong = parse_document(b'{"api_key": "pgk_wrong"}', "json")
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await auth.principal(request({}, "10.0.0.9"), wrong)
    right = parse_document(f'{{"api_key": "{secret}"}}'.encode(), "json")
    with pytest.raises(TooManyRequests):  # throttled before anything is checked
        await auth.principal(request({}, "10.0.0.9"), right)
    with pytest.raises(Forbidden, match="IP allowlist"):  # the vendor's default: 127.0.0.1
        await auth.principal(request({}, "10.0.0.10"), right)
    assert (await auth.principal(request({}), right)).app == app
    with pytest.raises(Unauthorized):
        await auth.principal(request({}), None)
