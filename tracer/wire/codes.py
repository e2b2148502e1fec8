"""The numbers of RFC 6455 as enums: frame opcodes (§5.2, §11.8) and close codes (§7.4).

Named after wsproto's ``Opcode`` and ``CloseReason``: code that talks about a frame or a close
says ``Opcode.TEXT`` or ``CloseCode.GOING_AWAY`` rather than ``1`` or ``1001``, and a reader of
a trace can ask what a number means (:func:`close_code_meaning`).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "Opcode", "close_code_meaning"]


class Opcode(IntEnum):
    """The 4-bit opcode of a frame (RFC 6455 §5.2).  0x3-0x7 and 0xB-0xF are reserved."""

    CONTINUATION = 0x0
    """A later fragment of a fragmented message (§5.4)."""
    TEXT = 0x1
    """A text message: the payload is UTF-8 (§5.6)."""
    BINARY = 0x2
    """A binary message: the payload is opaque to the protocol (§5.6)."""
    CLOSE = 0x8
    """A control frame starting or answering the closing handshake (§5.5.1)."""
    PING = 0x9
    """A control frame asking the peer for a pong (§5.5.2)."""
    PONG = 0xA
    """A control frame answering a ping, or a one-way heartbeat (§5.5.3)."""

    @property
    def is_control(self) -> bool:
        """Control frames have the opcode's most significant bit set (§5.5)."""
        return self >= 0x8


class CloseCode(IntEnum):
    """Status codes of a close frame (RFC 6455 §7.4.1, with IANA's later 1012-1014)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    RESERVED = 1004
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

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS: dict[CloseCode, str] = {
    CloseCode.NORMAL_CLOSURE: "normal closure: the purpose of the connection has been fulfilled",
    CloseCode.GOING_AWAY: "going away: a server going down, or a browser leaving the page",
    CloseCode.PROTOCOL_ERROR: "the endpoint is terminating the connection due to a protocol error",
    CloseCode.UNSUPPORTED_DATA: "the endpoint received a type of data it cannot accept "
    "(e.g. binary data when it only understands text)",
    CloseCode.RESERVED: "reserved; its meaning might be defined in the future",
    CloseCode.NO_STATUS_RCVD: "no status code was present in the close frame "
    "(reported by an endpoint, never sent on the wire)",
    CloseCode.ABNORMAL_CLOSURE: "the connection was closed abnormally, without a close frame "
    "(reported by an endpoint, never sent on the wire)",
    CloseCode.INVALID_FRAME_PAYLOAD_DATA: "the endpoint received data inconsistent with the "
    "message type (e.g. non-UTF-8 data in a text message)",
    CloseCode.POLICY_VIOLATION: "the endpoint received a message that violates its policy",
    CloseCode.MESSAGE_TOO_BIG: "the endpoint received a message too big for it to process",
    CloseCode.MANDATORY_EXTENSION: "the client expected the server to negotiate an extension, "
    "and the server did not",
    CloseCode.INTERNAL_ERROR: "the server met an unexpected condition that prevented it from "
    "fulfilling the request",
    CloseCode.SERVICE_RESTART: "the service is restarting (IANA registry)",
    CloseCode.TRY_AGAIN_LATER: "the service is overloaded: try again later (IANA registry)",
    CloseCode.BAD_GATEWAY: "a gateway or proxy received an invalid response upstream "
    "(IANA registry)",
    CloseCode.TLS_HANDSHAKE: "the TLS handshake failed "
    "(reported by an endpoint, never sent on the wire)",
}


def close_code_meaning(code: int) -> str:
    """What a close code means, including the ranges RFC 6455 §7.4.2 sets aside."""
    try:
        return CloseCode(code).meaning
    except ValueError:
        pass
    if 3000 <= code <= 3999:
        return "registered with IANA for libraries, frameworks and applications (§7.4.2)"
    if 4000 <= code <= 4999:
        return "private use: its meaning is agreed between the application's endpoints (§7.4.2)"
    if 1016 <= code <= 2999:
        return "reserved for future extensions of the protocol (§7.4.2); invalid today"
    return "not a valid close code (§7.4.2: codes below 1000 are not used)"
