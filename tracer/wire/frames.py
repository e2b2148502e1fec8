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

from tracer.wire.codes import CONTROL_OPCODES_START, Opcode
from tracer.wire.frame_model import (
    CLOSE_CODES_VALID,
    MAX_CONTROL_PAYLOAD,
    Frame,
    ProtocolError,
    encode_frame,
    is_valid_close_code,
    unmask,
)
from tracer.wire.frame_rules import HeaderRules, parse_close

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

_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_u64 = struct.Struct("!Q").unpack_from

# The hot loop's opcodes as plain ints: comparing an int with an IntEnum member takes the
# slow path of rich comparison on every frame.
_DATA_START = (int(OP_TEXT), int(OP_BINARY))
_PING_PONG = (int(OP_PING), int(OP_PONG))
_CONTINUATION = int(OP_CONTINUATION)
_CONTROL_START = int(CONTROL_OPCODES_START)

_MAX_HEADER = 14
"""2 bytes + 8 bytes of 64-bit extended length + 4 bytes of masking key."""
_NO_ERRORS: tuple[()] = ()
"""A frame decoder's pending errors while no frame is pending (no list per idle decoder)."""


class FrameDecoder(HeaderRules):
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
        n = len(data)
        carried = self._skip or self._pending is not None or self._hbuf
        if carried or n >= 132 or n < 2 or self._preview:
            return self._feed_chunk(data, n, carried)
        # The commonest chunk of all, decoded in a few steps: one whole frame, its payload
        # under 126 bytes (no extended length, §5.2), breaking no rule, with nothing carried
        # over — what a server reads, and writes, for each small message.  Anything else goes
        # to _feed_chunk, which finds the same frame (the property tests hold the two to it).
        b0 = data[0]
        b1 = data[1]
        masked = b1 >= 0x80
        length = b1 & 0x7F
        header_length = 6 if masked else 2
        opcode = b0 & 0x0F
        if (
            length >= 126
            or header_length + length != n
            or masked is not self._client_side
            or b0 & 0x70  # an RSV bit (see _check_rsv)
            or self._closed
        ):
            return self._feed_chunk(data, n, carried)
        if opcode in _DATA_START:
            if self._fragmented:
                return self._feed_chunk(data, n, carried)
            self._fragmented = b0 < 0x80
        elif opcode == _CONTINUATION:
            if not self._fragmented:
                return self._feed_chunk(data, n, carried)
            self._fragmented = b0 < 0x80
        elif opcode not in _PING_PONG or b0 < 0x80:  # a close, a reserved opcode, a fragment
            return self._feed_chunk(data, n, carried)
        key = data[2:6] if masked else None
        if key is not None and type(key) is not bytes:  # a bytearray's or view's slice
            key = bytes(key)
        offset = self._fed
        self._fed = offset + n
        return [Frame(b0 >= 0x80, 0, opcode, masked, key, length, header_length, offset)]

    def _feed_chunk(self, data: bytes, n: int, carried: object) -> list[Frame | ProtocolError]:
        """:meth:`feed`, for any chunk: what is carried over from the last one first, then
        every frame header in this one."""
        out: list[Frame | ProtocolError] = []
        base = self._fed
        self._fed = base + n
        pos = 0
        if carried:
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
            key = data[pos + hl - 4 : pos + hl] if masked else None
            if key is not None and type(key) is not bytes:  # a bytearray's or view's slice
                key = bytes(key)
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
                    or (b0 & 0x70 == 0 and opcode == _CONTINUATION and self._fragmented)
                    or (b0 & 0xF0 == 0x80 and opcode in _PING_PONG and length <= 125)
                )
            ):
                if opcode < _CONTROL_START:
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
            pos = self._after_header(data, pos + hl, frame, errors, out)
            if pos < 0:
                break
        return out

    def _after_header(
        self, data: bytes, pos: int, frame: Frame, errors: list[ProtocolError],
        out: list[Frame | ProtocolError],
    ) -> int:
        """The slow path of :meth:`feed`, for a frame that breaks a rule or whose payload is
        inspected: report it (now, or once the bytes it waits for are in) and pass over its
        payload.  ``pos``: where its payload starts.  Returns where the next header starts,
        or -1 when this chunk is used up."""
        n = len(data)
        if self._arrange_payload(frame, errors, out):
            if pos >= n:
                return -1
            pos = self._collect(data, pos, out)
            if self._pending is not None:
                return -1
        skip = self._skip
        if skip:
            if skip >= n - pos:
                self._skip = skip - (n - pos)
                return -1
            pos += skip
            self._skip = 0
        return pos

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
            errors.append(_truncated_header(self._hbuf, self._hstart))
            self._hbuf = None
        elif self._pending is not None:
            errors.extend(self._pending_errors)
            errors.append(_truncated_payload(self._pending, len(self._collected or b"")))
            self._pending = None
            self._pending_errors = _NO_ERRORS
            self._collected = None
        elif self._skip:
            frame = self._skipping
            assert frame is not None
            errors.append(_truncated_payload(frame, frame.payload_length - self._skip))
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
        self._hbuf = None
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
            self._collected = None
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
            errors.extend(parse_close(frame, payload, complete))

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


def _truncated_header(header: bytes | bytearray, offset: int) -> ProtocolError:
    """The stream ended in the header that starts at ``offset``: ``header`` came of it."""
    have = len(header)
    need = _header_length(header)
    missing = f"{need - have}" if need else "at least 1"
    return ProtocolError(
        "truncated",
        offset,
        f"stream ended in a frame header: {have} bytes received, {missing} missing",
    )


def _truncated_payload(frame: Frame, got: int) -> ProtocolError:
    """The stream ended in ``frame``'s payload, ``got`` bytes of it received."""
    length = frame.payload_length
    return ProtocolError(
        "truncated",
        frame.offset,
        f"stream ended in the payload of a {frame.opcode_name} frame: "
        f"{got} of {length} bytes received, {length - got} missing",
    )
