"""What every dashboard page shares: templates, the signed-in session, CSRF checks on every
POST, size-capped form reading and the security headers of every answer.

A page handler is ``async (Page) -> Response``; ``Dashboard.page`` wraps it into a Starlette
endpoint that:

1. finds the session of the cookie (none: a GET goes to the sign-in page, a POST is 403);
2. for a POST, reads the form (by its declared length, at most ``max_body_bytes``) and
   refuses it (403) unless it carries the session's CSRF token (form field ``csrf`` or
   header ``X-CSRF-Token``, which htmx sends);
3. runs the handler; an error a user can fix (``PushgateError``) is shown on an error page
   with its status;
4. adds a strict Content-Security-Policy (scripts and styles from this server's files only:
   no inline script or style), ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from pushgate.domain.errors import NotFound, PushgateError
from pushgate.runtime import Runtime
from pushgate.services.dashboard_auth import DashboardAuth, Session
from pushgate.services.overview import OverviewService
from pushgate.web.timestamps import iso_ms

PREFIX = "/dashboard"
SESSION_COOKIE = "pushgate_session"
HERE = Path(__file__).parent
MAX_FILES = 2
MAX_FIELDS = 50
MAX_ID = 2**63

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _ago(ms: int | None) -> str:
    return "" if ms is None else iso_ms(ms)


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        enable_async=False,
    )
    env.filters["time"] = _ago
    env.globals["prefix"] = PREFIX
    return env


@dataclass
class Page:
    """One request to a page of a signed-in user."""

    request: Request
    session: Session
    form: FormData | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def account_id(self) -> int:
        return self.session.account.id

    def text(self, name: str, default: str = "") -> str:
        value = None if self.form is None else self.form.get(name)
        return value.strip() if isinstance(value, str) else default

    def id(self, name: str) -> int:
        """A numeric path parameter (``{name:int}``); NotFound beyond 63 bits."""
        value = int(self.request.path_params[name])
        if not 0 < value < MAX_ID:
            raise NotFound(f"No {name.replace('_', ' ')} {value}")
        return value

    def file(self, name: str) -> UploadFile | None:
        value = None if self.form is None else self.form.get(name)
        return value if isinstance(value, UploadFile) and value.filename else None


Handler = Callable[[Page], Awaitable[Response]]


class FormTooLarge(PushgateError):
    status = 413


async def read_form(request: Request, limit: int) -> FormData:
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) > limit:
        raise FormTooLarge(f"The form is too large: the limit is {limit} bytes")
    return await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=limit)


class Dashboard:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.auth = DashboardAuth(rt.db, rt.box, rt.settings.dashboard_session_seconds)
        self.overview = OverviewService(rt.db)
        self.env = templates()
        self.max_body = rt.settings.max_body_bytes

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        *,
        session: Session | None = None,
        status: int = 200,
    ) -> Response:
        body = self.env.get_template(name).render(
            request=request,
            session=session,
            csrf=None if session is None else session.csrf_token,
            **context,
        )
        return secured(HTMLResponse(body, status_code=status))

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            token = request.cookies.get(SESSION_COOKIE)
            session = await self.auth.session(token)
            if session is None or token is None:
                if request.method == "GET":
                    return secured(RedirectResponse(f"{PREFIX}/sign-in", status_code=303))
                return self.render(request, "error.html", {"message": "Sign in first."}, status=403)
            form = None
            try:
                if request.method == "POST":
                    form = await read_form(request, self.max_body)
                    given = form.get("csrf")
                    if not isinstance(given, str):
                        given = request.headers.get("x-csrf-token")
                    if not self.auth.csrf_matches(token, given):
                        return self.render(
                            request,
                            "error.html",
                            {"message": "The form is missing its CSRF token: reload the page."},
                            session=session,
                            status=403,
                        )
                return secured(await handler(Page(request, session, form)))
            except PushgateError as exc:
                status = 404 if isinstance(exc, NotFound) else exc.status
                return self.render(
                    request, "error.html", {"message": exc.message}, session=session, status=status
                )
            finally:
                if form is not None:
                    await form.close()

        return endpoint

    def show(self, page: Page, name: str, status: int = 200, **context: Any) -> Response:
        return self.render(page.request, name, context, session=page.session, status=status)


def redirect(path: str) -> Response:
    return RedirectResponse(PREFIX + path, status_code=303)
