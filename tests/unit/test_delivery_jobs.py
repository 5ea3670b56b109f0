"""Delivery job payloads and channel broadcast messages round-trip."""

from __future__ import annotations

import orjson

from pushgate.channel import broadcast
from pushgate.channel.hub import Outgoing
from pushgate.domain.outcomes import MAX_REASON_CHARS, short_reason
from pushgate.services.delivery_jobs import ChannelJob, PushJob, batches, fanout_id, fanout_payload


def test_push_job_round_trip() -> None:
    job = PushJob(7, [1, 2, 3], 2)
    assert PushJob.decode(job.encode()) == job


def test_channel_job_carries_the_message_unchanged() -> None:
    message = orjson.dumps({"type": "notification", "id": 7, "message": "héllo"})
    job = ChannelJob(7, [5, 6], message)
    decoded = ChannelJob.decode(job.encode())
    assert decoded.device_ids == [5, 6] and orjson.loads(decoded.message) == orjson.loads(message)


def test_fanout_payload_round_trip() -> None:
    assert fanout_id(fanout_payload(2**62)) == 2**62


def test_batches_split_in_order() -> None:
    assert batches([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_broadcast_message_round_trip() -> None:
    item = Outgoing(9, b'{"type":"notification"}')
    ids, decoded = broadcast.decode(broadcast.encode([1, 2**40, 3], item))
    assert list(ids) == [1, 2**40, 3] and decoded == item


def test_reasons_are_cut_to_the_column() -> None:
    assert short_reason("x" * 500) == "x" * (MAX_REASON_CHARS - 1) + "…"
    assert short_reason("410 Unregistered") == "410 Unregistered"
