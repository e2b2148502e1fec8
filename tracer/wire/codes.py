"""The numbers RFC 6455 gives names to: frame opcodes and close status codes.

In the style of wsproto's ``Opcode`` and ``CloseReason``: an ``IntEnum`` compares equal to
the integer on the wire, so decoders keep working with plain ints while the code that reads
them says what they mean.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "Opcode", "close_code_meaning", "opcode_name"]


class Opcode(IntEnum):
    """RFC 6455 §5.2 and §11.8.  0x3-0x7 are reserved data opcodes, 0xB-0xF reserved control
    opcodes: a frame carrying one is a protocol error (§5.2 "MUST _Fail the WebSocket
    Connection_")."""

    CONTINUATION = 0x0
    """Continues a fragmented message (§5.4)."""
    TEXT = 0x1
    """A data frame whose message is UTF-8 text."""
    BINARY = 0x2
    """A data frame whose message is arbitrary bytes."""
    CLOSE = 0x8
    """Starts or answers the closing handshake (§5.5.1)."""
    PING = 0x9
    """A keep-alive or liveness probe; the peer must answer with a pong (§5.5.2)."""
    PONG = 0xA
    """The answer to a ping, carrying the ping's payload (§5.5.3)."""

    @property
    def wire_name(self) -> str:
        """Wireshark's name for it: ``text``, ``binary``, ``continuation``, ``close``…"""
        return self.name.lower()

    @property
    def is_control(self) -> bool:
        """Control frames (§5.5) have the opcode's most significant bit set."""
        return self >= CONTROL_OPCODES_START


CONTROL_OPCODES_START = 0x8
"""Opcodes 0x8-0xF are control frames (§5.5): never fragmented, at most 125 payload bytes."""


class CloseCode(IntEnum):
    """Status codes of a close frame (RFC 6455 §7.4.1, and IANA's registry for 1012-1015).

    1005, 1006 and 1015 are never sent on the wire: they are what an endpoint *reports* when a
    close frame had no code, when the connection dropped without one, or when TLS failed.
    """

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_FRAME_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


_MEANINGS = {
    CloseCode.NORMAL_CLOSURE: "normal closure: the purpose of the connection was fulfilled",
    CloseCode.GOING_AWAY: "going away: a server going down or a browser leaving the page",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.UNSUPPORTED_DATA: "unsupported data: a type of message the endpoint cannot accept",
    CloseCode.NO_STATUS_RCVD: "no status code was present (reported, never sent)",
    CloseCode.ABNORMAL_CLOSURE: "abnormal closure: no close frame at all (reported, never sent)",
    CloseCode.INVALID_FRAME_PAYLOAD_DATA: "data inconsistent with its type, e.g. bad UTF-8",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big to process",
    CloseCode.MANDATORY_EXTENSION: "the client needed an extension the server did not offer",
    CloseCode.INTERNAL_ERROR: "internal error: an unexpected condition on the server",
    CloseCode.SERVICE_RESTART: "service restart",
    CloseCode.TRY_AGAIN_LATER: "try again later",
    CloseCode.BAD_GATEWAY: "bad gateway",
    CloseCode.TLS_HANDSHAKE: "TLS handshake failure (reported, never sent)",
}


_OPCODE_NAMES: dict[int, str] = {int(opcode): opcode.wire_name for opcode in Opcode}
"""Every defined opcode's wire name, looked up by plain int: this runs for every frame spanned,
and building an enum member from an int each time costs more than the rest of the name."""


def opcode_name(opcode: int) -> str:
    """Wireshark's name for any 4-bit opcode, ``reserved-0xN`` for the reserved ones."""
    name = _OPCODE_NAMES.get(opcode)
    return name if name is not None else f"reserved-0x{opcode:x}"


def close_code_meaning(code: int) -> str:
    """What a close code means (§7.4), including the ranges kept for libraries and apps."""
    try:
        return _MEANINGS[CloseCode(code)]
    except ValueError:
        pass
    if 3000 <= code <= 3999:
        return "registered for libraries, frameworks and applications (§7.4.2)"
    if 4000 <= code <= 4999:
        return "private use by the application (§7.4.2)"
    return "not a defined close code"
