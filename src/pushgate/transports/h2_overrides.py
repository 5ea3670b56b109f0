"""Overrides of private internals of the ``h2`` and ``hpack`` libraries, in one place.

- ``PlainEncoder`` / ``CachingDecoder`` (hpack 4.x ``Encoder`` / ``Decoder``, relying on
  ``header_table.dynamic_entries``, ``header_table.resized`` and ``header_table.maxsize``):
  HPACK without Huffman coding, that encodes a request's repeated headers once and decodes
  them once (they are the same table indexes on every request). The client of
  ``transports/http2.py`` codes its header blocks with them.
- ``H2Protocol`` (h2 4.x ``H2Connection``, overriding ``_open_streams`` and
  ``_receive_goaway_frame``, reading ``_closed_streams`` and appending to ``_data_to_send``):
  counts open streams without scanning every stream on each new one (h2 scans, which costs
  O(streams in flight) per request), and lets in-flight streams finish after a GOAWAY (h2
  closes its whole state machine on GOAWAY, sent or received). The server side of
  ``pushgate.testing.fake_apns`` runs on it.

``tests/unit/test_h2_overrides.py`` pins the behaviour these rely on against h2 and hpack, so
an upgrade of either that changes it fails there first.
"""

from __future__ import annotations

from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, Event
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.table import HeaderTable
from hyperframe.frame import Frame, GoAwayFrame


def _prefixed(number: int, bits: int, first: int) -> bytes:
    """An HPACK integer with an N-bit prefix (RFC 7541 5.1), ``first`` or-ed into its first
    byte."""
    limit = (1 << bits) - 1
    if number < limit:
        return bytes((first | number,))
    out = bytearray((first | limit,))
    number -= limit
    while number >= 0x80:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


# name -> its first index in HPACK's static table (hpack's own search finds that one first)
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name, _index)
# (name, value) pairs of the static table: hpack sends their index, even never-indexed
_STATIC_PAIRS = frozenset(HeaderTable.STATIC_TABLE)


class PlainEncoder(Encoder):
    """HPACK without Huffman coding of literals: the only literals left are values unique to
    one message (a request's path, a response's ``apns-id``), sent once, so coding them costs
    more time than the few bytes it saves. Send those as ``NeverIndexedHeaderTuple`` so they
    stay out of the dynamic table, which then holds the repeated headers only."""

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[Any, ...] | None = None
        self._parts = (b"", b"")
        self._table_mark: tuple[int, int] = (0, 0)

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        """As HPACK does; a block like the previous one but for its one never-indexed header
        reuses the previous encoding of the others when the dynamic table has not changed
        since (then they are all table indexes, the same bytes again)."""
        items = list(headers)
        position = -1
        for index, item in enumerate(items):
            if isinstance(item, NeverIndexedHeaderTuple):
                if position >= 0:
                    self._last = None
                    return super().encode(items, huffman=False)
                position = index
        if position < 0 or self.header_table.resized:  # (a size change must lead the block)
            self._last = None
            return super().encode(items, huffman=False)
        unique = self._never_indexed(items[position])  # changes no table
        key = (position, *items[:position], *items[position + 1 :])
        mark = self._mark()
        if key == self._last and self._table_mark == mark:
            before, after = self._parts
            return before + unique + after
        # Encoded in two parts around the unique header (the same block as in one go); when
        # that changed nothing in the table, the parts are what the next such block sends.
        before = super().encode(items[:position], huffman=False)
        after = super().encode(items[position + 1 :], huffman=False)
        if self._mark() == mark:
            self._last, self._parts, self._table_mark = key, (before, after), mark
        else:
            self._last = None
        return before + unique + after

    def _never_indexed(self, header: Any) -> bytes:
        """One never-indexed literal without Huffman coding, as hpack encodes it (RFC 7541
        6.2.3), written here when its name is in the static table (hpack searched the whole
        table for it, and logged, on every request)."""
        name, value = header
        index = _STATIC_NAMES.get(bytes(name))
        if index is None or (bytes(name), bytes(value)) in _STATIC_PAIRS:
            return bytes(super().encode([header], huffman=False))
        return _prefixed(index, 4, 0x10) + _prefixed(len(value), 7, 0x00) + bytes(value)

    def _mark(self) -> tuple[int, int]:
        entries = self.header_table.dynamic_entries
        return (len(entries), id(entries[0]) if entries else 0)


