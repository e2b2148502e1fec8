"""A frame header rebuilt from its recorded fields and read back bit by bit (RFC 6455 §5.2).

A trace records a frame the way Wireshark shows it (FIN, RSV, opcode, MASK, payload length,
masking key, header length), not its bytes.  Those fields determine the header exactly, since a
conforming sender uses the shortest length encoding (§5.2: "the minimal number of bytes MUST be
used"), so the header is rebuilt with :func:`tracer.wire.frames.encode_frame` and then decoded
again by the small steps below, the way a student would do it on paper:

    byte 0:  FIN | RSV1 | RSV2 | RSV3 | opcode (4 bits)
    byte 1:  MASK | payload length (7 bits: 0-125, or 126 / 127 for a longer length)
    then:    2 or 8 bytes of extended payload length (network byte order), if any
    then:    4 bytes of masking key, if MASK is set
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer.wire.frames import encode_frame, unmask

LENGTH_16 = 126
"""7-bit length value announcing a 16-bit extended payload length."""
LENGTH_64 = 127
"""7-bit length value announcing a 64-bit extended payload length."""


@dataclass(frozen=True)
class HeaderBits:
    """The fields read back from header bytes."""

    header: bytes
    fin: int
    rsv1: int
    rsv2: int
    rsv3: int
    opcode: int
    mask: int
    length7: int
    extended: bytes
    payload_length: int
    masking_key: bytes

    @property
    def rsv(self) -> int:
        return self.rsv1 << 2 | self.rsv2 << 1 | self.rsv3


def rebuild_header(
    *, fin: bool, rsv: int, opcode: int, masking_key: bytes | None, payload_length: int
) -> bytes:
    """The header bytes a sender using the minimal length encoding put on the wire."""
    frame = encode_frame(opcode, bytes(payload_length), fin=fin, rsv=rsv, mask=masking_key)
    return frame[: len(frame) - payload_length]


def read_header(header: bytes) -> HeaderBits:
    """Decode header bytes field by field, as §5.2 lays them out."""
    byte0, byte1 = header[0], header[1]
    fin = byte0 >> 7 & 1
    rsv1, rsv2, rsv3 = byte0 >> 6 & 1, byte0 >> 5 & 1, byte0 >> 4 & 1
    opcode = byte0 & 0x0F
    mask = byte1 >> 7 & 1
    length7 = byte1 & 0x7F
    position = 2
    if length7 == LENGTH_16:
        extended = header[2:4]
    elif length7 == LENGTH_64:
        extended = header[2:10]
    else:
        extended = b""
    position += len(extended)
    payload_length = int.from_bytes(extended, "big") if extended else length7
    masking_key = header[position : position + 4] if mask else b""
    return HeaderBits(
        header=header,
        fin=fin,
        rsv1=rsv1,
        rsv2=rsv2,
        rsv3=rsv3,
        opcode=opcode,
        mask=mask,
        length7=length7,
        extended=extended,
        payload_length=payload_length,
        masking_key=masking_key,
    )


def masked_payload(unmasked: bytes, masking_key: bytes) -> bytes:
    """What was on the wire for a payload: masking is XOR with the key repeated (§5.3)."""
    return unmask(unmasked, masking_key) if masking_key else unmasked


def bits(value: int, width: int) -> str:
    return format(value, f"0{width}b")


__all__ = ["HeaderBits", "bits", "masked_payload", "read_header", "rebuild_header"]
