"""The rules of RFC 6455 §5 a frame must keep, as a frame decoder checks them: what a header
alone can break (§5.2 reserved bits and opcodes, §5.1 masking, minimal lengths, §5.4
fragmentation, §5.5 control frames) and what a close frame's payload can (§5.5.1, §7.4).

Every broken rule is reported as a :class:`~tracer.wire.frame_model.ProtocolError`, never
raised: a tracer describes what the peer sent, it does not police it.
"""

from __future__ import annotations

from tracer.wire.codes import CONTROL_OPCODES_START, Opcode
from tracer.wire.frame_model import (
    CLOSE_CODES_VALID,
    MAX_CONTROL_PAYLOAD,
    RSV1,
    Frame,
    ProtocolError,
    is_valid_close_code,
)

OP_CONTINUATION = Opcode.CONTINUATION
OP_BINARY = Opcode.BINARY
OP_CLOSE = Opcode.CLOSE
OP_PONG = Opcode.PONG


class HeaderRules:
    """The header checks of :class:`~tracer.wire.frames.FrameDecoder`, which holds the state
    they read and move on: the side it decodes, the RSV bits agreed, whether a fragmented
    message is open, whether a close frame was seen."""

    __slots__ = ()
    _client_side: bool
    _rsv_allowed: int
    _fragmented: bool
    _closed: bool

    def _check_header(self, frame: Frame, len7: int) -> list[ProtocolError]:
        """Every rule of RFC 6455 §5 that a header alone can break.  Also moves the decoder's
        state on: whether a fragmented message is open (§5.4) and whether a close was seen."""
        errors: list[ProtocolError] = []
        if self._closed:
            errors.append(
                ProtocolError(
                    "frame-after-close", frame.offset, "no frame may follow a close frame"
                )
            )
        if frame.rsv:
            self._check_rsv(frame, errors)
        if frame.masked is not self._client_side:
            self._check_masking(frame, errors)
        if len7 >= 126:
            _check_length(frame, len7, errors)
        opcode = frame.opcode
        if opcode >= CONTROL_OPCODES_START:
            self._check_control(frame, errors)
        elif opcode <= OP_BINARY:
            self._check_sequence(frame, errors)
        else:
            errors.append(
                ProtocolError("reserved-opcode", frame.offset, f"opcode 0x{opcode:x} is reserved")
            )
        return errors

    def _check_masking(self, frame: Frame, errors: list[ProtocolError]) -> None:
        """A frame masked the wrong way for its side (§5.1)."""
        if self._client_side:
            errors.append(
                ProtocolError("unmasked-client-frame", frame.offset, "client frames MUST be masked")
            )
        else:
            errors.append(
                ProtocolError(
                    "masked-server-frame", frame.offset, "server frames MUST NOT be masked"
                )
            )

    def _check_sequence(self, frame: Frame, errors: list[ProtocolError]) -> None:
        """A data frame's place in its message (§5.4): a continuation continues a fragmented
        message, a text or binary frame starts a new one; moves the fragmentation state on."""
        if frame.opcode == OP_CONTINUATION:
            if not self._fragmented:
                errors.append(
                    ProtocolError(
                        "unexpected-continuation",
                        frame.offset,
                        "continuation frame without a fragmented message to continue",
                    )
                )
        elif self._fragmented:
            errors.append(
                ProtocolError(
                    "expected-continuation",
                    frame.offset,
                    f"{frame.opcode_name} frame inside a fragmented message",
                )
            )
        self._fragmented = not frame.fin

    def _check_rsv(self, frame: Frame, errors: list[ProtocolError]) -> None:
        """RSV bits need an extension (§5.2); RSV1 only on first frames of data (RFC 7692 §6.1)."""
        stray = frame.rsv & ~self._rsv_allowed
        if stray:
            errors.append(
                ProtocolError(
                    "rsv-without-extension",
                    frame.offset,
                    f"RSV bits 0b{stray:03b} set without an extension that defines them",
                )
            )
        if frame.rsv & self._rsv_allowed & RSV1:
            if frame.opcode >= CONTROL_OPCODES_START:
                errors.append(
                    ProtocolError(
                        "compressed-control-frame",
                        frame.offset,
                        "RSV1 (per-message compressed) set on a control frame",
                    )
                )
            elif frame.opcode == OP_CONTINUATION:
                errors.append(
                    ProtocolError(
                        "compressed-continuation",
                        frame.offset,
                        "RSV1 (per-message compressed) set on a continuation frame",
                    )
                )

    def _check_control(self, frame: Frame, errors: list[ProtocolError]) -> None:
        """Control frames (§5.5): at most 125 payload bytes, never fragmented, known opcodes."""
        offset = frame.offset
        if frame.opcode > OP_PONG:
            errors.append(
                ProtocolError("reserved-opcode", offset, f"opcode 0x{frame.opcode:x} is reserved")
            )
        if frame.payload_length > MAX_CONTROL_PAYLOAD:
            errors.append(
                ProtocolError(
                    "control-frame-too-long",
                    offset,
                    f"{frame.opcode_name} frame with {frame.payload_length} payload bytes "
                    f"(at most {MAX_CONTROL_PAYLOAD})",
                )
            )
        if not frame.fin:
            errors.append(
                ProtocolError(
                    "fragmented-control-frame",
                    offset,
                    f"{frame.opcode_name} frame with FIN clear: control frames MUST NOT be "
                    "fragmented",
                )
            )
        if frame.opcode == OP_CLOSE:
            self._closed = True


