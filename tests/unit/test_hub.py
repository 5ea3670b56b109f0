from __future__ import annotations

import contextlib

from pushgate.channel import hub as hub_module
from pushgate.channel.hub import Hub, Outgoing


async def test_publish_reaches_every_connection_of_listed_devices() -> None:
    hub = Hub()
    a1, a2, b = hub.subscribe(1), hub.subscribe(1), hub.subscribe(2)
    item = Outgoing(7, b"{}")
    assert hub.publish([1, 3], item) == 2
    assert a1.drain(10) == [item] and a2.drain(10) == [item]
    assert b.qsize() == 0
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
    assert sub.qsize() == 2
    assert sub.overflowed


async def test_get_waits_for_the_next_item_and_keeps_order() -> None:
    import asyncio

    hub = Hub()
    sub = hub.subscribe(1)
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    hub.publish([1], Outgoing(1, b"a"))
    hub.publish([1], Outgoing(2, b"b"))
    assert (await waiting).notification_id == 1
    assert (await sub.get()).notification_id == 2
    with_timeout = asyncio.create_task(asyncio.wait_for(sub.get(), 0.01))
    with contextlib.suppress(TimeoutError):
        await with_timeout
    hub.publish([1], Outgoing(3, b"c"))  # a cancelled wait leaves nothing behind
    assert (await sub.get()).notification_id == 3
