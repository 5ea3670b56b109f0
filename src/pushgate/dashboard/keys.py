"""API keys of the account: create (the key shown once), revoke, IP allowlist and quota,
through ``ApiKeyService`` (its kinds, its checks)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from pushgate.dashboard.web import PREFIX, Dashboard, Page, redirect
from pushgate.domain.errors import InvalidInput
from pushgate.services.api_keys import KINDS


def _cidrs(text: str) -> list[str] | None:
    """A comma- or space-separated allowlist; None when empty (any address)."""
    parts = [part for part in text.replace(",", " ").split() if part]
    return parts or None


def _quota(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise InvalidInput("the quota must be a whole number of requests per minute")
    return int(text)


def routes(dash: Dashboard) -> list[Route]:
    keys = dash.rt.keys

    async def show(page: Page, status: int = 200, **extra: Any) -> Response:
        return dash.show(
            page,
            "keys.html",
            status,
            keys=await keys.list(page.account_id),
            apps=[item.app for item in await dash.rt.apps.list(page.account_id)],
            kinds=KINDS,
            created=extra.get("created"),
            error=extra.get("error"),
        )

    async def list_keys(page: Page) -> Response:
        return await show(page)

    async def create(page: Page) -> Response:
        try:
            _key, secret = await keys.create(
                page.account_id,
                page.text("kind"),
                app_key=page.text("app") or None,
                name=page.text("name") or None,
                ip_allowlist=_cidrs(page.text("ip_allowlist")),
                per_minute=_quota(page.text("per_minute")),
            )
        except InvalidInput as exc:
            return await show(page, 400, error=exc.message)
        return await show(page, 201, created=secret)

    async def update(page: Page) -> Response:
        key_id = page.id("key_id")
        cidrs = _cidrs(page.text("ip_allowlist"))
        quota_text = page.text("per_minute")
        try:
            await keys.update(
                page.account_id,
                key_id,
                ip_allowlist=cidrs,
                any_address=cidrs is None,
                per_minute=_quota(quota_text),
                default_quota=not quota_text,
            )
        except InvalidInput as exc:
            return await show(page, 400, error=exc.message)
        return redirect("/keys")

    async def revoke(page: Page) -> Response:
        await keys.revoke(page.account_id, page.id("key_id"))
        return redirect("/keys")

    base = f"{PREFIX}/keys"
    return [
        Route(base, dash.page(list_keys), methods=["GET"]),
        Route(base, dash.page(create), methods=["POST"]),
        Route(base + "/{key_id:int}/update", dash.page(update), methods=["POST"]),
        Route(base + "/{key_id:int}/revoke", dash.page(revoke), methods=["POST"]),
    ]
