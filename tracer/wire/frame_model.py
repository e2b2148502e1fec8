"""What a frame is: the fields of one RFC 6455 §5.2 header as they appeared on the wire, the
in-band record of bad bytes, and the small pure operations on them (masking, close codes, a
reference encoder).  :mod:`tracer.wire.frames` decodes streams into these.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from tracer.wire.codes import CONTROL_OPCODES_START, opcode_name

MAX_CONTROL_PAYLOAD = 125
"""RFC 6455 §5.5: all control frames MUST have a payload length of 125 bytes or less."""

RSV1 = 0b100
"""The RSV1 bit in :attr:`Frame.rsv`, which permessage-deflate uses as "Per-Message Compressed"."""

CLOSE_CODES_VALID = "1000-1003, 1007-1014, 3000-4999"
"""Close codes allowed on the wire (RFC 6455 §7.4.1-§7.4.2 plus IANA's 1012-1014)."""


@dataclass(slots=True, frozen=True)
class ProtocolError:
    """Bad bytes seen on the wire, reported in-band instead of raised.

    ``kind`` is a short, stable machine word (e.g. ``"reserved-opcode"``), suitable as a span
    attribute value; ``offset`` is the stream offset (bytes fed before it) where the problem was
    detected -- the first byte of the frame for problems in a frame header; ``detail`` is a human
    sentence.  The HTTP head decoders in :mod:`tracer.wire.http` reuse this type.
    """

    kind: str
    offset: int
    detail: str = ""


class Frame(msgspec.Struct):
    """One frame header as it appeared on the wire, with the fields Wireshark shows.

    ``rsv`` is the 3-bit value ``RSV1<<2 | RSV2<<1 | RSV3`` (Wireshark's ``websocket.rsv``).
    ``header_length`` counts the whole header: 2 bytes, plus 2 or 8 bytes of extended payload
    length, plus 4 bytes of masking key.  ``offset`` is the stream offset of the frame's first
    byte, so the frame occupies ``[offset, offset + header_length + payload_length)``.

    ``close_code``/``close_reason`` are filled for close frames with a payload of at least 2
    bytes.  ``preview`` holds the first bytes of the payload, unmasked, only when the decoder was
    built with ``preview_bytes > 0``.

    A msgspec struct, made in C: a server decodes one for every frame each way.
    """

    fin: bool
    rsv: int
    opcode: int
    masked: bool
    masking_key: bytes | None
    payload_length: int
    header_length: int
    offset: int
    close_code: int | None = None
    close_reason: str | None = None
    preview: bytes | None = None

    @property
    def opcode_name(self) -> str:
        """Wireshark's name: ``text``, ``binary``, ``continuation``, ``close``, ``ping``, ``pong``,
        or ``reserved-0xN`` for the reserved opcodes 0x3-0x7 and 0xB-0xF."""
        return opcode_name(self.opcode)

    @property
    def is_control(self) -> bool:
        """Control frames (§5.5) have the opcode's most significant bit set: 0x8-0xF."""
        return self.opcode >= CONTROL_OPCODES_START

    @property
    def end_offset(self) -> int:
        """Stream offset just past the frame's last payload byte (where the next frame starts)."""
        return self.offset + self.header_length + self.payload_length


def unmask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte masking ``key`` repeated (RFC 6455 §5.3).

    Masking and unmasking are the same operation.  Done on whole integers rather than byte by
    byte: the payload and the repeated key become two big integers, XORed once.
    """
    n = len(data)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (RFC 6455 §7.4.1-§7.4.2, IANA registry).

    1000-1003 and 1007-1011 are defined by the RFC, 1012-1014 were registered with IANA later
    (service restart, try again later, bad gateway).  1004 is reserved; 1005 (no status), 1006
    (abnormal closure) and 1015 (TLS failure) are for reporting by an endpoint and MUST NOT be
    sent.  3000-3999 are for libraries and frameworks (IANA-registered), 4000-4999 for private
    use.  Everything else (0-999, 1016-2999, 5000+) is invalid.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
) -> bytes:
    """Serialize one frame with the minimal payload length encoding (RFC 6455 §5.2).

    ``mask`` is the 4-byte masking key for a client frame (``None`` for a server frame).  This
    is the reference encoder used by tests and benchmarks; it checks its own arguments (and
    raises ``ValueError`` on misuse) but not protocol rules, so it can build bad frames on
    purpose, e.g. a fragmented ping.
    """
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode must fit in 4 bits, got {opcode}")
    if not 0 <= rsv <= 0b111:
        raise ValueError(f"rsv must fit in 3 bits, got {rsv}")
    if mask is not None and len(mask) != 4:
        raise ValueError(f"masking key must be 4 bytes, got {len(mask)}")
    head = bytearray()
    head.append((0x80 if fin else 0) | (rsv << 4) | opcode)
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 0x10000:
        head.append(mask_bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += n.to_bytes(8, "big")
    if mask is not None:
        head += mask
        payload = unmask(bytes(payload), mask)
    return bytes(head) + bytes(payload)
