"""Native API: app groups and audience groups, the named sets a sending's filters use.

POST   /api/v1/groups/{kind}            {"name", "members"}: kind ``apps`` (app numbers) or
                                        ``audiences`` (subscriber tags)
GET    /api/v1/groups/{kind}            the account's groups of the kind
GET    /api/v1/groups/{kind}/{id}       one group
PATCH  /api/v1/groups/{kind}/{id}       {"name"?, "members"?}: rename, replace the members
DELETE /api/v1/groups/{kind}/{id}
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from pushgate.api.native.deps import AccountDependency
from pushgate.domain.errors import MAX_ID
from pushgate.services.accounts import Account
from pushgate.services.groups import MAX_MEMBERS, Group, GroupService
from pushgate.web.route import GuardedRoute

GroupId = Annotated[int, Path(ge=1, le=MAX_ID)]
Kind = Literal["apps", "audiences"]


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    members: list[int | str] = Field(
        default_factory=list,
        max_length=MAX_MEMBERS,
        description="App numbers (an app group) or subscriber tags (an audience group).",
    )


class GroupUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    members: list[int | str] | None = Field(None, max_length=MAX_MEMBERS)


class GroupOut(BaseModel):
    id: int
    kind: Kind
    name: str
    members: list[int | str]


class GroupList(BaseModel):
    groups: list[GroupOut]


def _out(group: Group) -> GroupOut:
    members: list[int | str] = (
        list(group.app_ids()) if group.kind == "apps" else list(group.members)
    )
    return GroupOut(id=group.id, kind=group.kind, name=group.name, members=members)


def groups_router(groups: GroupService, current_account: AccountDependency) -> APIRouter:
    router = APIRouter(prefix="/api/v1/groups", tags=["groups"], route_class=GuardedRoute)
    auth = Depends(current_account)

    @router.post("/{kind}", response_model=GroupOut, status_code=201)
    async def create_group(kind: Kind, body: GroupIn, account: Account = auth) -> GroupOut:
        """A new app group (members: app numbers) or audience group (members: tags)."""
        return _out(await groups.create(account.id, kind, body.name, body.members))

    @router.get("/{kind}", response_model=GroupList)
    async def list_groups(kind: Kind, account: Account = auth) -> GroupList:
        """The account's groups of this kind, oldest first."""
        return GroupList(groups=[_out(g) for g in await groups.list(account.id, kind)])

    @router.get("/{kind}/{group_id}", response_model=GroupOut)
    async def show_group(kind: Kind, group_id: GroupId, account: Account = auth) -> GroupOut:
        return _out(await groups.get(account.id, kind, group_id))

    @router.patch("/{kind}/{group_id}", response_model=GroupOut)
    async def update_group(
        kind: Kind, group_id: GroupId, body: GroupUpdate, account: Account = auth
    ) -> GroupOut:
        """Rename the group and/or replace its members."""
        return _out(
            await groups.update(account.id, kind, group_id, name=body.name, members=body.members)
        )

    @router.delete("/{kind}/{group_id}", status_code=204, response_class=Response)
    async def delete_group(kind: Kind, group_id: GroupId, account: Account = auth) -> Response:
        """Delete the group (sendings that name it no longer reach its apps)."""
        await groups.delete(account.id, kind, group_id)
        return Response(status_code=204)

    return router
