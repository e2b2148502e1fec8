"""RFC 6455 frame decoding: the §5.7 examples, chunking, close payloads, every error kind."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from tracer.wire import frames as frames_module
from tracer.wire.frames import (
    Frame,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    is_valid_close_code,
    unmask,
)

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

Item = Frame | ProtocolError

# --- helpers ---------------------------------------------------------------------------------


def decode(
    data: bytes, *, client_side: bool, chunks: list[int] | None = None, **options: int
) -> tuple[list[Item], FrameDecoder]:
    """Decode ``data`` split at the given cut points, then signal the end of the stream."""
    decoder = FrameDecoder(client_side=client_side, **options)
    items: list[Item] = []
    cuts = [0, *(chunks or []), len(data)]
    for start, end in itertools.pairwise(cuts):
        items.extend(decoder.feed(data[start:end]))
    assert decoder.bytes_fed == len(data)
    items.extend(decoder.eof())
    return items, decoder


def frames_of(items: list[Item]) -> list[Frame]:
    return [item for item in items if isinstance(item, Frame)]


def errors_of(items: list[Item]) -> list[ProtocolError]:
    return [item for item in items if isinstance(item, ProtocolError)]


def kinds(items: list[Item]) -> list[str]:
    return [error.kind for error in errors_of(items)]


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


PAYLOAD_256 = bytes(range(256))
PAYLOAD_64K = os.urandom(65536)

# --- RFC 6455 §5.7 examples ---------------------------------------------------------------------


def test_rfc_single_frame_unmasked_text() -> None:
    items, decoder = decode(bytes.fromhex("810548656c6c6f"), client_side=False, preview_bytes=16)
    assert items == [
        Frame(
            fin=True,
            rsv=0,
            opcode=0x1,
            masked=False,
            masking_key=None,
            payload_length=5,
            header_length=2,
            offset=0,
            preview=b"Hello",
        )
    ]
    assert items[0].opcode_name == "text"
    assert not decoder.in_frame


def test_rfc_single_frame_masked_text() -> None:
    items, _ = decode(bytes.fromhex("818537fa213d7f9f4d5158"), client_side=True, preview_bytes=16)
    (frame,) = items
    assert isinstance(frame, Frame)
    assert (frame.fin, frame.rsv, frame.opcode, frame.opcode_name) == (True, 0, 1, "text")
    assert frame.masked is True
    assert frame.masking_key is not None and frame.masking_key.hex() == "37fa213d"
    assert (frame.payload_length, frame.header_length, frame.offset) == (5, 6, 0)
    assert frame.preview == b"Hello"
    assert frame.close_code is None and frame.close_reason is None


def test_rfc_fragmented_unmasked_text() -> None:
    data = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
    items, _ = decode(data, client_side=False, preview_bytes=8)
    assert items == [
        Frame(False, 0, 0x1, False, None, 3, 2, 0, preview=b"Hel"),
        Frame(True, 0, 0x0, False, None, 2, 2, 5, preview=b"lo"),
    ]
    assert [frame.opcode_name for frame in frames_of(items)] == ["text", "continuation"]


def test_rfc_unmasked_ping_and_masked_pong() -> None:
    ping, _ = decode(bytes.fromhex("890548656c6c6f"), client_side=False, preview_bytes=8)
    assert ping == [Frame(True, 0, 0x9, False, None, 5, 2, 0, preview=b"Hello")]
    assert ping[0].opcode_name == "ping"
    pong, _ = decode(bytes.fromhex("8a8537fa213d7f9f4d5158"), client_side=True, preview_bytes=8)
    assert pong == [Frame(True, 0, 0xA, True, bytes.fromhex("37fa213d"), 5, 6, 0, preview=b"Hello")]
    assert pong[0].opcode_name == "pong"


def test_rfc_256_bytes_binary_16_bit_length() -> None:
    data = bytes.fromhex("827e0100") + PAYLOAD_256
    items, decoder = decode(data, client_side=False)
    assert items == [Frame(True, 0, 0x2, False, None, 256, 4, 0)]
    assert items[0].opcode_name == "binary"
    assert decoder.bytes_fed == 260


def test_rfc_64k_binary_64_bit_length() -> None:
    data = bytes.fromhex("827f0000000000010000") + PAYLOAD_64K
    items, _ = decode(data, client_side=False)
    assert items == [Frame(True, 0, 0x2, False, None, 65536, 10, 0)]


def test_rfc_examples_on_the_wrong_side_are_errors() -> None:
    """The unmasked examples are server frames: read as client frames, each is reported."""
    items, _ = decode(bytes.fromhex("810548656c6c6f"), client_side=True)
    assert [type(item) for item in items] == [Frame, ProtocolError]
    assert items[1] == ProtocolError("unmasked-client-frame", 0, items[1].detail)
    items, _ = decode(bytes.fromhex("818537fa213d7f9f4d5158"), client_side=False)
    assert kinds(items) == ["masked-server-frame"]
    assert frames_of(items)[0].payload_length == 5


# --- chunking ---------------------------------------------------------------------------------


def server_stream() -> bytes:
    """§5.7 frames plus a fragmented message with a ping inside it and a close frame."""
    return b"".join(
        [
            bytes.fromhex("810548656c6c6f"),
            bytes.fromhex("010348656c"),
            bytes.fromhex("890548656c6c6f"),
            bytes.fromhex("80026c6f"),
            bytes.fromhex("8a0548656c6c6f"),
            bytes.fromhex("827e0100") + PAYLOAD_256,
            encode_frame(0x2, b"", fin=False),
            encode_frame(0x0, b"x" * 130, fin=False),
            encode_frame(0x9, b""),
            encode_frame(0x0, b"yz", fin=True),
            encode_frame(0x8, close_payload(1001, "going away, ¡adiós!")),
        ]
    )


def client_stream() -> bytes:
    """The same sequence as a client sends it: every frame masked with its own key."""
    keys = iter(bytes([i, 0x5A, 0xA5, 255 - i]) for i in range(100))
    return b"".join(
        [
            bytes.fromhex("818537fa213d7f9f4d5158"),
            encode_frame(0x1, b"Hel", fin=False, mask=next(keys)),
            encode_frame(0x9, b"Hello", mask=next(keys)),
            encode_frame(0x0, b"lo", mask=next(keys)),
            bytes.fromhex("8a8537fa213d7f9f4d5158"),
            encode_frame(0x2, PAYLOAD_256, mask=next(keys)),
            encode_frame(0x2, b"", fin=False, mask=next(keys)),
            encode_frame(0x0, b"x" * 130, fin=False, mask=next(keys)),
            encode_frame(0x9, b"", mask=next(keys)),
            encode_frame(0x0, b"yz", mask=next(keys)),
            encode_frame(0x8, close_payload(1000, "bye"), mask=next(keys)),
        ]
    )


STREAMS = [
    pytest.param(server_stream(), False, 0, id="server"),
    pytest.param(server_stream(), False, 4, id="server-preview"),
    pytest.param(client_stream(), True, 0, id="client"),
    pytest.param(client_stream(), True, 200, id="client-preview"),
]


@pytest.mark.parametrize(("data", "client_side", "preview"), STREAMS)
def test_whole_stream_is_valid(data: bytes, client_side: bool, preview: int) -> None:
    items, _ = decode(data, client_side=client_side, preview_bytes=preview)
    assert errors_of(items) == []
    frames = frames_of(items)
    assert len(frames) == 11
    assert [f.opcode for f in frames] == [1, 1, 9, 0, 10, 2, 2, 0, 9, 0, 8]
    # Frames tile the stream: each starts where the previous one ended.
    assert frames[0].offset == 0
    for before, after in itertools.pairwise(frames):
        assert after.offset == before.end_offset
    assert frames[-1].end_offset == len(data)
    assert frames[-1].close_code in (1000, 1001)


@pytest.mark.parametrize(("data", "client_side", "preview"), STREAMS)
def test_every_split_point_gives_the_same_frames(
    data: bytes, client_side: bool, preview: int
) -> None:
    whole, _ = decode(data, client_side=client_side, preview_bytes=preview)
    for cut in range(len(data) + 1):
        split, decoder = decode(data, client_side=client_side, preview_bytes=preview, chunks=[cut])
        assert split == whole, f"split at {cut}"
        assert not decoder.in_frame


@pytest.mark.parametrize(("data", "client_side", "preview"), STREAMS)
def test_byte_by_byte_gives_the_same_frames(data: bytes, client_side: bool, preview: int) -> None:
    whole, _ = decode(data, client_side=client_side, preview_bytes=preview)
    decoder = FrameDecoder(client_side=client_side, preview_bytes=preview)
    items: list[Item] = []
    for i in range(len(data)):
        items.extend(decoder.feed(data[i : i + 1]))
        assert decoder.bytes_fed == i + 1
    assert decoder.feed(b"") == []
    assert decoder.eof() == []
    assert items == whole


def test_every_two_split_points_of_a_small_stream() -> None:
    data = bytes.fromhex("010348656c") + encode_frame(0x8, close_payload(1000, "ok"))
    data += bytes.fromhex("80026c6f")
    whole, _ = decode(data, client_side=False)
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 1):
            assert decode(data, client_side=False, chunks=[a, b])[0] == whole


@pytest.mark.parametrize("cut", [1, 2, 5, 9, 10, 11, 1000, 65545, 65546])
def test_64k_frame_split_across_header_and_payload(cut: int) -> None:
    data = bytes.fromhex("827f0000000000010000") + PAYLOAD_64K + bytes.fromhex("8900")
    items, _ = decode(data, client_side=False, chunks=[cut])
    assert items == [
        Frame(True, 0, 0x2, False, None, 65536, 10, 0),
        Frame(True, 0, 0x9, False, None, 0, 2, 65546),
    ]


def test_frame_reported_when_header_completes_without_inspection() -> None:
    """The hot path: no payload needed, so the frame comes out before its payload arrives."""
    decoder = FrameDecoder(client_side=False)
    assert decoder.feed(bytes.fromhex("827e01")) == []
    assert decoder.in_frame
    (frame,) = decoder.feed(b"\x00")
    assert isinstance(frame, Frame) and frame.payload_length == 256
    assert decoder.in_frame  # 256 payload bytes still to come
    assert decoder.feed(PAYLOAD_256[:200]) == []
    assert decoder.feed(PAYLOAD_256[200:] + b"\x89") == []
    assert decoder.feed(b"\x00") == [Frame(True, 0, 0x9, False, None, 0, 2, 260)]
    assert not decoder.in_frame
    assert decoder.bytes_fed == 262


def test_close_frame_waits_for_its_payload() -> None:
    data = encode_frame(0x8, close_payload(1001, "bye"), mask=b"\x01\x02\x03\x04")
    decoder = FrameDecoder(client_side=True)
    assert decoder.feed(data[:7]) == []
    assert decoder.in_frame
    (frame,) = decoder.feed(data[7:])
    assert isinstance(frame, Frame)
    assert (frame.close_code, frame.close_reason) == (1001, "bye")
    assert not decoder.in_frame


def test_preview_frame_reported_once_its_first_bytes_arrive() -> None:
    data = encode_frame(0x2, bytes(range(100)), mask=b"\x00\xff\x00\xff")
    decoder = FrameDecoder(client_side=True, preview_bytes=4)
    assert decoder.feed(data[: 6 + 3]) == []
    (frame,) = decoder.feed(data[9:10])
    assert isinstance(frame, Frame) and frame.preview == bytes(range(4))
    assert decoder.in_frame
    assert decoder.feed(data[10:]) == []
    assert not decoder.in_frame


def test_preview_is_bounded_and_unmasked() -> None:
    payload = bytes(range(200))
    data = encode_frame(0x2, payload, mask=b"\xde\xad\xbe\xef")
    items, _ = decode(data, client_side=True, preview_bytes=10, chunks=[8, 9, 13])
    (frame,) = items
    assert isinstance(frame, Frame) and frame.preview == payload[:10]
    (empty,) = decode(encode_frame(0x1, b"", mask=b"abcd"), client_side=True, preview_bytes=10)[0]
    assert isinstance(empty, Frame) and empty.preview == b""
    (nothing,) = decode(data, client_side=True)[0]
    assert isinstance(nothing, Frame) and nothing.preview is None


def test_cross_check_with_websockets_encoder() -> None:
    """An independent encoder (the websockets library, random masks) decodes the same way."""
    cases = [
        WsFrame(Opcode.TEXT, "¡Hola!".encode(), fin=False),
        WsFrame(Opcode.PING, b"p"),
        WsFrame(Opcode.CONT, b"x" * 126, fin=False),
        WsFrame(Opcode.CONT, b"y" * 65536),
        WsFrame(Opcode.BINARY, b"z" * 65535),
        WsFrame(Opcode.CLOSE, close_payload(4000, "app-defined")),
    ]
    for mask in (True, False):
        data = b"".join(case.serialize(mask=mask) for case in cases)
        items, _ = decode(
            data, client_side=mask, preview_bytes=16, rsv_allowed=0b100, chunks=[3, 100, 70000]
        )
        assert errors_of(items) == []
        frames = frames_of(items)
        for case, frame in zip(cases, frames, strict=True):
            assert frame.opcode == case.opcode.value
            assert frame.fin == case.fin
            assert frame.rsv == (0b100 if case.rsv1 else 0)
            assert frame.payload_length == len(case.data)
            assert frame.masked is mask
            assert frame.preview == case.data[:16]
        assert (frames[-1].close_code, frames[-1].close_reason) == (4000, "app-defined")


# --- close payloads -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code", "reason", "error"),
    [
        (b"", None, None, None),
        (close_payload(1000), 1000, "", None),
        (close_payload(1001, "bye"), 1001, "bye", None),
        (close_payload(1011, "überfüllt 🙈"), 1011, "überfüllt 🙈", None),
        (close_payload(1012, "restart"), 1012, "restart", None),
        (close_payload(3000), 3000, "", None),
        (close_payload(4999, "x" * 123), 4999, "x" * 123, None),
        (b"\x03", None, None, "bad-close-payload"),
        (b"\x03\xe8\xff\xfe", 1000, "\ufffd\ufffd", "invalid-utf8-close-reason"),
        (b"\x03\xe8ok\xc3", 1000, "ok\ufffd", "invalid-utf8-close-reason"),
        (close_payload(999), 999, "", "invalid-close-code"),
        (close_payload(1004), 1004, "", "invalid-close-code"),
        (close_payload(1005), 1005, "", "invalid-close-code"),
        (close_payload(1006), 1006, "", "invalid-close-code"),
        (close_payload(1015), 1015, "", "invalid-close-code"),
        (close_payload(2999), 2999, "", "invalid-close-code"),
        (close_payload(5000), 5000, "", "invalid-close-code"),
        (close_payload(0), 0, "", "invalid-close-code"),
    ],
)
@pytest.mark.parametrize("client_side", [True, False])
def test_close_payload(
    payload: bytes, code: int | None, reason: str | None, error: str | None, client_side: bool
) -> None:
    mask = b"\x10\x20\x30\x40" if client_side else None
    data = encode_frame(0x8, payload, mask=mask)
    for cut in range(len(data) + 1):
        items, _ = decode(data, client_side=client_side, chunks=[cut])
        frame = items[0]
        assert isinstance(frame, Frame)
        assert (frame.close_code, frame.close_reason) == (code, reason)
        assert kinds(items) == ([error] if error else [])


def test_invalid_utf8_offset_points_at_the_bad_byte() -> None:
    data = encode_frame(0x8, b"\x03\xe8abc\xff")
    items, _ = decode(data, client_side=False)
    (error,) = errors_of(items)
    assert error.kind == "invalid-utf8-close-reason"
    assert error.offset == 2 + 2 + 3  # header, code, "abc"


def test_valid_close_code_ranges() -> None:
    valid = [code for code in range(0, 6000) if is_valid_close_code(code)]
    expected = [*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)]
    assert valid == expected


def test_oversized_close_frame_is_reported_and_bounded() -> None:
    payload = close_payload(1000, "é" * 200)  # 402 bytes: far over the 125-byte limit
    data = encode_frame(0x8, payload) + encode_frame(0x9, b"")
    items, _ = decode(data, client_side=False, chunks=[50])
    assert kinds(items) == ["control-frame-too-long", "frame-after-close"]
    close = frames_of(items)[0]
    assert close.close_code == 1000
    # Only the first 125 bytes were looked at; the character cut at the limit is not an error.
    assert close.close_reason is not None and close.close_reason.startswith("é" * 61)
    assert frames_of(items)[1].offset == len(data) - 2


# --- protocol errors: each kind, and decoding continues ---------------------------------------

KEY = b"\x01\x02\x03\x04"
TEXT = encode_frame(0x1, b"hi")
MASKED_TEXT = encode_frame(0x1, b"hi", mask=KEY)


ERROR_CASES = [
    ("reserved-opcode", encode_frame(0x3, b"abc"), {}),
    ("reserved-opcode", encode_frame(0xB, b"abc"), {}),
    ("control-frame-too-long", encode_frame(0x9, b"p" * 126), {}),
    ("fragmented-control-frame", encode_frame(0xA, b"p", fin=False), {}),
    ("masked-server-frame", encode_frame(0x1, b"hi", mask=KEY), {}),
    ("non-minimal-length", bytes.fromhex("827e0005") + b"12345", {}),
    ("non-minimal-length", bytes.fromhex("827f000000000000ffff") + b"x" * 0xFFFF, {}),
    ("unexpected-continuation", encode_frame(0x0, b"lo"), {}),
    ("expected-continuation", encode_frame(0x1, b"a", fin=False) + TEXT, {}),
    ("bad-close-payload", encode_frame(0x8, b"\x03"), {}),
    ("invalid-utf8-close-reason", encode_frame(0x8, b"\x03\xe8\xc0\xaf"), {}),
    ("invalid-close-code", encode_frame(0x8, close_payload(1006)), {}),
    ("rsv-without-extension", encode_frame(0x1, b"hi", rsv=0b100), {}),
    ("rsv-without-extension", encode_frame(0x1, b"hi", rsv=0b011), {"rsv_allowed": 0b100}),
    ("compressed-control-frame", encode_frame(0x9, b"", rsv=0b100), {"rsv_allowed": 0b100}),
    (
        "compressed-continuation",
        encode_frame(0x1, b"a", fin=False, rsv=0b100) + encode_frame(0x0, b"b", rsv=0b100),
        {"rsv_allowed": 0b100},
    ),
    ("frame-after-close", encode_frame(0x8, b"") + encode_frame(0x8, b""), {}),
]


@pytest.mark.parametrize(
    ("kind", "data", "options"), ERROR_CASES, ids=[case[0] for case in ERROR_CASES]
)
def test_protocol_error_is_reported_and_decoding_continues(
    kind: str, data: bytes, options: dict[str, int]
) -> None:
    # A valid ping follows (after a close frame, it is itself reported: frame-after-close).
    trailer = encode_frame(0x9, b"after")
    items, decoder = decode(data + trailer, client_side=False, **options)
    assert kind in kinds(items)
    last = frames_of(items)[-1]
    assert last.opcode == 0x9 and last.offset == len(data) and last.payload_length == 5
    assert not decoder.in_frame
    # The same bytes in every split give the same records.
    for cut in range(0, min(len(data), 40)):
        assert decode(data + trailer, client_side=False, chunks=[cut], **options)[0] == items


def test_unmasked_client_frame() -> None:
    items, _ = decode(TEXT + MASKED_TEXT, client_side=True)
    assert items[1] == ProtocolError("unmasked-client-frame", 0, items[1].detail)
    assert frames_of(items)[1].offset == len(TEXT)
    assert len(items) == 3


def test_errors_follow_their_frame() -> None:
    data = TEXT + encode_frame(0x9, b"p" * 126, fin=False) + TEXT
    items, _ = decode(data, client_side=False)
    assert [type(item).__name__ for item in items] == [
        "Frame",
        "Frame",
        "ProtocolError",
        "ProtocolError",
        "Frame",
    ]
    assert {error.offset for error in errors_of(items)} == {len(TEXT)}


def test_length_msb_set_is_reported_and_decoding_goes_on() -> None:
    data = bytes.fromhex("82ff") + b"\x80" + b"\x00" * 7 + KEY + b"payload"
    decoder = FrameDecoder(client_side=True)
    items = decoder.feed(data)
    frame = items[0]
    assert isinstance(frame, Frame) and frame.payload_length == 1 << 63
    assert kinds(items) == ["length-msb-set"]
    assert decoder.feed(b"more bytes: all payload now") == []
    assert decoder.in_frame
    (truncated,) = decoder.eof()
    assert truncated.kind == "truncated"


def test_truncated_in_header() -> None:
    decoder = FrameDecoder(client_side=False)
    decoder.feed(TEXT + bytes.fromhex("827f0000"))
    assert decoder.in_frame
    (error,) = decoder.eof()
    assert error.kind == "truncated" and error.offset == len(TEXT)
    assert "6 missing" in error.detail
    assert decoder.eof() == []
    assert not decoder.in_frame


def test_truncated_after_one_byte() -> None:
    decoder = FrameDecoder(client_side=False)
    decoder.feed(b"\x81")
    (error,) = decoder.eof()
    assert error == ProtocolError("truncated", 0, error.detail)
    assert "at least 1 missing" in error.detail


def test_truncated_in_skipped_payload() -> None:
    decoder = FrameDecoder(client_side=False)
    assert len(decoder.feed(bytes.fromhex("827e0100") + b"x" * 56)) == 1
    (error,) = decoder.eof()
    assert error == ProtocolError("truncated", 0, error.detail)
    assert "56 of 256 bytes received, 200 missing" in error.detail


def test_truncated_in_inspected_payload_returns_header_errors_too() -> None:
    decoder = FrameDecoder(client_side=True)
    data = encode_frame(0x8, close_payload(1000, "bye"))  # unmasked: wrong for a client
    assert decoder.feed(data[:4]) == []
    errors = decoder.eof()
    assert [error.kind for error in errors] == ["unmasked-client-frame", "truncated"]
    assert errors[1].offset == 0 and "3 missing" in errors[1].detail
    assert not decoder.in_frame


def test_reserved_opcode_names() -> None:
    items, _ = decode(encode_frame(0x3, b"") + encode_frame(0xF, b""), client_side=False)
    assert [frame.opcode_name for frame in frames_of(items)] == ["reserved-0x3", "reserved-0xf"]
    assert [frame.is_control for frame in frames_of(items)] == [False, True]


def test_permessage_deflate_rsv1_allowed() -> None:
    data = encode_frame(0x1, b"compressed", rsv=0b100) + encode_frame(0x2, b"x", rsv=0b100)
    items, _ = decode(data, client_side=False, rsv_allowed=0b100)
    assert errors_of(items) == []
    assert [frame.rsv for frame in frames_of(items)] == [0b100, 0b100]


# --- encoder and unmasking ---------------------------------------------------------------------


def test_encode_frame_matches_rfc_examples() -> None:
    assert encode_frame(0x1, b"Hello") == bytes.fromhex("810548656c6c6f")
    masked = encode_frame(0x1, b"Hello", mask=bytes.fromhex("37fa213d"))
    assert masked == bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(0x1, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert encode_frame(0x2, PAYLOAD_256)[:4] == bytes.fromhex("827e0100")
    assert encode_frame(0x2, PAYLOAD_64K)[:10] == bytes.fromhex("827f0000000000010000")
    assert encode_frame(0x2, b"x" * 125)[:2] == bytes.fromhex("827d")
    assert encode_frame(0x2, b"x" * 65535)[:4] == bytes.fromhex("827effff")
    assert encode_frame(0x1, b"", rsv=0b101)[0] == 0xD1


@pytest.mark.parametrize(
    "kwargs",
    [{"opcode": 16}, {"opcode": -1}, {"rsv": 8}, {"mask": b"abc"}],
)
def test_encode_frame_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"opcode": 1, "payload": b"", **kwargs}
    with pytest.raises(ValueError):
        encode_frame(**arguments)  # type: ignore[arg-type]


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_matches_the_rfc_definition(data: bytes, key: bytes) -> None:
    expected = bytes(byte ^ key[i % 4] for i, byte in enumerate(data))
    assert unmask(data, key) == expected
    assert unmask(expected, key) == data


# --- property-based ------------------------------------------------------------------------------

DATA_OPCODES = st.sampled_from([0x1, 0x2])
CONTROL_OPCODES = st.sampled_from([0x9, 0xA])
SIZES = st.one_of(
    st.integers(0, 140),
    st.sampled_from([125, 126, 127, 255, 256, 1000, 65535, 65536]),
)
VALID_CODES = st.one_of(st.integers(1000, 1003), st.integers(1007, 1014), st.integers(3000, 4999))


@st.composite
def frame_specs(draw: st.DrawFn) -> list[tuple[int, bool, int, bytes]]:
    """A legal frame sequence: (opcode, fin, rsv, payload) per frame, maybe ending in a close."""
    specs: list[tuple[int, bool, int, bytes]] = []
    budget = 140_000  # total payload bytes, to keep each example fast
    for _ in range(draw(st.integers(0, 6))):
        fragments = draw(st.integers(1, 4))
        opcode = draw(DATA_OPCODES)
        for index in range(fragments):
            size = min(draw(SIZES), budget)
            budget -= size
            specs.append((opcode if index == 0 else 0x0, index == fragments - 1, 0, b"\xa5" * size))
            if draw(st.booleans()):
                payload = draw(st.binary(max_size=125))
                specs.append((draw(CONTROL_OPCODES), True, 0, payload))
    if draw(st.booleans()):
        payload = b""
        if draw(st.booleans()):
            reason = draw(st.text(max_size=40)).encode()[:123]
            reason = reason.decode("utf-8", errors="ignore").encode()
            payload = draw(VALID_CODES).to_bytes(2, "big") + reason
        specs.append((0x8, True, 0, payload))
    return specs


@st.composite
def cut_points(draw: st.DrawFn, length: int) -> list[int]:
    cuts = draw(st.lists(st.integers(0, length), max_size=12))
    return sorted(cuts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=frame_specs(),
    client_side=st.booleans(),
    preview=st.sampled_from([0, 3, 200]),
    data=st.data(),
)
def test_random_valid_sequences_round_trip(
    specs: list[tuple[int, bool, int, bytes]], client_side: bool, preview: int, data: st.DataObject
) -> None:
    stream = b""
    expected: list[Frame] = []
    for opcode, fin, rsv, payload in specs:
        key = data.draw(st.binary(min_size=4, max_size=4)) if client_side else None
        encoded = encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=key)
        header_length = len(encoded) - len(payload)
        frame = Frame(fin, rsv, opcode, client_side, key, len(payload), header_length, len(stream))
        if opcode == 0x8 and len(payload) >= 2:
            frame.close_code = int.from_bytes(payload[:2], "big")
            frame.close_reason = payload[2:].decode()
        if preview:
            frame.preview = payload[:preview]
        expected.append(frame)
        stream += encoded
    cuts = data.draw(cut_points(len(stream)))
    items, decoder = decode(stream, client_side=client_side, preview_bytes=preview, chunks=cuts)
    assert items == expected
    assert not decoder.in_frame


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=frame_specs(), client_side=st.booleans(), data=st.data())
def test_one_frame_per_chunk_decodes_as_the_whole_stream(
    specs: list[tuple[int, bool, int, bytes]], client_side: bool, data: st.DataObject
) -> None:
    """A chunk holding exactly one short frame is decoded on the decoder's shortest path: the
    frames it finds, and the fragmentation state it leaves, are the general path's."""
    chunks = []
    for opcode, fin, rsv, payload in specs:
        key = data.draw(st.binary(min_size=4, max_size=4)) if client_side else None
        chunks.append(encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=key))
    whole, _ = decode(b"".join(chunks), client_side=client_side)
    decoder = FrameDecoder(client_side=client_side)
    assert [item for chunk in chunks for item in decoder.feed(chunk)] == whole


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(
        st.tuples(st.integers(0, 255), st.booleans(), st.integers(0, 125)), max_size=8
    ),
    client_side=st.booleans(),
)
def test_one_short_frame_per_chunk_breaks_the_same_rules_as_the_whole_stream(
    headers: list[tuple[int, bool, int]], client_side: bool
) -> None:
    """Short frames with any first byte (any FIN, RSV bits, opcode), masked or not, one per
    chunk: every rule the general path applies, the shortest path applies too (or leaves the
    frame to it), so the frames and errors are the same as for the stream fed whole."""
    chunks = [
        bytes([first, (0x80 if masked else 0) | length])
        + (b"\x01\x02\x03\x04" if masked else b"")
        + b"\x00" * length
        for first, masked, length in headers
    ]
    whole, _ = decode(b"".join(chunks), client_side=client_side)
    decoder = FrameDecoder(client_side=client_side)
    assert [item for chunk in chunks for item in decoder.feed(chunk)] == whole


