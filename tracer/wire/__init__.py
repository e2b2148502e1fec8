"""Layer 1: sans-I/O wire decoders, in the style of h11 and wsproto.

Pure, incremental state machines fed bytes in whatever chunks the transport delivers; no
asyncio, no I/O, no OpenTelemetry.  They never raise on bad input: a protocol violation is
returned as a :class:`ProtocolError` record, and decoding goes on where it can.

- :mod:`tracer.wire.http`: the HTTP/1.1 request and response heads of the opening handshake.
- :mod:`tracer.wire.handshake`: ``Sec-WebSocket-Key`` / ``Sec-WebSocket-Accept`` (RFC 6455 §4).
- :mod:`tracer.wire.frames`: RFC 6455 §5 frames, in both directions: the decoder's state
  machine; what a frame is (:mod:`tracer.wire.frame_model`) and the rules it must keep
  (:mod:`tracer.wire.frame_rules`) live beside it.
- :mod:`tracer.wire.codes`: the ``Opcode`` and ``CloseCode`` enums (§5.2, §7.4).
"""

from __future__ import annotations

from tracer.wire.codes import CloseCode, Opcode, close_code_meaning, opcode_name
from tracer.wire.frames import (
    MAX_CONTROL_PAYLOAD,
    Frame,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    is_valid_close_code,
    unmask,
)
from tracer.wire.handshake import GUID, accept_key, check_accept, validate_client_key
from tracer.wire.http import (
    RequestHead,
    RequestHeadDecoder,
    ResponseHead,
    ResponseHeadDecoder,
    is_websocket_upgrade,
    request_target,
)

__all__ = [
    "GUID",
    "MAX_CONTROL_PAYLOAD",
    "CloseCode",
    "Frame",
    "FrameDecoder",
    "Opcode",
    "ProtocolError",
    "RequestHead",
    "RequestHeadDecoder",
    "ResponseHead",
    "ResponseHeadDecoder",
    "accept_key",
    "check_accept",
    "close_code_meaning",
    "encode_frame",
    "is_valid_close_code",
    "is_websocket_upgrade",
    "opcode_name",
    "request_target",
    "unmask",
    "validate_client_key",
]
