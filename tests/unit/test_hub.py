from __future__ import annotations

from pushgate.channel import hub as hub_module
from pushgate.channel.hub import Hub, Outgoing


async def test_publish_reaches_every_connection_of_listed_devices() -> None:
    hub = Hub()
    a1, a2, b = hub.subscribe(1), hub.subscribe(1), hub.subscribe(2)
    item = Outgoing(7, b"{}")
    assert hub.publish([1, 3], item) == 2
    assert a1.queue.get_nowait() is item and a2.queue.get_nowait() is item
    assert b.queue.empty()
    hub.unsubscribe(a1)
    hub.unsubscribe(a2)
    assert hub.publish([1], item) == 0
    assert hub.connection_count() == 1


async def test_slow_connection_is_flagged_not_grown(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(hub_module, "MAX_QUEUED_PER_CONNECTION", 2)
    hub = Hub()
    sub = hub.subscribe(1)
    for i in range(5):
        hub.publish([1], Outgoing(i, b"{}"))
    assert sub.queue.qsize() == 2
    assert sub.overflowed
