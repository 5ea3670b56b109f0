"""What the delivery core needs of the device channel, as an interface the channel implements
(``channel/port.py``): the core never imports the channel."""

from __future__ import annotations

from typing import Protocol

from pushgate.transports.base import Content


class ChannelPort(Protocol):
    def message(self, content: Content) -> bytes:
        """The channel message a device gets for ``content`` (already in its language)."""

    async def hand_over(self, device_ids: list[int], notification_id: int, message: bytes) -> None:
        """Give ``message`` to these devices' live connections (wherever they are held)."""
