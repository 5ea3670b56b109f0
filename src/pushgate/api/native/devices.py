"""Native API: device registration and listing."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushgate.api.native.deps import AccountDependency
from pushgate.channel.messages import iso_ms
from pushgate.services.accounts import Account
from pushgate.services.devices import Device, DeviceRegistration, DeviceService


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["channel"] = Field(
        description="Transport of the device. `channel`: Pushgate's own WebSocket/SSE channel."
    )
    name: str | None = Field(None, max_length=200, description="A label for people.")
    language: str | None = Field(
        None, max_length=16, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$"
    )
    external_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Your id of the user owning the device; devices with the same id share "
        "one subscriber.",
    )

    @field_validator("name", "external_id")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain the NUL character")
        return value


class DeviceOut(BaseModel):
    id: int
    platform: str
    name: str | None
    language: str | None
    external_id: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: str
    last_seen_at: str | None


class RegisteredDeviceOut(DeviceOut):
    device_token: str = Field(description="Shown once: the device authenticates with it.")


class DeviceList(BaseModel):
    devices: list[DeviceOut]


def _out(device: Device) -> dict[str, object]:
    return {
        "id": device.id,
        "platform": device.platform,
        "name": device.name,
        "language": device.language,
        "external_id": device.external_id,
        "enabled": device.enabled,
        "disabled_reason": device.disabled_reason,
        "created_at": iso_ms(device.created_ms),
        "last_seen_at": iso_ms(device.last_seen_ms) if device.last_seen_ms else None,
    }


def devices_router(devices: DeviceService, current_account: AccountDependency) -> APIRouter:
    router = APIRouter(prefix="/api/v1/devices", tags=["devices"])
    auth = Depends(current_account)

    @router.post("", status_code=201, response_model=RegisteredDeviceOut)
    async def register_device(body: DeviceIn, account: Account = auth) -> RegisteredDeviceOut:
        """Register a device of the account; answers its device token once."""
        registered = await devices.register(
            account.id,
            DeviceRegistration(
                platform=body.platform,
                name=body.name,
                language=body.language,
                external_id=body.external_id,
            ),
        )
        return RegisteredDeviceOut.model_validate(
            {**_out(registered.device), "device_token": registered.device_token}
        )

    @router.get("", response_model=DeviceList)
    async def list_devices(account: Account = auth) -> DeviceList:
        """The account's devices (without their tokens)."""
        return DeviceList.model_validate(
            {"devices": [_out(d) for d in await devices.list(account.id)]}
        )

    return router
