"""Steps 10-13 of the walkthrough: the first frame decoded bit by bit, the message delivered
to the app, the broadcast, and the closing handshake."""

from __future__ import annotations

from typing import Any

from tracer import vocab
from tracer.analysis import fmt
from tracer.analysis.explain import prose
from tracer.analysis.explain.framebits import (
    LENGTH_16,
    HeaderBits,
    bits,
    masked_payload,
    read_header,
)
from tracer.analysis.explain.model import Block, Para, RfcRef, Step, Table, Val
from tracer.analysis.explain.reading import (
    Spans,
    attr,
    code_ref,
    code_refs,
    facts,
    first_data_frame,
    frame_header_bytes,
    frames_named,
    integer,
    message_of,
    ms,
    preview_bytes,
)
from tracer.export.records import SpanRecord
from tracer.wire.codes import Opcode, close_code_meaning, opcode_name

PAYLOAD_BYTES_SHOWN = 16
"""Masked/unmasked payload bytes shown in the frame step (the XOR is worked for the first 4)."""


def first_two_bytes(h: HeaderBits) -> list[Table]:
    """Byte 0 (FIN, RSV1-3, opcode) and byte 1 (MASK, 7-bit length), bit by bit."""
    opcode = f"{bits(h.opcode, 4)} = 0x{h.opcode:x}"
    byte0 = Table(
        ["bits of byte 0", "field", "value", "meaning"],
        [
            ["7", "FIN", Val(h.fin), prose.fin(h.fin)],
            ["6", "RSV1", Val(h.rsv1), prose.rsv1(h.rsv1)],
            ["5", "RSV2", Val(h.rsv2), "reserved: 0 unless an extension defines it"],
            ["4", "RSV3", Val(h.rsv3), "reserved: 0 unless an extension defines it"],
            ["3-0", "opcode", Val(opcode), prose.opcode(opcode_name(h.opcode))],
        ],
    )
    length_meaning = (
        "the payload length itself (0-125)"
        if h.length7 < LENGTH_16
        else f"{h.length7}: the length follows in {len(h.extended)} bytes"
    )
    length = Val(f"{bits(h.length7, 7)} = {h.length7}")
    byte1 = Table(
        ["bits of byte 1", "field", "value", "meaning"],
        [
            ["7", "MASK", Val(h.mask), prose.mask(h.mask)],
            ["6-0", "payload length (7 bits)", length, length_meaning],
        ],
    )
    return [byte0, byte1]


def remaining_header(h: HeaderBits) -> Table:
    """The extended payload length and the masking key, with their byte positions."""
    rows: list[list[Any]] = []
    position = 2
    if h.extended:
        end = position + len(h.extended) - 1
        value = Val(f"{h.extended.hex(' ')} = {h.payload_length}")
        rows.append([f"{position}-{end}", "extended payload length", value, "big-endian (§5.2)"])
        position = end + 1
    else:
        rows.append(["-", "extended payload length", Val("none"), "the 7-bit length was enough"])
    if h.mask:
        key = Val(h.masking_key.hex(" "))
        rows.append([f"{position}-{position + 3}", "masking key", key, prose.MASKING_KEY])
    else:
        rows.append(["-", "masking key", Val("none"), "MASK is 0: server frames are not masked"])
    return Table(["bytes", "field", "value", "meaning"], rows)


def frame_tables(header: bytes, a: dict[str, Any]) -> list[Block]:
    h = read_header(header)
    shown = Para(
        [
            "The header on the wire, rebuilt from the recorded fields: ",
            Val(header.hex(" ")),
            f" ({len(header)} bytes; byte 0 = ",
            Val(bits(header[0], 8)),
            ", byte 1 = ",
            Val(bits(header[1], 8)),
            ").",
        ]
    )
    return [
        shown,
        *first_two_bytes(h),
        remaining_header(h),
        *payload_blocks(h.masking_key, a, h.rsv1),
    ]


def payload_blocks(key: bytes, a: dict[str, Any], compressed: int) -> list[Block]:
    unmasked = preview_bytes(a)
    if unmasked is None:
        return [Para([prose.NO_PAYLOAD])]
    shown = unmasked[:PAYLOAD_BYTES_SHOWN]
    masked = masked_payload(shown, key)
    rows: list[list[Any]] = []
    for i in range(min(4, len(shown))):
        k = key[i % 4] if key else 0
        char = chr(shown[i]) if 32 <= shown[i] < 127 else "·"
        rows.append(
            [
                str(i),
                Val(f"{masked[i]:08b} ({masked[i]:02x})"),
                Val(f"{k:08b} ({k:02x})"),
                Val(f"{shown[i]:08b} ({shown[i]:02x}) {char!r}"),
            ]
        )
    blocks: list[Block] = [
        facts(
            ("masked payload on the wire (first bytes)", masked.hex(" ")),
            ("unmasked payload (first bytes)", shown.hex(" ")),
            ("as text", shown.decode("utf-8", "replace")),
        ),
        Para([prose.XOR_INTRO]),
        Table(["payload byte", "masked (wire)", "XOR key byte", "= unmasked"], rows),
    ]
    if compressed:
        blocks.append(Para([prose.COMPRESSED_PAYLOAD]))
    return blocks


