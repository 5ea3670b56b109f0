"""Native API: an app's provider credentials, and its Web Push public key.

PUT    /api/v1/apps/{app_id}/credentials/{platform}   upload (checked; 400 says what to fix)
GET    /api/v1/apps/{app_id}/credentials              what is configured (public parts)
DELETE /api/v1/apps/{app_id}/credentials/{platform}
POST   /api/v1/apps/{app_id}/credentials/web/generate a new VAPID key pair
GET    /api/v1/apps/{app_id}/web-push/public-key      no authentication: for browsers (reads only)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Response
from pydantic import BaseModel, Field

from pushgate.api.native.apps import AppId
from pushgate.api.native.deps import AccountDependency
from pushgate.services.accounts import Account
from pushgate.services.credentials import CredentialService, StoredCredential
from pushgate.web.route import GuardedRoute
from pushgate.web.timestamps import iso_ms

Platform = Literal["ios", "android", "huawei", "web"]

_EXAMPLES: dict[str, Any] = {
    "ios": {
        "summary": "APNs token authentication (.p8 key)",
        "value": {
            "key_id": "ABC123DEFG",
            "team_id": "DEF123GHIJ",
            "topic": "com.example.app",
            "environment": "production",
            "private_key": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n",
        },
    },
    "android": {
        "summary": "FCM: the service account's JSON key file",
        "value": {
            "service_account": {
                "type": "service_account",
                "project_id": "my-project",
                "private_key_id": "0123abcd",
                "private_key": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n",
                "client_email": "pushgate@my-project.iam.gserviceaccount.com",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        },
    },
    "huawei": {
        "summary": "HMS Push Kit: app id and client secret",
        "value": {"app_id": "101234567", "client_secret": "..."},
    },
    "web": {
        "summary": "An existing VAPID key pair (moving from another service)",
        "value": {"subject": "mailto:ops@example.com", "private_key": "<base64url or PEM>"},
    },
}


class CredentialOut(BaseModel):
    platform: str
    public: dict[str, Any] = Field(
        description="What may be shown: APNs key id, team, topic and environment; FCM project "
        "and client e-mail; HMS app id; VAPID subject and public key. Never the secrets."
    )
    created_at: str
    updated_at: str


class CredentialList(BaseModel):
    credentials: list[CredentialOut]


class VapidGenerateIn(BaseModel):
    subject: str | None = Field(
        None,
        description="Contact for push services (mailto: or https:); default: the server's "
        "`vapid_subject` setting.",
        max_length=512,
    )


class PublicKeyOut(BaseModel):
    public_key: str = Field(
        description="base64url of the app's VAPID public key: pass it as "
        "`applicationServerKey` to `pushManager.subscribe()`."
    )


def _out(stored: StoredCredential) -> CredentialOut:
    return CredentialOut(
        platform=stored.platform,
        public=stored.public,
        created_at=iso_ms(stored.created_ms),
        updated_at=iso_ms(stored.updated_ms),
    )


def credentials_router(
    credentials: CredentialService, current_account: AccountDependency
) -> APIRouter:
    router = APIRouter(
        prefix="/api/v1/apps/{app_id}", tags=["credentials"], route_class=GuardedRoute
    )
    auth = Depends(current_account)

    @router.put(
        "/credentials/{platform}",
        response_model=CredentialOut,
        responses={200: {"description": "Replaced."}, 201: {"description": "Added."}},
    )
    async def put_credentials(
        app_id: AppId,
        platform: Platform,
        response: Response,
        payload: Annotated[dict[str, Any], Body(openapi_examples=_EXAMPLES)],
        account: Account = auth,
    ) -> CredentialOut:
        """Upload the app's credentials for one push platform, replacing earlier ones. They
        are checked now (a key that does not parse, a service account without its fields...
        is a 400 that says what to fix) and stored encrypted."""
        stored, created = await credentials.put(account.id, app_id, platform, payload)
        response.status_code = 201 if created else 200
        return _out(stored)

    @router.get("/credentials", response_model=CredentialList)
    async def list_credentials(app_id: AppId, account: Account = auth) -> CredentialList:
        """Which platforms the app has credentials for, with their public parts."""
        return CredentialList(
            credentials=[_out(c) for c in await credentials.list(account.id, app_id)]
        )

    @router.delete("/credentials/{platform}", status_code=204, response_class=Response)
    async def delete_credentials(
        app_id: AppId, platform: Platform, account: Account = auth
    ) -> Response:
        """Remove them: later deliveries to that platform fail with InvalidCertificate."""
        await credentials.delete(account.id, app_id, platform)
        return Response(status_code=204)

    @router.post("/credentials/web/generate", response_model=CredentialOut, status_code=201)
    async def generate_vapid(
        app_id: AppId,
        payload: Annotated[VapidGenerateIn | None, Body()] = None,
        account: Account = auth,
    ) -> CredentialOut:
        """A new VAPID key pair. Browsers subscribed with the old public key must subscribe
        again."""
        subject = payload.subject if payload is not None else None
        stored, _created = await credentials.generate_vapid(account.id, app_id, subject)
        return _out(stored)

    @router.get("/web-push/public-key", response_model=PublicKeyOut)
    async def public_key(app_id: AppId) -> PublicKeyOut:
        """The app's VAPID public key, for browsers to subscribe with (no authentication).
        Every app gets a key pair when it is created; 404 for an app created before that,
        until one is generated or uploaded."""
        return PublicKeyOut(public_key=await credentials.vapid_public_key(app_id))

    return router
