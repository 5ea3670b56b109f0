"""Signing in (with the account's user token, or an e-mail and password) and out.

The sign-in form is protected from cross-site posts like every other form: before there is
a session, a random cookie (``pushgate_signin``) is set with the form, and the form carries
its keyed hash. Failed attempts count towards the server's failed-authentication throttle.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pushgate.crypto import new_token
from pushgate.dashboard.web import (
    PREFIX,
    SESSION_COOKIE,
    Dashboard,
    FormTooLarge,
    Page,
    read_form,
    redirect,
    secured,
)
from pushgate.domain.errors import TooManyRequests
from pushgate.web.auth import client_address

SIGN_IN_COOKIE = "pushgate_signin"


def _signin_csrf(dash: Dashboard, nonce: str) -> str:
    return dash.rt.box.digest("dashboard-sign-in:" + nonce)


def routes(dash: Dashboard) -> list[Route]:
    def form(request: Request, error: str | None = None, status: int = 200) -> Response:
        nonce = request.cookies.get(SIGN_IN_COOKIE)
        if not nonce or len(nonce) > 64:
            nonce = new_token(16)
        response = dash.render(
            request,
            "sign_in.html",
            {"signin_csrf": _signin_csrf(dash, nonce), "error": error},
            status=status,
        )
        response.set_cookie(
            SIGN_IN_COOKIE,
            nonce,
            max_age=3600,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def sign_in_page(request: Request) -> Response:
        if await dash.auth.session(request.cookies.get(SESSION_COOKIE)) is not None:
            return secured(redirect("/"))
        return form(request)

    async def sign_in(request: Request) -> Response:
        try:
            data = await read_form(request, dash.max_body)
        except FormTooLarge as exc:
            return form(request, exc.message, 413)
        nonce = request.cookies.get(SIGN_IN_COOKIE) or ""
        given = data.get("csrf")
        if not nonce or not isinstance(given, str):
            return form(request, "The form expired: sign in again.", 403)
        if not hmac.compare_digest(_signin_csrf(dash, nonce).encode(), given.encode()):
            return form(request, "The form expired: sign in again.", 403)
        token = data.get("user_token")
        email = data.get("email")
        password = data.get("password")

        async def check() -> int | None:
            if isinstance(token, str) and token.strip():
                account = await dash.rt.accounts.authenticate(token.strip())
                return None if account is None else account.id
            if isinstance(email, str) and isinstance(password, str) and email and password:
                return await dash.auth.check_password(email, password)
            return None

        try:
            account_id = await dash.rt.throttle.authenticate(client_address(request), None, check)
        except TooManyRequests as exc:
            return form(request, exc.message, 429)
        if account_id is None:
            return form(request, "Wrong user token, or wrong e-mail or password.", 401)
        session_token = await dash.auth.start(account_id)
        response = secured(redirect("/"))
        response.set_cookie(
            SESSION_COOKIE,
            session_token,
            max_age=dash.rt.settings.dashboard_session_seconds,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
        return response

    async def sign_out(page: Page) -> Response:
        await dash.auth.end(page.request.cookies.get(SESSION_COOKIE))
        response = redirect("/sign-in")
        response.delete_cookie(
            SESSION_COOKIE,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=page.request.url.scheme == "https",
        )
        return response

    return [
        Route(f"{PREFIX}/sign-in", sign_in_page, methods=["GET"]),
        Route(f"{PREFIX}/sign-in", sign_in, methods=["POST"]),
        Route(f"{PREFIX}/sign-out", dash.page(sign_out), methods=["POST"]),
    ]
