from __future__ import annotations

from pushgate.services.pipeline import _key, _Statuses


def test_small_take_moves_everything() -> None:
    statuses = _Statuses({_key(1, 1): 5}, {}, {_key(1, 2): 6}, {1: 7})
    chunk = statuses.take(10)
    assert chunk.rows() == ([(1, 5, 1, 1)], [(0, 6, 1, 2)], [(7, 1)])
    assert not statuses


def test_a_resent_delivery_counts_its_sends_and_ids_keep_64_bits() -> None:
    big = (1 << 63) - 1
    statuses = _Statuses(
        {_key(big, 3): 5, _key(2, big): 8}, {_key(big, 3): 2}, {_key(2, big): 9}, {}
    )
    sent_rows, delivered_rows, _ = statuses.take(10).rows()
    assert sent_rows == [(3, 5, big, 3)]
    assert delivered_rows == [(1, 9, 2, big)]


def test_chunks_keep_a_sent_with_its_acknowledgement() -> None:
    sent = {_key(d, n): 100 for d in range(3) for n in range(4)}
    resent = {_key(0, n): 1 for n in range(4)}
    delivered = {_key(0, n): 200 for n in range(4)}
    statuses = _Statuses(dict(sent), dict(resent), dict(delivered), {0: 1})
    seen_rows: list[tuple[int, int, int, int]] = []
    delivered_rows: list[tuple[int, int, int, int]] = []
    while statuses:
        chunk = statuses.take(3)
        assert len(chunk.sent.keys() - chunk.delivered.keys()) + len(chunk.delivered) <= 3
        sent_part, delivered_part, _ = chunk.rows()
        seen_rows += sent_part
        delivered_rows += delivered_part
    # every delivered row carries its send count; no sent row duplicates a delivered one
    assert sorted(delivered_rows) == sorted((2, 200, 0, n) for n in range(4))
    assert sorted((d, n) for _, _, d, n in seen_rows) == sorted(
        (d, n) for d in (1, 2) for n in range(4)
    )
