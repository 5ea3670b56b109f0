"""Delivery job payloads and channel broadcast messages round-trip."""

from __future__ import annotations

import orjson

from pushgate.channel import broadcast
from pushgate.channel.hub import Outgoing
from pushgate.domain.outcomes import MAX_REASON_CHARS, short_reason
from pushgate.services.delivery_jobs import (
    ChannelJob,
    FanoutPart,
    PushJob,
    batches,
    fanout_id,
    fanout_payload,
    fanout_payloads_of,
)


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


def test_a_fanout_continuation_round_trips_and_names_its_notification() -> None:
    part = FanoutPart(12, 3_000_000_000)
    assert FanoutPart.decode(part.encode()) == part
    assert fanout_id(part.encode()) == 12
    # Before its first chunk a job is the notification id alone, as it always was.
    assert FanoutPart(12).encode() == fanout_payload(12)
    assert FanoutPart.decode(fanout_payload(12)) == FanoutPart(12)


def test_a_notifications_fanout_payloads_are_found_by_range_and_no_others() -> None:
    head, low, high = fanout_payloads_of(12)
    ours = [FanoutPart(12).encode(), FanoutPart(12, 5).encode()]
    theirs = [b"1", b"120", b"121:5", b"13", b"11:99", FanoutPart(123, 1).encode()]
    assert all(p == head or low <= p < high for p in ours)
    assert not any(p == head or low <= p < high for p in theirs)


def test_batches_split_in_order() -> None:
    assert batches([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_broadcast_message_round_trip() -> None:
    item = Outgoing(9, b'{"type":"notification"}')
    ids, decoded = broadcast.decode(broadcast.encode([1, 2**40, 3], item))
    assert list(ids) == [1, 2**40, 3] and decoded == item


def test_reasons_are_cut_to_the_column() -> None:
    assert short_reason("x" * 500) == "x" * (MAX_REASON_CHARS - 1) + "…"
    assert short_reason("410 Unregistered") == "410 Unregistered"
