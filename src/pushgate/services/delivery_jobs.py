"""The jobs of the delivery flow and their encoding.

- ``fanout``: one per accepted notification (its id), written in the notification's own
  transaction, always in the database's jobs table.
- ``deliver.<transport>``: a batch of one notification's deliveries for one transport, on the
  configured queue engine. A channel job carries the pre-serialized message; a push job carries
  the attempt number its deliveries are at, so a stale copy of the job cannot send twice.
  Jobs made in a transaction reach workers only after it commits (the embedded queue writes
  them in it; Redis gets them through the outbox, queue/outbox.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

FANOUT_QUEUE = "fanout"
CHANNEL = "channel"
CHANNEL_BATCH = 5000
PUSH_BATCH = 500


def deliver_queue(transport: str) -> str:
    return f"deliver.{transport}"


def fanout_payload(notification_id: int) -> bytes:
    return str(notification_id).encode()


def fanout_id(payload: bytes) -> int:
    return int(payload)


@dataclass(frozen=True, slots=True)
class ChannelJob:
    notification_id: int
    device_ids: list[int]
    message: bytes

    def encode(self) -> bytes:
        return orjson.dumps(
            {"n": self.notification_id, "d": self.device_ids, "m": orjson.Fragment(self.message)}
        )

    @classmethod
    def decode(cls, payload: bytes) -> ChannelJob:
        data = orjson.loads(payload)
        return cls(int(data["n"]), [int(d) for d in data["d"]], orjson.dumps(data["m"]))


@dataclass(frozen=True, slots=True)
class PushJob:
    notification_id: int
    device_ids: list[int]
    attempts: int  # attempts already made on these deliveries

    def encode(self) -> bytes:
        return orjson.dumps({"n": self.notification_id, "d": self.device_ids, "a": self.attempts})

    @classmethod
    def decode(cls, payload: bytes) -> PushJob:
        data = orjson.loads(payload)
        return cls(int(data["n"]), [int(d) for d in data["d"]], int(data["a"]))


def batches(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[start : start + size]) for start in range(0, len(ids), size)]