def parse_close(frame: Frame, payload: bytes, complete: bool) -> list[ProtocolError]:
    """Fill ``close_code``/``close_reason`` from an unmasked close payload (§5.5.1, §7.4).

    The payload is empty (no status code), or a 2-byte big-endian code followed by a reason in
    UTF-8 (§5.5.1: "the data MUST be UTF-8-encoded").  A 1-byte payload is malformed.
    ``complete`` is False when only the first 125 bytes of an oversized close frame were
    looked at; a reason cut in the middle of a character is then not reported as bad UTF-8.
    """
    errors: list[ProtocolError] = []
    payload_offset = frame.offset + frame.header_length
    if len(payload) == 0:
        return errors
    if len(payload) == 1:
        errors.append(
            ProtocolError(
                "bad-close-payload",
                payload_offset,
                "close payload of 1 byte: a status code takes 2",
            )
        )
        return errors
    code = (payload[0] << 8) | payload[1]
    frame.close_code = code
    if not is_valid_close_code(code):
        errors.append(
            ProtocolError(
                "invalid-close-code",
                payload_offset,
                f"close code {code} may not be sent (valid: {CLOSE_CODES_VALID})",
            )
        )
    raw = payload[2:]
    try:
        frame.close_reason = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        frame.close_reason = raw.decode("utf-8", errors="replace")
        if complete or exc.end < len(raw):
            errors.append(
                ProtocolError(
                    "invalid-utf8-close-reason",
                    payload_offset + 2 + exc.start,
                    f"close reason is not valid UTF-8 at byte {exc.start}: {exc.reason}",
                )
            )
    return errors


def _check_length(frame: Frame, len7: int, errors: list[ProtocolError]) -> None:
    """An extended payload length (§5.2): the shortest form that holds it, and a 64-bit one
    with its most significant bit 0."""
    length = frame.payload_length
    if len7 == 126:
        if length < 126:
            errors.append(
                ProtocolError(
                    "non-minimal-length", frame.offset, f"{length} bytes sent with a 16-bit length"
                )
            )
    elif length >> 63:
        errors.append(
            ProtocolError(
                "length-msb-set",
                frame.offset,
                "the most significant bit of a 64-bit length MUST be 0",
            )
        )
    elif length < 0x10000:
        errors.append(
            ProtocolError(
                "non-minimal-length", frame.offset, f"{length} bytes sent with a 64-bit length"
            )
        )
