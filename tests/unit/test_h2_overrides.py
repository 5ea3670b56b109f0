"""The overrides of h2 and hpack internals (``transports/h2_overrides.py``), in memory: the
HPACK encoder that reuses the encoding of repeated headers, the decoder that decodes them once,
the cheap open-stream count, and a GOAWAY that lets in-flight streams finish."""

from __future__ import annotations

import random

import pytest
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
)
from h2.exceptions import TooManyStreamsError
from h2.settings import SettingCodes
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.table import HeaderTable

from pushgate.transports.h2_overrides import CachingDecoder, H2Protocol, PlainEncoder, h2_config


def request(path: bytes, token: bytes = b"bearer A") -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"api.push.apple.com"),
        NeverIndexedHeaderTuple(b":path", path),
        (b"authorization", token),
        (b"apns-topic", b"com.example.app"),
    ]


def plain(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(bytes(name), bytes(value)) for name, value in headers]


def test_encoder_blocks_decode_to_what_was_encoded() -> None:
    """Repeated blocks, changing headers, a header too big to index, table size changes:
    every block decodes (in order, by one decoder) to its headers."""
    rng = random.Random(7)
    encoder = PlainEncoder()
    decoder = Decoder()
    tokens = [b"bearer A", b"bearer B", b"bearer " + b"x" * 5000]
    for round_ in range(400):
        headers = request(b"/3/device/%064x" % rng.getrandbits(256), rng.choice(tokens))
        if round_ % 97 == 50:
            encoder.header_table_size = rng.choice([0, 256, 4096])
            decoder.header_table_size = 4096  # the largest size it allows
        if round_ % 13 == 0:
            headers.append((b"x-extra", b"%d" % round_))
        block = encoder.encode(headers)
        decoded = decoder.decode(block, raw=True)
        assert decoded == plain(headers)


@pytest.mark.parametrize("encoder_kind", [PlainEncoder, Encoder])
def test_caching_decoder_decodes_as_hpack_does(encoder_kind: type[Encoder]) -> None:
    """Blocks of our encoder and of hpack's (Huffman, indexing, table size changes, long
    and new-name literals): the caching decoder gives what a plain decoder gives."""
    rng = random.Random(11)
    encoder = encoder_kind()
    reference = Decoder()
    decoder = CachingDecoder()
    for round_ in range(600):
        headers = request(b"/3/device/%064x" % rng.getrandbits(256), rng.choice([b"A", b"B"]))
        if round_ % 7 == 0:
            headers.append(NeverIndexedHeaderTuple(b"apns-id", b"%036d" % round_))
        if round_ % 11 == 0:
            headers.append(NeverIndexedHeaderTuple(b"x-long", b"v" * rng.choice([126, 127, 300])))
        if round_ % 17 == 0:
            headers.append((b"x-new-%d" % round_, b"indexed"))
        if round_ % 89 == 5:
            encoder.header_table_size = rng.choice([0, 512, 4096])
        block = encoder.encode(headers)
        expected = reference.decode(block, raw=True)
        got = decoder.decode(block, raw=True)
        assert got == expected
        assert [type(header) for header in got] == [type(header) for header in expected]
        assert plain(expected) == plain(headers)


def test_encoder_reuses_the_repeated_part() -> None:
    encoder = PlainEncoder()
    first = encoder.encode(request(b"/3/device/aa"))
    second = encoder.encode(request(b"/3/device/bb"))
    third = encoder.encode(request(b"/3/device/cc"))
    assert len(second) < len(first)
    assert third.replace(b"/3/device/cc", b"/3/device/bb") == second
    assert b"/3/device/cc" in third  # a literal, without Huffman coding


def handshake(max_streams: int = 100) -> tuple[H2Protocol, H2Protocol]:
    client = H2Protocol(h2_config(client_side=True))
    server = H2Protocol(h2_config(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: max_streams})
    for _ in range(3):
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    assert client.remote_settings.max_concurrent_streams == max_streams
    return client, server


def open_stream(client: H2Protocol) -> int:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, request(b"/x"), end_stream=True)
    return stream_id


def answer(server: H2Protocol, client: H2Protocol) -> list[int]:
    """The server answers every request received; the ids the client saw end."""
    ended = []
    for event in server.receive_data(client.data_to_send()):
        if isinstance(event, RequestReceived):
            assert event.stream_id is not None
            server.send_headers(event.stream_id, [(b":status", b"200")], end_stream=True)
            server.stream_closed(event.stream_id)
    for event in client.receive_data(server.data_to_send()):
        if isinstance(event, StreamEnded):
            assert event.stream_id is not None
            client.stream_closed(event.stream_id)
            ended.append(event.stream_id)
    return ended


def test_open_streams_are_counted_without_scanning_and_stay_below_the_limit() -> None:
    client, server = handshake(max_streams=50)
    for _ in range(10):  # many rounds: closed streams are forgotten, the count stays exact
        ids = [open_stream(client) for _ in range(50)]
        assert client.open_outbound_streams == 50
        with pytest.raises(TooManyStreamsError):
            open_stream(client)
        assert sorted(answer(server, client)) == ids
        assert client.open_outbound_streams == 0
        assert len(client.streams) < 32
        assert server.open_inbound_streams == 0


def test_goaway_lets_streams_up_to_last_stream_id_finish() -> None:
    client, server = handshake()
    first = [open_stream(client) for _ in range(3)]
    received = [
        event.stream_id
        for event in server.receive_data(client.data_to_send())
        if isinstance(event, RequestReceived)
    ]
    assert received == first
    server.graceful_goaway(last_stream_id=first[-1])
    late = open_stream(client)  # crosses the GOAWAY on the wire
    events = client.receive_data(server.data_to_send())
    [goaway] = [event for event in events if isinstance(event, ConnectionTerminated)]
    assert goaway.last_stream_id == first[-1]
    assert goaway.error_code == ErrorCodes.NO_ERROR
    assert client.goaway_received is goaway
    # the server still answers the streams it accepted; the client still reads the answers
    server.receive_data(client.data_to_send())
    for stream_id in first:
        server.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
    server.reset_stream(late, ErrorCodes.REFUSED_STREAM)
    answered = [
        event.stream_id
        for event in client.receive_data(server.data_to_send())
        if isinstance(event, ResponseReceived)
    ]
    assert answered == first


def test_never_indexed_literals_are_the_bytes_hpack_writes() -> None:
    """``PlainEncoder`` writes a never-indexed header itself; hpack's encoder (fresh, no
    Huffman) gives the same bytes, for static-table names, new names, values of every length
    class and the static table's own pairs (which hpack sends as an index)."""
    rng = random.Random(3)
    names = [name for name, _ in HeaderTable.STATIC_TABLE] + [b"x-new", b"apns-id"]
    for _ in range(3000):
        name = rng.choice(names)
        value = b"v" * rng.choice([0, 1, 5, 126, 127, 128, 300, 20_000])
        if rng.random() < 0.1:
            value = rng.choice(HeaderTable.STATIC_TABLE)[1]
        header = NeverIndexedHeaderTuple(name, value)
        assert PlainEncoder()._never_indexed(header) == bytes(
            Encoder().encode([header], huffman=False)
        )
