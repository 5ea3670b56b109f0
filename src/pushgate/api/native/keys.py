"""Native API: the account's API keys (the credentials of the vendor faces).

POST   /api/v1/keys              create one; its key is in the answer, this once
GET    /api/v1/keys[?app_id=]    list them (never the keys themselves)
PATCH  /api/v1/keys/{key_id}     name, IP allowlist, quota
DELETE /api/v1/keys/{key_id}     revoke it (in every process within a second)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushgate.api.native.deps import AccountDependency
from pushgate.domain.errors import MAX_ID
from pushgate.services.accounts import Account
from pushgate.services.api_keys import (
    DEFAULT_PER_MINUTE,
    KINDS,
    ApiKeyService,
    key_record,
)
from pushgate.web.body import no_nul
from pushgate.web.route import GuardedRoute

KeyId = Annotated[int, Path(ge=1, le=MAX_ID)]
Kind = Annotated[str, Field(pattern="^(" + "|".join(KINDS) + ")$")]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description=f"One of {', '.join(KINDS)}.")
    app_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The app the key acts for (required for insider-mobile, insider-web and "
        "push-api-v2 keys).",
    )
    name: str | None = Field(None, min_length=1, max_length=200)
    ip_allowlist: list[str] | None = Field(
        None,
        max_length=100,
        description="CIDRs the key may be used from (default: any address, except for "
        "insider-mobile keys, which start with 127.0.0.1 only).",
        examples=[["203.0.113.0/24"]],
    )
    per_minute: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Requests per minute (default: the face's: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_PER_MINUTE.items())
        + ").",
    )

    _no_nul = field_validator("name")(no_nul)


class KeyUpdate(BaseModel):
    """What is given changes; `ip_allowlist: null` allows any address, `per_minute: null`
    restores the face's default."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    ip_allowlist: list[str] | None = Field(None, max_length=100)
    per_minute: int | None = Field(None, ge=1, le=10_000_000)


class KeyOut(BaseModel):
    id: int
    kind: str
    app_id: str | None
    name: str | None
    hint: str = Field(description="The key's last 4 characters.")
    ip_allowlist: list[str] | None
    per_minute: int | None
    company_id: int = Field(description="Push API v2's CompanyId (the account).")
    partner_id: str = Field(description="Insider web push's partner_id (the account).")
    created_at: str
    revoked_at: str | None


class CreatedKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, keep it.")


class KeyList(BaseModel):
    keys: list[KeyOut]


def keys_router(keys: ApiKeyService, current_account: AccountDependency) -> APIRouter:
    router = APIRouter(prefix="/api/v1/keys", tags=["api keys"], route_class=GuardedRoute)
    auth = Depends(current_account)

    @router.post("", response_model=CreatedKeyOut, status_code=201)
    async def create_key(body: KeyIn, account: Account = auth) -> CreatedKeyOut:
        """A new API key. The answer holds the key itself, this once."""
        key, secret = await keys.create(
            account.id,
            body.kind,
            app_key=body.app_id,
            name=body.name,
            ip_allowlist=body.ip_allowlist,
            per_minute=body.per_minute,
        )
        return CreatedKeyOut.model_validate({**key_record(key), "key": secret})

    @router.get("", response_model=KeyList)
    async def list_keys(
        app_id: Annotated[str | None, Query(max_length=64)] = None, account: Account = auth
    ) -> KeyList:
        """The account's keys (of one app, when given), revoked ones included."""
        listed = await keys.list(account.id, app_id)
        return KeyList.model_validate({"keys": [key_record(key) for key in listed]})

    @router.patch("/{key_id}", response_model=KeyOut)
    async def update_key(key_id: KeyId, body: KeyUpdate, account: Account = auth) -> KeyOut:
        """Change the key's name, IP allowlist or quota."""
        given = body.model_fields_set
        key = await keys.update(
            account.id,
            key_id,
            name=body.name,
            ip_allowlist=body.ip_allowlist,
            any_address="ip_allowlist" in given and body.ip_allowlist is None,
            per_minute=body.per_minute,
            default_quota="per_minute" in given and body.per_minute is None,
        )
        return KeyOut.model_validate(key_record(key))

    @router.delete("/{key_id}", response_model=KeyOut)
    async def revoke_key(key_id: KeyId, account: Account = auth) -> KeyOut:
        """Revoke the key: every process refuses it within a second."""
        return KeyOut.model_validate(key_record(await keys.revoke(account.id, key_id)))

    return router
