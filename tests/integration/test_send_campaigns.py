"""The campaign a send names (Insider's ``camp_id``), read or made once and then kept, on both
databases: the same id for the same app, another for another app, and a new one for a new app
that got a deleted app's row id."""

from __future__ import annotations

from sqlalchemy import func, select

from pushgate.crypto import SecretBox
from pushgate.services.accounts import AccountService
from pushgate.services.apps import AppService
from pushgate.services.send import Campaign, SendCommand, SendService
from pushgate.storage.database import Database
from pushgate.storage.models import campaigns

BOX = SecretBox("test-secret-" * 4)


def _service(db: Database) -> SendService:
    # Campaigns need neither events nor the pipeline.
    return SendService(db, None, None, 3600)  # type: ignore[arg-type]


async def _campaign_rows(db: Database) -> int:
    async with db.read.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(campaigns))).scalar_one())


async def test_a_campaign_is_made_once_per_app_and_kept(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    apps = AppService(db, BOX)
    shop = (await apps.create(account.id, "shop")).app
    blog = (await apps.create(account.id, "blog")).app
    send = _service(db)
    sale = Campaign("7", "Sale")
    first = await send.campaign_id(SendCommand(app=shop, message="m", campaign=sale))
    again = await send.campaign_id(SendCommand(app=shop, message="m", campaign=sale))
    other = await send.campaign_id(SendCommand(app=blog, message="m", campaign=sale))
    assert first == again
    assert other not in (None, first)
    # A second process (another service) finds the stored one rather than making another.
    assert await _service(db).campaign_id(SendCommand(app=shop, message="m", campaign=sale)) == (
        first
    )
    assert await _campaign_rows(db) == 2
    # Without an id of the caller's, each send is a campaign of its own.
    unnamed = Campaign(None, "once")
    a = await send.campaign_id(SendCommand(app=shop, message="m", campaign=unnamed))
    b = await send.campaign_id(SendCommand(app=shop, message="m", campaign=unnamed))
    assert a != b


async def test_a_new_app_with_a_deleted_apps_row_id_gets_its_own_campaign(db: Database) -> None:
    account = (await AccountService(db, BOX).create("acme")).account
    apps = AppService(db, BOX)
    send = _service(db)
    old = (await apps.create(account.id, "old")).app
    kept = await send.campaign_id(SendCommand(app=old, message="m", campaign=Campaign("1")))
    await apps.delete(account.id, old.app_key)
    new = (await apps.create(account.id, "new")).app
    made = await send.campaign_id(SendCommand(app=new, message="m", campaign=Campaign("1")))
    async with db.read.connect() as conn:
        owner = (
            await conn.execute(select(campaigns.c.app_id).where(campaigns.c.id == made))
        ).scalar()
    # A stored campaign of the new app (on SQLite the new app may have the old one's row id,
    # and its campaign the deleted campaign's: a kept id of the old app would name no row).
    assert owner == new.id
    assert kept is not None