class CachingDecoder(Decoder):
    """HPACK decoding with a shortcut for the blocks ``PlainEncoder`` sends: one-byte table
    indexes around at most one never-indexed literal. Indexes are decoded once and reused
    while the dynamic table stays the same; anything else is decoded as HPACK does."""

    def __init__(self) -> None:
        super().__init__()
        self._indexed: dict[int, Any] = {}
        self._indexed_mark: tuple[int, int, int] = (0, 0, 0)

    def decode(self, data: Any, raw: bool = False) -> Any:
        if raw:
            fast = self._shortcut(bytes(data))
            if fast is not None:
                return fast
        return super().decode(data, raw)

    def _shortcut(self, block: bytes) -> list[Any] | None:
        table = self.header_table
        entries = table.dynamic_entries
        mark = (len(entries), id(entries[0]) if entries else 0, table.maxsize)
        if mark != self._indexed_mark:
            self._indexed.clear()
            self._indexed_mark = mark
        indexed = self._indexed
        headers: list[Any] = []
        literal = False
        size = len(block)
        at = 0
        while at < size:
            byte = block[at]
            if byte >= 0x80:  # an indexed field, its index in one byte unless 0xFF
                if byte == 0xFF:
                    return None
                header = indexed.get(byte)
                if header is None:
                    [header] = super().decode(block[at : at + 1], raw=True)
                    indexed[byte] = header
                headers.append(header)
                at += 1
                continue
            # One never-indexed literal (0001xxxx; it changes no table): its name index in
            # one byte (0: the name follows as a string), then its value as a string.
            if literal or byte & 0xF0 != 0x10 or byte == 0x1F:
                return None
            end = at + 1
            strings = []
            for _ in range(2 if byte == 0x10 else 1):  # (name and) value
                if end >= size or block[end] & 0x7F == 0x7F:
                    return None
                strings.append((block[end], end + 1))
                end += 1 + (block[end] & 0x7F)
            if end > size:
                return None
            if byte == 0x10 and not (strings[0][0] | strings[1][0]) & 0x80:
                # a literal name and value, neither Huffman-coded: the bytes themselves
                (name_size, name_at), (value_size, value_at) = strings
                headers.append(
                    NeverIndexedHeaderTuple(
                        block[name_at : name_at + name_size],
                        block[value_at : value_at + value_size],
                    )
                )
            else:
                headers.extend(super().decode(block[at:end], raw=True))
            literal = True
            at = end
        return headers


class H2Protocol(H2Connection):
    """``H2Connection`` that counts open streams cheaply and survives GOAWAY gracefully.

    Call ``stream_closed(stream_id)`` for every stream that has ended or been reset (both
    sides did: the stream is closed); ``_open_streams`` then counts the remaining ones without
    a scan. A full scan still runs every 256 counts, so a stream closed some other way is
    forgotten eventually (until then the count is too high, never too low)."""

    def __init__(self, config: H2Configuration) -> None:
        super().__init__(config)
        self.encoder = PlainEncoder()
        self.decoder = CachingDecoder()
        self.decoder.max_header_list_size = self.DEFAULT_MAX_HEADER_LIST_SIZE
        self._maybe_closed: list[int] = []
        self._counts = 0
        self.goaway_received: ConnectionTerminated | None = None

    def stream_closed(self, stream_id: int) -> None:
        self._maybe_closed.append(stream_id)

    def _open_streams(self, remainder: int) -> int:
        self._counts += 1
        streams = self.streams
        if len(streams) < 32 or not self._counts & 255:
            self._maybe_closed.clear()
            return super()._open_streams(remainder)
        if self._maybe_closed:
            closed = self._closed_streams
            for stream_id in self._maybe_closed:
                stream = streams.get(stream_id)
                if stream is not None and stream.closed:
                    del streams[stream_id]
                    closed[stream_id] = stream.closed_by
            self._maybe_closed.clear()
        # Each side here opens streams of one parity only (no server push): every stream in
        # the table is of the kind being counted, open or closed in a way not yet seen.
        return len(streams)

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        # h2 moves the connection to CLOSED here, which refuses the answers of the streams
        # the server promised to finish. Report the GOAWAY and keep the streams going; the
        # caller opens no new streams.
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        self.goaway_received = event
        return [], [event]

    def graceful_goaway(self, last_stream_id: int, error_code: int = 0) -> None:
        """Queue a GOAWAY frame without closing h2's state, so streams up to
        ``last_stream_id`` can still be answered (server side)."""
        frame = GoAwayFrame(stream_id=0, last_stream_id=last_stream_id, error_code=error_code)
        self._data_to_send += frame.serialize()


def h2_config(*, client_side: bool) -> H2Configuration:
    """Headers as bytes, no per-header normalisation or validation (we build them lower-case
    and well-formed; it is a large share of h2's time per request)."""
    return H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )


__all__ = ["CachingDecoder", "H2Protocol", "PlainEncoder", "h2_config"]
