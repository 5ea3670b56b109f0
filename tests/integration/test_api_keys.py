"""API keys: shown once, stored encrypted, of one kind, IP allowlists, quotas, revocation seen
by every process within a second; on both databases."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from pushgate.crypto import SecretBox
from pushgate.domain.errors import Forbidden, InvalidInput, NotFound, TooManyRequests
from pushgate.services.accounts import AccountService
from pushgate.services.api_keys import CACHE_SECONDS, ApiKeyService
from pushgate.services.apps import AppService
from pushgate.services.quotas import Quotas
from pushgate.storage.database import Database
from pushgate.storage.models import api_keys

BOX = SecretBox("test-secret-" * 4)


async def test_keys_are_shown_once_and_stored_encrypted(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    app = (await AppService(db, BOX).create(account.id, "one")).app
    keys = ApiKeyService(db, BOX, Quotas())
    key, secret = await keys.create(account.id, "insider-mobile", app_key=app.app_key, name="m")
    assert secret.startswith("pgk_") and key.hint == secret[-4:]
    assert key.ip_allowlist == ("127.0.0.1/32",)  # what the vendor allows a new key
    async with db.read.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert secret not in (row.key_hash, row.key_enc) and BOX.decrypt(row.key_enc) == secret
    principal = await keys.authenticate("insider-mobile", secret, "127.0.0.1")
    assert principal is not None and principal.app == app
    assert await keys.authenticate("insider-web", secret, "127.0.0.1") is None  # other kind
    assert await keys.authenticate("insider-mobile", secret + "x", "127.0.0.1") is None
    with pytest.raises(Forbidden, match="IP allowlist"):
        await keys.authenticate("insider-mobile", secret, "203.0.113.9")
    with pytest.raises(InvalidInput, match="belongs to an app"):
        await keys.create(account.id, "push-api-v2")
    with pytest.raises(InvalidInput, match="whole account"):
        await keys.create(account.id, "push-express", app_key=app.app_key)
    with pytest.raises(InvalidInput, match="not a CIDR"):
        await keys.create(account.id, "native", ip_allowlist=["nope"])
    other = (await AccountService(db, BOX).create("other")).account
    with pytest.raises(NotFound):
        await keys.revoke(other.id, key.id)
    assert await keys.list(other.id) == []


async def test_allowlists_and_quotas_change_and_apply(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    keys = ApiKeyService(db, BOX, Quotas())
    key, secret = await keys.create(account.id, "push-express", per_minute=2)
    assert await keys.authenticate("push-express", secret, "198.51.100.7") is not None
    assert await keys.authenticate("push-express", secret, "198.51.100.7") is not None
    with pytest.raises(TooManyRequests) as caught:
        await keys.authenticate("push-express", secret, "198.51.100.7")
    assert caught.value.headers is not None and "Retry-After" in caught.value.headers
    narrowed = await keys.update(account.id, key.id, ip_allowlist=["10.0.0.0/8"], per_minute=50)
    assert narrowed.ip_allowlist == ("10.0.0.0/8",) and narrowed.per_minute == 50
    with pytest.raises(Forbidden):
        await keys.authenticate("push-express", secret, "198.51.100.7")
    opened = await keys.update(account.id, key.id, any_address=True, default_quota=True)
    assert opened.ip_allowlist is None and opened.per_minute is None


async def test_a_revoked_key_stops_working_in_every_process_within_a_second(
    db: Database,
) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    one, two = ApiKeyService(db, BOX, Quotas()), ApiKeyService(db, BOX, Quotas())
    key, secret = await one.create(account.id, "native")
    assert await two.authenticate("native", secret, None) is not None  # two caches it
    revoked = await one.revoke(account.id, key.id)
    assert revoked.revoked_ms is not None
    assert await one.authenticate("native", secret, None) is None
    await asyncio.sleep(CACHE_SECONDS + 0.1)
    assert await two.authenticate("native", secret, None) is None
