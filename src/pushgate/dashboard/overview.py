"""The overview page: the account's numbers of today and this week (``OverviewService``)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from pushgate.dashboard.web import PREFIX, Dashboard, Page


def routes(dash: Dashboard) -> list[Route]:
    async def overview(page: Page) -> Response:
        return dash.show(
            page, "overview.html", overview=await dash.overview.overview(page.account_id)
        )

    return [
        Route(f"{PREFIX}/", dash.page(overview), methods=["GET"]),
        Route(PREFIX, dash.page(overview), methods=["GET"]),
    ]