@settings(max_examples=300, deadline=None)
@given(
    stream=st.binary(max_size=400),
    client_side=st.booleans(),
    preview=st.sampled_from([0, 5]),
    rsv_allowed=st.sampled_from([0, 0b100, 0b111]),
    data=st.data(),
)
def test_random_bytes_never_raise_and_account_for_every_byte(
    stream: bytes, client_side: bool, preview: int, rsv_allowed: int, data: st.DataObject
) -> None:
    cuts = data.draw(cut_points(len(stream)))
    items, _ = decode(
        stream, client_side=client_side, preview_bytes=preview, rsv_allowed=rsv_allowed, chunks=cuts
    )
    whole, _ = decode(
        stream, client_side=client_side, preview_bytes=preview, rsv_allowed=rsv_allowed
    )
    assert items == whole
    frames = frames_of(items)
    truncated = [error for error in errors_of(items) if error.kind == "truncated"]
    assert len(truncated) <= 1
    # Frames tile the stream from offset 0; the last one either ends it or is truncated.
    position = 0
    for frame in frames:
        assert frame.offset == position
        assert 2 <= frame.header_length <= 14
        position = frame.end_offset
    if truncated:
        # Either the stream ends inside the last frame's payload, or in a header after it.
        assert truncated[0].offset in (position, frames[-1].offset if frames else 0)
    else:
        assert position == len(stream)
    for error in errors_of(items):
        assert 0 <= error.offset <= len(stream)
        assert error.kind in KNOWN_KINDS


