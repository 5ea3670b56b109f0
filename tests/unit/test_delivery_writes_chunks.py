"""The row sources of the status statements: on SQLite VALUES lists of a few fixed sizes,
padded; on PostgreSQL one array per column, in one statement text."""

from __future__ import annotations

from pushgate.storage.delivery_writes import _values_chunks

PAD = (0, -1)


def _sizes(count: int) -> list[int]:
    rows = [(i, i) for i in range(count)]
    chunks = _values_chunks(rows, ("bigint", "bigint"), False, PAD)
    params = [p for _, chunk in chunks for p in chunk]
    real = [p for pair in rows for p in pair]
    assert params[: len(real)] == real  # every row, in order
    assert params[len(real) :] == list(PAD) * ((len(params) - len(real)) // 2)  # then padding
    for values, chunk in chunks:
        assert values.count("(?, ?)") * 2 == len(chunk)
    return [len(chunk) // 2 for _, chunk in chunks]


def test_a_few_rows_take_the_smallest_size_that_holds_them() -> None:
    assert _sizes(0) == []
    assert _sizes(1) == [16]
    assert _sizes(16) == [16]
    assert _sizes(17) == [128]
    assert _sizes(1000) == [1024]


def test_many_rows_take_full_lists_then_the_smallest_for_the_rest() -> None:
    assert _sizes(1024) == [1024]
    assert _sizes(1100) == [1024, 128]
    assert _sizes(2050) == [1024, 1024, 16]


def test_postgresql_takes_an_array_per_column_in_one_text_for_any_number_of_rows() -> None:
    rows = [(i, 10 * i) for i in range(5)]
    [(source, params)] = _values_chunks(rows, ("int", "bigint"), True, PAD)
    assert params == ([0, 1, 2, 3, 4], [0, 10, 20, 30, 40])
    assert source == "unnest($1::int[], $2::bigint[]) AS v(column1, column2)"
    [(same, _)] = _values_chunks(rows[:2], ("int", "bigint"), True, PAD)
    assert same == source  # prepared once, whatever the rows
    assert _values_chunks([], ("int", "bigint"), True, PAD) == []
