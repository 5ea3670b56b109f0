"""The device channel as the delivery core sees it (``services.channel_port.ChannelPort``)."""

from __future__ import annotations

from pushgate.channel.broadcast import ChannelBroadcast
from pushgate.channel.hub import Outgoing
from pushgate.channel.messages import content_message
from pushgate.transports.base import Content


class ChannelOut:
    def __init__(self, broadcast: ChannelBroadcast) -> None:
        self._broadcast = broadcast

    def message(self, content: Content) -> bytes:
        return content_message(content)

    async def hand_over(self, device_ids: list[int], notification_id: int, message: bytes) -> None:
        await self._broadcast.publish(device_ids, Outgoing(notification_id, message))