KNOWN_KINDS = {
    "reserved-opcode",
    "control-frame-too-long",
    "fragmented-control-frame",
    "unmasked-client-frame",
    "masked-server-frame",
    "non-minimal-length",
    "length-msb-set",
    "unexpected-continuation",
    "expected-continuation",
    "bad-close-payload",
    "invalid-utf8-close-reason",
    "invalid-close-code",
    "rsv-without-extension",
    "compressed-control-frame",
    "compressed-continuation",
    "frame-after-close",
    "truncated",
}


@pytest.mark.parametrize("size", [0, 125, 126, 127, 65535, 65536, 65537, 200_000])
@pytest.mark.parametrize("client_side", [True, False])
def test_length_encoding_boundaries(size: int, client_side: bool) -> None:
    key = b"\xff\x00\xff\x00" if client_side else None
    data = encode_frame(0x2, b"\x00" * size, mask=key)
    expected_header = (2 if size < 126 else 4 if size < 65536 else 10) + (4 if key else 0)
    for cut in (1, 2, 3, 4, expected_header, expected_header + 1, len(data) - 1):
        items, _ = decode(data, client_side=client_side, chunks=[min(cut, len(data))])
        assert items == [Frame(True, 0, 0x2, client_side, key, size, expected_header, 0)]


@example(size=65536)
@given(size=st.integers(0, 70_000))
@settings(max_examples=30, deadline=None)
def test_single_binary_frame_any_size(size: int) -> None:
    data = encode_frame(0x2, b"\x00" * size)
    items, _ = decode(data, client_side=False, chunks=[size // 2])
    (frame,) = items
    assert isinstance(frame, Frame) and frame.payload_length == size
    assert frame.end_offset == len(data)


def test_module_has_no_io_or_telemetry_imports() -> None:
    source = Path(frames_module.__file__).read_text(encoding="utf-8")
    for name in ("asyncio", "opentelemetry", "socket"):
        assert f"import {name}" not in source