def step_frame(s: Spans) -> Step:
    frame = first_data_frame(s)
    ref = code_ref(frame) if isinstance(frame, SpanRecord) else None
    step = Step(
        10,
        "first-frame",
        "The first frame received, bit by bit",
        [
            RfcRef("RFC 6455", "5.2", "Base Framing Protocol"),
            RfcRef("RFC 6455", "5.3", "Client-to-Server Masking"),
        ],
        prose.FRAME,
        [ref] if ref else [],
        frame.duration_ns if isinstance(frame, SpanRecord) else None,
        "decoding took",
    )
    if frame is None:
        step.missing = "no frame received in this trace (frames recorded with --frames off?)"
        return step
    a = frame.attributes
    header = frame_header_bytes(a)
    step.blocks = [
        facts(
            ("FIN", a.get(vocab.WS_FIN)),
            ("RSV", a.get(vocab.WS_RSV)),
            ("opcode", f"{a.get(vocab.WS_OPCODE)} ({a.get(vocab.WS_OPCODE_NAME)})"),
            ("MASK", a.get(vocab.WS_MASK)),
            ("payload length", a.get(vocab.WS_PAYLOAD_LENGTH)),
            ("header length", a.get(vocab.WS_HEADER_LENGTH)),
            ("masking key", a.get(vocab.WS_MASKING_KEY)),
        )
    ]
    if header is not None:
        step.blocks.extend(frame_tables(header, a))
    return step


def step_message(s: Spans) -> Step:
    message = message_of(s, first_data_frame(s))
    step = Step(
        11,
        "message",
        "The message delivered to the app",
        [
            RfcRef("RFC 6455", "6.2", "Receiving Data"),
            RfcRef("ASGI", "", "Receive - receive event"),
        ],
        prose.MESSAGE,
        code_refs(message),
        None if message is None else message.duration_ns,
        "first frame in → the app ready for the next message:",
    )
    if message is None:
        step.missing = "the client sent no data message on this connection"
        return step
    a = message.attributes
    step.blocks = [
        facts(
            ("message type", a.get(vocab.WS_MESSAGE_TYPE)),
            ("size (bytes)", a.get(vocab.WS_MESSAGE_SIZE)),
            ("frames", a.get(vocab.WS_MESSAGE_FRAMES)),
            ("first frame in → receive() returned it", ms(a.get(vocab.DELIVERED_NS))),
            ("of which queue wait", ms(a.get(vocab.QUEUE_WAIT_NS))),
            (
                "handler time (until the app asked for the next message)",
                ms(a.get(vocab.HANDLER_NS)),
            ),
        ),
        Para([prose.QUEUE_VS_HANDLER]),
    ]
    return step


def step_broadcast(s: Spans) -> Step:
    message = message_of(s, first_data_frame(s))
    broadcast = (s.first(vocab.WS_BROADCAST, within=message) if message else None) or s.first(
        vocab.WS_BROADCAST
    )
    sends = (
        []
        if broadcast is None
        else [c for c in s.traces.children(broadcast) if c.name == vocab.WS_MESSAGE_SEND]
    )
    step = Step(
        12,
        "broadcast",
        "The broadcast and its recipients",
        [RfcRef("RFC 6455", "6.1", "Sending Data"), RfcRef("RFC 6455", "5.1", "Overview")],
        prose.BROADCAST,
        code_refs(*sends[:1]),
        None if broadcast is None else broadcast.duration_ns,
        "fan-out took",
    )
    if broadcast is None:
        step.missing = "this connection's messages caused no broadcast"
        return step
    rows = []
    for i, send in enumerate(sends, start=1):
        recipient = s.traces.recipient(send)
        frames = [f for f, _ in s.traces.walk(send) if f.name == vocab.WS_FRAME_SEND]
        rows.append(
            [
                str(i),
                Val(recipient.label if recipient else attr(send, vocab.CONNECTION_ID, "?")),
                Val(attr(send, vocab.WS_MESSAGE_SIZE, "?")),
                Val(len(frames) or attr(send, vocab.WS_MESSAGE_FRAMES, "?")),
                Val(fmt.duration(send.duration_ns)),
            ]
        )
    step.blocks = [
        facts(
            ("recipients", attr(broadcast, vocab.BROADCAST_RECIPIENTS)),
            ("detected", attr(broadcast, vocab.BROADCAST_DETECTED)),
        ),
        Table(["#", "recipient", "bytes", "frames", "send took"], rows),
    ]
    return step


def step_close(s: Spans) -> Step:
    close = s.first(vocab.WS_CLOSE)
    frames = [
        (name, f)
        for name in (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND)
        for _, f in frames_named(s, name)
        if integer(f.attributes.get(vocab.WS_OPCODE)) == Opcode.CLOSE
    ]
    step = Step(
        13,
        "close",
        "The closing handshake",
        [
            RfcRef("RFC 6455", "5.5.1", "Close"),
            RfcRef("RFC 6455", "7.1.2", "Start the WebSocket Closing Handshake"),
            RfcRef("RFC 6455", "7.4.1", "Defined Status Codes"),
        ],
        prose.CLOSE,
        code_refs(close),
        None if close is None else close.duration_ns,
    )
    if close is None:
        step.missing = "no ws.close span: the trace ended before the connection did"
        return step
    code = integer(attr(close, vocab.WS_CLOSE_CODE))
    rows = [
        [
            "client → server" if name == vocab.WS_FRAME_RECEIVE else "server → client",
            Val(f.attributes.get(vocab.WS_CLOSE_CODE, "(no code)")),
            Val(f.attributes.get(vocab.WS_CLOSE_REASON, "")),
            Val(f.attributes.get(vocab.WS_PAYLOAD_LENGTH, "?")),
        ]
        for name, f in frames
    ]
    step.blocks = [
        facts(
            ("who closed", attr(close, vocab.WS_CLOSE_INITIATOR)),
            ("code", code),
            ("what the code means", None if code is None else close_code_meaning(code)),
            ("reason", attr(close, vocab.WS_CLOSE_REASON) or "(empty)"),
        )
    ]
    if rows:
        step.blocks.append(Table(["close frame", "code", "reason", "payload bytes"], rows))
    return step
