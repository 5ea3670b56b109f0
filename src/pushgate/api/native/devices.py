"""Native API: device registration (every platform) and listing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from pushgate.api.native.deps import AccountDependency
from pushgate.domain.errors import InvalidInput
from pushgate.services.accounts import Account
from pushgate.services.devices import Device, DeviceRegistration, DeviceService
from pushgate.web.body import no_nul
from pushgate.web.route import GuardedRoute
from pushgate.web.timestamps import iso_ms


class _DeviceFields(BaseModel):
    """What every platform takes. The JSON-schema-only constraints (``json_schema_extra``)
    document what registration checks; the checks themselves, with messages that say what to
    fix, are ``pushgate.domain.addresses``."""

    model_config = ConfigDict(extra="forbid")

    app_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The app the device belongs to: its provider credentials reach it (the "
        "`id` Instapush's `apps/add` answers). Required for ios, android, huawei and web; "
        "without it a channel device is a personal device of the account, which receives "
        "every app of the account.",
    )
    name: str | None = Field(None, max_length=200, description="A label for people.")
    language: str | None = Field(
        None,
        max_length=35,
        pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8})*$",
        description="BCP 47 language tag of the device (`en`, `en-US`; `en_US` is read as "
        "`en-US`): it chooses the translation the device gets.",
    )
    country: str | None = Field(
        None, min_length=2, max_length=2, description="ISO 3166-1 alpha-2 country code."
    )
    model: str | None = Field(None, max_length=100, description="The device model.")
    os_version: str | None = Field(None, max_length=50)
    app_version: str | None = Field(None, max_length=50)
    user_id: str | None = Field(
        None, min_length=1, max_length=200, description="The owner's user id (Push API v2 UserId)."
    )
    identifiers: dict[str, str] | None = Field(
        None,
        description="More identifiers of the owner, custom keys included (`INSIDER.` prefixes "
        'are accepted), e.g. `{"member_no": "A-17"}`.',
    )
    timezone: str | None = Field(
        None,
        description="IANA time zone name (e.g. `Europe/Amsterdam`, any letter case) or a fixed "
        "offset from `-12:00` to `+14:00` (e.g. `+03:00`).",
        examples=["Europe/Amsterdam", "+03:00"],
    )
    external_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Your id of the user owning the device; devices with the same id share "
        "one subscriber.",
    )
    email: str | None = Field(
        None,
        description="The owner's e-mail address (at most 320 characters).",
        json_schema_extra={"format": "email", "maxLength": 320},
    )
    phone_number: str | None = Field(
        None,
        description="The owner's phone number in E.164 form, e.g. `+31612345678`.",
        json_schema_extra={"pattern": r"^\+[1-9][0-9]{7,14}$"},
    )
    uuid: str | None = Field(
        None, description="The owner's UUID.", json_schema_extra={"format": "uuid"}
    )

    _no_nul = field_validator(
        "name", "external_id", "user_id", "model", "os_version", "app_version"
    )(no_nul)


class DeviceIn(_DeviceFields):
    """The registration body as validated: the address fields are checked per platform by
    ``DeviceService.register``, so that a wrong or missing one is named in the message."""

    platform: Literal["channel", "ios", "android", "huawei", "web"]
    token: str | None = None
    subscription: dict[str, Any] | None = None


# -- the registration body as documented: one schema per platform --------------------------


class ChannelDeviceIn(_DeviceFields):
    """A client of Pushgate's own device channel (WebSocket, SSE, poll): no address."""

    platform: Literal["channel"]


class IosDeviceIn(_DeviceFields):
    """An iOS app reached through APNs."""

    platform: Literal["ios"]
    token: str = Field(
        description="The APNs device token in hexadecimal (64 digits today; an even number of "
        "64 to 200 is accepted, any letter case). Registering it again updates that device.",
        pattern=r"^([0-9A-Fa-f]{2}){32,100}$",
    )


class AndroidDeviceIn(_DeviceFields):
    """An Android app reached through Firebase Cloud Messaging."""

    platform: Literal["android"]
    token: str = Field(
        description="The FCM registration token. Registering it again updates that device.",
        min_length=100,
        max_length=4096,
        pattern=r"^[A-Za-z0-9_:-]{100,4096}$",
    )


class HuaweiDeviceIn(_DeviceFields):
    """A Huawei app reached through HMS Push Kit."""

    platform: Literal["huawei"]
    token: str = Field(
        description="The HMS push token. Registering it again updates that device.",
        min_length=32,
        max_length=4096,
        pattern=r"^[A-Za-z0-9_:.+/=-]{32,4096}$",
    )


class WebPushKeys(BaseModel):
    p256dh: str = Field(
        description="base64url of the subscription's uncompressed P-256 public key (65 bytes, "
        "first byte 0x04, a point on the curve).",
        pattern=r"^[A-Za-z0-9_-]{87}=?$",
    )
    auth: str = Field(
        description="base64url of the subscription's 16-byte auth secret.",
        pattern=r"^[A-Za-z0-9_-]{22}(==)?$",
    )


class WebPushSubscriptionIn(BaseModel):
    """The browser's `PushSubscription.toJSON()`; other members are ignored."""

    endpoint: str = Field(
        description="The push service URL: https, with a host, at most 2048 characters. "
        "Registering the same endpoint again updates that device (and its keys).",
        max_length=2048,
        pattern=r"^https://[^/?#\s]+",
    )
    keys: WebPushKeys
    expirationTime: float | None = None  # noqa: N815 - the browser's name


