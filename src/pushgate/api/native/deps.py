"""Authentication dependencies of the native API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from pushgate.domain.errors import Unauthorized
from pushgate.services.accounts import Account, AccountService
from pushgate.services.api_keys import KEY_PREFIX, ApiKeyService
from pushgate.throttle import AuthThrottle
from pushgate.web.auth import bearer, client_address
from pushgate.web.route import authenticator

AccountDependency = Callable[[Request], Awaitable[Account]]


def user_auth(
    accounts: AccountService, throttle: AuthThrottle, keys: ApiKeyService
) -> AccountDependency:
    async def check(token: str | None, address: str | None) -> Account | None:
        if token is not None and token.startswith(KEY_PREFIX):
            principal = await keys.authenticate("native", token, address)
            return None if principal is None else await accounts.get(principal.account_id)
        return await accounts.authenticate(token)

    @authenticator
    async def current_account(request: Request) -> Account:
        """The account of the request's user token, or of its native API key."""
        found: Account | None = getattr(request.state, "account", None)
        if found is not None:
            return found
        token = bearer(request) or request.headers.get("x-instapush-token")
        address = client_address(request)
        account = await throttle.authenticate(address, None, lambda: check(token, address))
        if account is None:
            raise Unauthorized(
                "Missing or invalid user token: send 'Authorization: Bearer <user_token>' "
                "(see `pushgate account create`) or a native API key"
            )
        request.state.account = account
        return account

    return current_account
