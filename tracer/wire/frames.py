"""Sans-I/O decoder for RFC 6455 WebSocket frames, fed bytes in arbitrary chunks.

The base framing protocol (RFC 6455 §5.2) puts a 2 to 14 byte header in front of every
payload::

      0                   1                   2                   3
      0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
     +-+-+-+-+-------+-+-------------+-------------------------------+
     |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
     |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
     |N|V|V|V|       |S|             |   (if payload len==126/127)   |
     | |1|2|3|       |K|             |                               |
     +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
     |     Extended payload length continued, if payload len == 127  |
     + - - - - - - - - - - - - - - - +-------------------------------+
     |                               |Masking-key, if MASK set to 1  |
     +-------------------------------+-------------------------------+
     | Masking-key (continued)       |          Payload Data         |
     +-------------------------------- - - - - - - - - - - - - - - - +

- **FIN** marks the last frame of a message.  A message sent in one frame has FIN set; a
  fragmented message (§5.4) is a text or binary frame with FIN clear, then zero or more
  continuation frames (opcode 0x0) with FIN clear, then a continuation frame with FIN set.
  Control frames may be interleaved between the fragments, but never fragmented themselves.
- **RSV1-3** must be 0 unless an extension negotiated in the handshake gives them a meaning;
  permessage-deflate (RFC 7692 §6) uses RSV1 on the first frame of a compressed message.
- **opcode** (§5.2, §11.8): 0x0 continuation, 0x1 text, 0x2 binary, 0x8 close, 0x9 ping,
  0xA pong.  0x3-0x7 are reserved data opcodes, 0xB-0xF reserved control opcodes.
- **Payload len** uses the *minimal* of three encodings (§5.2): 0-125 in the 7 bits; 126
  then a 16-bit big-endian length for 126-65535; 127 then a 64-bit length (most significant
  bit 0) for anything larger.
- **MASK** (§5.3): every frame a client sends is masked with a fresh 4-byte key, XORed over
  the payload (``payload[i] ^ key[i % 4]``); frames a server sends are never masked.
- **Control frames** (§5.5) carry at most 125 payload bytes.  A close frame's payload (§5.5.1)
  is empty, or a 2-byte big-endian status code (§7.4) optionally followed by a UTF-8 reason.

:class:`FrameDecoder` follows one direction of one connection.  It is built for the hot path:
a frame is reported as soon as its header is complete, and its payload is skipped by
arithmetic, without copying.  Only when the payload must be looked at (a close frame's code and
reason, or a preview when the decoder was built with ``preview_bytes``) does the decoder wait for
those bytes, and then only for the ones it needs.  Problems are never raised: they are reported
in-band as :class:`ProtocolError` records, and decoding carries on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tracer.wire.codes import CONTROL_OPCODES_START, Opcode, opcode_name

__all__ = [
    "CLOSE_CODES_VALID",
    "MAX_CONTROL_PAYLOAD",
    "Frame",
    "FrameDecoder",
    "ProtocolError",
    "encode_frame",
    "is_valid_close_code",
    "unmask",
]

OP_CONTINUATION = Opcode.CONTINUATION
OP_TEXT = Opcode.TEXT
OP_BINARY = Opcode.BINARY
OP_CLOSE = Opcode.CLOSE
OP_PING = Opcode.PING
OP_PONG = Opcode.PONG

MAX_CONTROL_PAYLOAD = 125
"""RFC 6455 §5.5: all control frames MUST have a payload length of 125 bytes or less."""

RSV1 = 0b100
"""The RSV1 bit in :attr:`Frame.rsv`, which permessage-deflate uses as "Per-Message Compressed"."""

CLOSE_CODES_VALID = "1000-1003, 1007-1014, 3000-4999"
"""Close codes allowed on the wire (RFC 6455 §7.4.1-§7.4.2 plus IANA's 1012-1014)."""

_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_u64 = struct.Struct("!Q").unpack_from

_DATA_START = (OP_TEXT, OP_BINARY)
_PING_PONG = (OP_PING, OP_PONG)

_MAX_HEADER = 14
_NO_ERRORS: tuple[()] = ()
"""A frame decoder's pending errors while no frame is pending (no list per idle decoder)."""
"""2 bytes + 8 bytes of 64-bit extended length + 4 bytes of masking key."""


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


@dataclass(slots=True)
class Frame:
    """One frame header as it appeared on the wire, with the fields Wireshark shows.

    ``rsv`` is the 3-bit value ``RSV1<<2 | RSV2<<1 | RSV3`` (Wireshark's ``websocket.rsv``).
    ``header_length`` counts the whole header: 2 bytes, plus 2 or 8 bytes of extended payload
    length, plus 4 bytes of masking key.  ``offset`` is the stream offset of the frame's first
    byte, so the frame occupies ``[offset, offset + header_length + payload_length)``.

    ``close_code``/``close_reason`` are filled for close frames with a payload of at least 2
    bytes.  ``preview`` holds the first bytes of the payload, unmasked, only when the decoder was
    built with ``preview_bytes > 0``.
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


class FrameDecoder:
    """Incremental decoder for the frames of one direction of one WebSocket connection.

    ``client_side=True`` decodes the frames **sent by the client** (the bytes a server reads),
    which MUST be masked (§5.1); ``client_side=False`` decodes the frames sent by the server,
    which MUST NOT be.  ``rsv_allowed`` is the bitmask of RSV bits an extension agreed in the
    handshake gives a meaning (``0b100`` for permessage-deflate's RSV1).  ``preview_bytes > 0``
    makes every frame carry its first ``preview_bytes`` payload bytes, unmasked.

    Feed it every chunk, in order, with :meth:`feed`; call :meth:`eof` when the stream ends.
    It never raises on bad input: protocol violations come out as :class:`ProtocolError` records
    in the same list as the frames, right after the frame they concern, and decoding continues.
    """

    __slots__ = (
        "_client_side",
        "_closed",
        "_collected",
        "_fed",
        "_fragmented",
        "_hbuf",
        "_hstart",
        "_need",
        "_pending",
        "_pending_errors",
        "_preview",
        "_rsv_allowed",
        "_skip",
        "_skipping",
    )

    def __init__(self, *, client_side: bool, preview_bytes: int = 0, rsv_allowed: int = 0) -> None:
        self._client_side = bool(client_side)
        self._preview = max(0, int(preview_bytes))
        self._rsv_allowed = rsv_allowed & 0b111
        self._fed = 0
        self._skip = 0  # payload bytes still to pass over, for a frame already reported
        self._skipping: Frame | None = None  # the frame whose payload is being skipped
        # Made when first needed: every open connection has two decoders, mostly idle.
        self._hbuf: bytearray | None = None  # an incomplete header carried over to the next chunk
        self._hstart = 0  # stream offset of the frame whose header is in _hbuf
        self._pending: Frame | None = None  # a frame waiting for payload bytes to inspect
        self._pending_errors: list[ProtocolError] | tuple[()] = _NO_ERRORS
        self._need = 0  # payload bytes the pending frame waits for
        self._collected: bytearray | None = None  # payload bytes gathered for _pending
        self._fragmented = False  # inside a fragmented data message (§5.4)
        self._closed = False  # a close frame was seen (§5.5.1: nothing may follow)

    # --- public surface -------------------------------------------------------------------------

    @property
    def bytes_fed(self) -> int:
        """Total bytes fed so far: the stream offset of the next byte."""
        return self._fed

    @property
    def in_frame(self) -> bool:
        """Whether the stream currently stops in the middle of a frame (header or payload)."""
        return bool(self._hbuf) or self._pending is not None or self._skip > 0

    def feed(self, data: bytes) -> list[Frame | ProtocolError]:
        """Decode ``data``, the next chunk of the stream (any size, split anywhere, maybe empty).

        Returns the frames completed by this chunk, in stream order, each followed by the
        protocol errors found in it.  A frame counts as complete once its header is (its payload
        is then skipped), except a close frame, which waits for its code and reason, and any
        frame when previews are on, which waits for its first ``preview_bytes`` payload bytes.
        """
        out: list[Frame | ProtocolError] = []
        n = len(data)
        base = self._fed
        self._fed = base + n
        pos = 0
        if self._skip or self._pending is not None or self._hbuf:
            pos = self._resume(data, out)
        # The hot loop: one iteration per frame header found in this chunk.  The header parse
        # is inlined (see _parse_header for the commented version) and a frame that breaks no
        # rule and needs no payload inspection takes the shortest path.
        client_side = self._client_side
        inspect = self._preview > 0
        while pos < n:
            if n - pos < 2:
                self._stash(data, pos, base)
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            len7 = b1 & 0x7F
            hl = 2 if len7 < 126 else 4 if len7 == 126 else 10
            masked = b1 >= 0x80
            if masked:
                hl += 4
            if n - pos < hl:
                self._stash(data, pos, base)
                break
            if len7 < 126:
                length = len7
                ok = True
            elif len7 == 126:
                length = _unpack_u16(data, pos + 2)[0]
                ok = length >= 126
            else:
                length = _unpack_u64(data, pos + 2)[0]
                ok = 0x10000 <= length < 0x8000000000000000
            key = bytes(data[pos + hl - 4 : pos + hl]) if masked else None
            opcode = b0 & 0x0F
            frame = Frame(
                b0 >= 0x80, (b0 >> 4) & 0b111, opcode, masked, key, length, hl, base + pos
            )
            # Fast path: text/binary/continuation/ping/pong with RSV 0, the right masking, a
            # minimal length, in a legal place in the fragmentation sequence, before any close.
            if (
                ok
                and masked is client_side
                and not self._closed
                and (
                    (b0 & 0x70 == 0 and opcode in _DATA_START and not self._fragmented)
                    or (b0 & 0x70 == 0 and opcode == OP_CONTINUATION and self._fragmented)
                    or (b0 & 0xF0 == 0x80 and opcode in _PING_PONG and length <= 125)
                )
            ):
                if opcode < CONTROL_OPCODES_START:
                    self._fragmented = b0 < 0x80
                if not inspect:
                    out.append(frame)
                    pos += hl + length
                    if pos > n:
                        self._skip = pos - n
                        self._skipping = frame
                        break
                    continue
                errors: list[ProtocolError] = []
            else:
                errors = self._check_header(frame, len7)
            pos += hl
            if self._arrange_payload(frame, errors, out):
                if pos >= n:
                    break
                pos = self._collect(data, pos, out)
                if self._pending is not None:
                    break
            skip = self._skip
            if skip:
                if skip >= n - pos:
                    self._skip = skip - (n - pos)
                    break
                pos += skip
                self._skip = 0
        return out

    def _resume(self, data: bytes, out: list[Frame | ProtocolError]) -> int:
        """Finish what the previous chunk left open; return the position of the next header.

        Three things can be pending at a chunk boundary: payload bytes to skip, payload bytes to
        collect for a frame being inspected, or a header split across chunks.  Returns
        ``len(data)`` if the chunk was consumed before a new header could start.
        """
        n = len(data)
        pos = 0
        while pos < n:
            if self._skip:
                skip = self._skip
                if skip >= n - pos:
                    self._skip = skip - (n - pos)
                    return n
                pos += skip
                self._skip = 0
            elif self._pending is not None:
                pos = self._collect(data, pos, out)
            elif self._hbuf:
                pos = self._resume_header(data, pos, out)
            else:
                break
        return pos

    def _stash(self, data: bytes, pos: int, base: int) -> None:
        """Keep an incomplete header (at most 13 bytes) for the next chunk."""
        if self._hbuf is None:
            self._hbuf = bytearray()
        self._hbuf += data[pos:]
        self._hstart = base + pos

    def eof(self) -> list[ProtocolError]:
        """The stream ended.  Report ``truncated`` if it stopped in the middle of a frame.

        A close frame (or, with previews on, any frame) whose header arrived but whose inspected
        payload bytes did not is not reported as a frame; the errors already found in its header
        are returned here, followed by ``truncated``.  Calling it again returns ``[]``.
        """
        errors: list[ProtocolError] = []
        if self._hbuf:
            have = len(self._hbuf)
            need = _header_length(self._hbuf)
            missing = f"{need - have}" if need else "at least 1"
            errors.append(
                ProtocolError(
                    "truncated",
                    self._hstart,
                    f"stream ended in a frame header: {have} bytes received, {missing} missing",
                )
            )
            self._hbuf.clear()
        elif self._pending is not None:
            frame = self._pending
            got = len(self._collected or b"")
            errors.extend(self._pending_errors)
            errors.append(
                ProtocolError(
                    "truncated",
                    frame.offset,
                    f"stream ended in the payload of a {frame.opcode_name} frame: "
                    f"{got} of {frame.payload_length} bytes received, "
                    f"{frame.payload_length - got} missing",
                )
            )
            self._pending = None
            self._pending_errors = _NO_ERRORS
            self._collected = None
        elif self._skip:
            frame = self._skipping
            assert frame is not None
            errors.append(
                ProtocolError(
                    "truncated",
                    frame.offset,
                    f"stream ended in the payload of a {frame.opcode_name} frame: "
                    f"{frame.payload_length - self._skip} of {frame.payload_length} bytes "
                    f"received, {self._skip} missing",
                )
            )
            self._skip = 0
            self._skipping = None
        return errors

    # --- internals ------------------------------------------------------------------------------

    def _resume_header(self, data: bytes, pos: int, out: list[Frame | ProtocolError]) -> int:
        """Complete a header split across chunks; return the position after what was used."""
        hbuf = self._hbuf
        assert hbuf is not None
        had = len(hbuf)
        hbuf += data[pos : pos + _MAX_HEADER - had]
        header = _parse_header(hbuf, 0, len(hbuf))
        if header is None:
            # Everything available was taken and the header is still incomplete.
            return len(data)
        hl = header[3]
        used = hl - had
        start = self._hstart
        hbuf.clear()
        b0, b1, length, _, key = header
        frame = Frame(b0 >= 0x80, (b0 >> 4) & 0b111, b0 & 0x0F, b1 >= 0x80, key, length, hl, start)
        errors = self._check_header(frame, b1 & 0x7F)
        self._arrange_payload(frame, errors, out)
        return pos + used

    def _arrange_payload(
        self, frame: Frame, errors: list[ProtocolError], out: list[Frame | ProtocolError]
    ) -> bool:
        """Report ``frame`` now and skip its payload, or hold it until the bytes to inspect arrive.

        A close frame waits for its code and reason (at most 125 bytes, the control frame limit,
        are looked at even if the frame claims more); with previews on, every frame waits for
        its first ``preview_bytes``.  Returns True if the frame is now waiting.
        """
        length = frame.payload_length
        need = min(length, MAX_CONTROL_PAYLOAD) if frame.opcode == OP_CLOSE else 0
        if self._preview:
            need = max(need, min(length, self._preview))
        if need == 0:
            if self._preview:
                frame.preview = b""
            out.append(frame)
            if errors:
                out.extend(errors)
            self._skip = length
            self._skipping = frame
            return False
        self._pending = frame
        self._pending_errors = errors
        self._need = need
        return True

    def _collect(self, data: bytes, pos: int, out: list[Frame | ProtocolError]) -> int:
        """Gather the payload bytes the pending frame needs; finish it once they are all here."""
        frame = self._pending
        assert frame is not None
        collected = self._collected
        want = self._need - (len(collected) if collected else 0)
        take = min(want, len(data) - pos)
        if take == want and not collected:
            payload = bytes(data[pos : pos + take])  # the common case: all in this chunk
        else:
            if collected is None:
                collected = self._collected = bytearray()
            collected += data[pos : pos + take]
            if take < want:
                return pos + take
            payload = bytes(collected)
            collected.clear()
        self._pending = None
        errors = self._pending_errors
        assert isinstance(errors, list)  # set with _pending by _arrange_payload
        self._pending_errors = _NO_ERRORS
        self._finish_frame(frame, payload, errors)
        out.append(frame)
        if errors:
            out.extend(errors)
        self._skip = frame.payload_length - len(payload)
        self._skipping = frame
        return pos + take

    def _finish_frame(self, frame: Frame, payload: bytes, errors: list[ProtocolError]) -> None:
        """Fill the payload-derived fields of ``frame`` from its first payload bytes."""
        if frame.masking_key is not None:
            payload = unmask(payload, frame.masking_key)
        if self._preview:
            frame.preview = payload[: self._preview]
        if frame.opcode == OP_CLOSE:
            complete = len(payload) == frame.payload_length
            errors.extend(_parse_close(frame, payload, complete))

    def _check_header(self, frame: Frame, len7: int) -> list[ProtocolError]:
        """Every rule of RFC 6455 §5 that a header alone can break, and the fragmentation state."""
        errors: list[ProtocolError] = []
        offset = frame.offset
        opcode = frame.opcode
        if self._closed:
            errors.append(
                ProtocolError("frame-after-close", offset, "no frame may follow a close frame")
            )
        if frame.rsv:
            self._check_rsv(frame, errors)
        if frame.masked is not self._client_side:
            if self._client_side:
                errors.append(
                    ProtocolError("unmasked-client-frame", offset, "client frames MUST be masked")
                )
            else:
                errors.append(
                    ProtocolError("masked-server-frame", offset, "server frames MUST NOT be masked")
                )
        length = frame.payload_length
        if len7 == 126 and length < 126:
            errors.append(
                ProtocolError(
                    "non-minimal-length", offset, f"{length} bytes sent with a 16-bit length"
                )
            )
        elif len7 == 127:
            if length >> 63:
                errors.append(
                    ProtocolError(
                        "length-msb-set",
                        offset,
                        "the most significant bit of a 64-bit length MUST be 0",
                    )
                )
            elif length < 0x10000:
                errors.append(
                    ProtocolError(
                        "non-minimal-length", offset, f"{length} bytes sent with a 64-bit length"
                    )
                )
        if opcode >= CONTROL_OPCODES_START:
            self._check_control(frame, errors)
        elif opcode == OP_CONTINUATION:
            if not self._fragmented:
                errors.append(
                    ProtocolError(
                        "unexpected-continuation",
                        offset,
                        "continuation frame without a fragmented message to continue",
                    )
                )
            self._fragmented = not frame.fin
        elif opcode <= OP_BINARY:
            if self._fragmented:
                errors.append(
                    ProtocolError(
                        "expected-continuation",
                        offset,
                        f"{frame.opcode_name} frame inside a fragmented message",
                    )
                )
            self._fragmented = not frame.fin
        else:
            errors.append(
                ProtocolError("reserved-opcode", offset, f"opcode 0x{opcode:x} is reserved")
            )
        return errors

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


def _header_length(buf: bytes | bytearray) -> int:
    """The full header length implied by the first two bytes of ``buf``, or 0 if unknown."""
    if len(buf) < 2:
        return 0
    b1 = buf[1]
    len7 = b1 & 0x7F
    hl = 2 if len7 < 126 else 4 if len7 == 126 else 10
    return hl + 4 if b1 & 0x80 else hl


def _parse_header(
    buf: bytes | bytearray, pos: int, end: int
) -> tuple[int, int, int, int, bytes | None] | None:
    """Parse the header at ``buf[pos:end]``: ``(byte0, byte1, length, header_length, key)``.

    Returns ``None`` if the header is not complete yet.  Lengths always parse, so a complete
    header is never rejected here; the rules are checked by the decoder.
    """
    if end - pos < 2:
        return None
    b1 = buf[pos + 1]
    length = b1 & 0x7F
    if length < 126:
        hl = 2
    elif length == 126:
        hl = 4
    else:
        hl = 10
    if b1 >= 0x80:
        hl += 4
        if end - pos < hl:
            return None
        key: bytes | None = bytes(buf[pos + hl - 4 : pos + hl])
    else:
        if end - pos < hl:
            return None
        key = None
    if length == 126:
        length = _unpack_u16(buf, pos + 2)[0]
    elif length == 127:
        length = _unpack_u64(buf, pos + 2)[0]
    return buf[pos], b1, length, hl, key


def _parse_close(frame: Frame, payload: bytes, complete: bool) -> list[ProtocolError]:
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