class WebDeviceIn(_DeviceFields):
    """A browser reached through Web Push."""

    platform: Literal["web"]
    subscription: WebPushSubscriptionIn


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with every ``#/$defs/...`` reference replaced by its definition."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inlined(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inlined(value, definitions) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


def _registration_schema() -> dict[str, Any]:
    variants = ChannelDeviceIn | IosDeviceIn | AndroidDeviceIn | HuaweiDeviceIn | WebDeviceIn
    schema = TypeAdapter(variants).json_schema()
    definitions = schema.pop("$defs", {})
    for definition in definitions.values():
        properties = definition.get("properties", {})
        if "platform" in properties:  # first, as it decides the rest
            definition["properties"] = {"platform": properties.pop("platform"), **properties}
    return {
        "description": "The device: `platform` and the address field that platform uses "
        "(`token` for ios, android and huawei; `subscription` for web; none for channel), "
        "plus the owner's identifiers.",
        **_inlined(schema, definitions),
    }


class DeviceOut(BaseModel):
    id: int
    app_id: str | None = Field(
        description="The app's id; null for a personal channel device of the account."
    )
    subscriber_id: int
    platform: str
    name: str | None
    language: str | None
    timezone: str | None
    external_id: str | None
    email: str | None
    phone_number: str | None
    uuid: str | None
    user_id: str | None
    country: str | None
    model: str | None
    os_version: str | None
    app_version: str | None
    address_hint: str | None = Field(
        description="What may be shown of the provider address: the last characters of the "
        "token, or the origin of a web push endpoint. Null for channel devices."
    )
    enabled: bool
    disabled_reason: str | None
    created_at: str
    last_seen_at: str | None
    last_active_at: str | None


class RegisteredDeviceOut(DeviceOut):
    device_token: str = Field(
        description="Shown once: the device authenticates with it. A re-registration answers "
        "a new one and the previous one stops working."
    )


class DeviceList(BaseModel):
    devices: list[DeviceOut]


def _out(device: Device) -> dict[str, object]:
    return {
        "id": device.id,
        "app_id": device.app_key,
        "subscriber_id": device.subscriber_id,
        "platform": device.platform,
        "name": device.name,
        "language": device.language,
        "timezone": device.timezone,
        "external_id": device.external_id,
        "email": device.email,
        "phone_number": device.phone_number,
        "uuid": device.uuid,
        "user_id": device.user_id,
        "country": device.country,
        "model": device.model,
        "os_version": device.os_version,
        "app_version": device.app_version,
        "address_hint": device.address_hint,
        "enabled": device.enabled,
        "disabled_reason": device.disabled_reason,
        "created_at": iso_ms(device.created_ms),
        "last_seen_at": iso_ms(device.last_seen_ms) if device.last_seen_ms else None,
        "last_active_at": iso_ms(device.last_active_ms) if device.last_active_ms else None,
    }


def devices_router(devices: DeviceService, current_account: AccountDependency) -> APIRouter:
    router = APIRouter(prefix="/api/v1/devices", tags=["devices"], route_class=GuardedRoute)
    auth = Depends(current_account)
    registration_schema = _registration_schema()

    @router.post(
        "",
        status_code=201,
        response_model=RegisteredDeviceOut,
        responses={
            200: {
                "description": "A device with this provider address was registered before: "
                "it was updated (and enabled again) and has a new device token.",
                "model": RegisteredDeviceOut,
            },
            201: {"description": "A new device."},
        },
        # Documented per platform; validated by DeviceIn and then the domain's rules.
        openapi_extra={
            "requestBody": {"content": {"application/json": {"schema": registration_schema}}}
        },
    )
    async def register_device(
        response: Response,
        payload: Annotated[dict[str, Any], Body(title="Device")],
        account: Account = auth,
    ) -> RegisteredDeviceOut:
        """Register a device of one of the account's apps (a channel device may be the
        account's own, without an app); answers its device token once.

        Push devices (ios, android, huawei, web) are found again by their provider address
        within their app: registering it again answers 200 with the same id and a new device
        token."""
        try:
            body = DeviceIn.model_validate(payload)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
            ) from exc
        try:
            registered = await devices.register(
                account.id,
                DeviceRegistration(
                    platform=body.platform,
                    app_key=body.app_id,
                    name=body.name,
                    language=body.language,
                    external_id=body.external_id,
                    timezone=body.timezone,
                    token=body.token,
                    subscription=body.subscription,
                    email=body.email,
                    phone_number=body.phone_number,
                    uuid=body.uuid,
                    user_id=body.user_id,
                    country=body.country,
                    model=body.model,
                    os_version=body.os_version,
                    app_version=body.app_version,
                    identifiers=body.identifiers,
                ),
            )
        except InvalidInput as exc:
            # The same wording as the request validation errors of the native API.
            raise InvalidInput(f"Invalid request: {exc.message}") from exc
        if not registered.created:
            response.status_code = 200
        return RegisteredDeviceOut.model_validate(
            {**_out(registered.device), "device_token": registered.device_token}
        )

    @router.get("", response_model=DeviceList)
    async def list_devices(
        app_id: Annotated[
            str | None, Query(max_length=64, description="Only the devices of this app.")
        ] = None,
        account: Account = auth,
    ) -> DeviceList:
        """The account's devices (without their tokens or provider addresses)."""
        return DeviceList.model_validate(
            {"devices": [_out(d) for d in await devices.list(account.id, app_id)]}
        )

    return router
