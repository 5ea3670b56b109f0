"""The jobs of the delivery flow and their encoding.

- ``fanout``: one per accepted notification (its id), written in the notification's own
  transaction, always in the database's jobs table. A large audience is fanned out in chunks
  of devices by id (``services/fan_out.py``); between chunks the job carries where the next
  one starts (``FanoutPart``).
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
    return FanoutPart.decode(payload).notification_id


def fanout_payloads_of(notification_id: int) -> tuple[bytes, bytes, bytes]:
    """(the job's payload before its first chunk, and the range every continuation's payload
    lies in, ``low <= payload < high``), to find a notification's fan-out job by payload."""
    head = fanout_payload(notification_id)
    return head, head + b":", head + b";"  # ";" sorts right after ":"


@dataclass(frozen=True, slots=True)
class FanoutPart:
    """What is left of a notification's fan-out: its devices with ids above ``after``. A new
    job (``after`` 0) is its notification id alone, as ``fanout_payload`` writes it."""

    notification_id: int
    after: int = 0

    def encode(self) -> bytes:
        if self.after == 0:
            return fanout_payload(self.notification_id)
        return f"{self.notification_id}:{self.after}".encode()

    @classmethod
    def decode(cls, payload: bytes) -> FanoutPart:
        notification_id, _, after = payload.partition(b":")
        return cls(int(notification_id), int(after) if after else 0)


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
