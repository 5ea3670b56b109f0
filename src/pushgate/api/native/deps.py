"""Authentication dependencies of the native API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.requests import HTTPConnection

from pushgate.api.body import client_address
from pushgate.api.native.route import authenticator
from pushgate.domain.errors import Unauthorized
from pushgate.services.accounts import Account, AccountService
from pushgate.throttle import AuthThrottle


def bearer(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


AccountDependency = Callable[[Request], Awaitable[Account]]


def user_auth(accounts: AccountService, throttle: AuthThrottle) -> AccountDependency:
    @authenticator
    async def current_account(request: Request) -> Account:
        found: Account | None = getattr(request.state, "account", None)
        if found is not None:
            return found
        token = bearer(request) or request.headers.get("x-instapush-token")
        account = await throttle.authenticate(
            client_address(request), None, lambda: accounts.authenticate(token)
        )
        if account is None:
            raise Unauthorized(
                "Missing or invalid user token: send 'Authorization: Bearer <user_token>' "
                "(see `pushgate account create`)"
            )
        request.state.account = account
        return account

    return current_account
