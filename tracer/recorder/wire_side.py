"""A connection as its wire shows it: bytes in both directions decoded into the request and
response heads, frames, messages waiting for the app, close frames and protocol errors.

One side of :class:`~tracer.recorder.connection.ConnectionRecord` (a mixin: the record holds
every slot, so a connection stays one small object).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracer import vocab
from tracer._contain import errors
from tracer.recorder.emit.messages import emit_control_frame
from tracer.recorder.phase import Event, Phase
from tracer.recorder.records import (
    MAX_CLOSE_FRAMES,
    MAX_EARLY_BYTES,
    MAX_FRAMES_HELD,
    MAX_PENDING_MESSAGES,
    MAX_WIRE_ERRORS,
    FrameRecord,
    InMessage,
)
from tracer.wire import (
    FrameDecoder,
    Opcode,
    ProtocolError,
    RequestHead,
    RequestHeadDecoder,
    ResponseHead,
    ResponseHeadDecoder,
    request_target,
)

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord

_PING_PONG = (Opcode.PING, Opcode.PONG)
_MESSAGE_START = (Opcode.TEXT, Opcode.BINARY)
_DATA_OPCODES = (Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY)
_CONTINUATION = int(Opcode.CONTINUATION)
_CLOSE = int(Opcode.CLOSE)
"""As plain ints: an enum member read off its class costs a lookup on every frame."""
_FINISHED = int(Phase.FINISHED)


class WireSide:
    """Bytes → facts.  Runs for every chunk a client sends and every write of the server."""

    __slots__ = ()

    def init_wire(self: ConnectionRecord) -> None:
        wire = self.source == vocab.SOURCE_SERVER  # the middleware alone sees no bytes
        self.request_decoder: RequestHeadDecoder | None = RequestHeadDecoder() if wire else None
        self.response_decoder: ResponseHeadDecoder | None = ResponseHeadDecoder() if wire else None
        self.client_frames: FrameDecoder | None = None
        self.server_frames: FrameDecoder | None = None
        self.pre_handshake_bytes = b""
        self.held_request: tuple[int, bytes] | None = None
        """The chunk holding the whole request head, and when it arrived, until it is decoded
        (:meth:`release_request`)."""
        self.request: RequestHead | None = None
        self.response: ResponseHead | None = None
        self.status = 0
        """The response's status code once it is on the wire (the head itself is let go)."""
        # Made on first use (an empty tuple until then): an idle connection has none of these.
        self.wire_errors: list[tuple[int, ProtocolError]] | tuple[()] = ()
        self.wire_errors_dropped = 0

        # Messages arriving, not yet received by the app.
        self.assembling: InMessage | None = None
        # A list, not a deque: it is short (messages arrived but not yet received by the
        # app), and an empty deque weighs 600 bytes more on every idle connection.
        self.completed: list[InMessage] | tuple[()] = ()
        self.frames_held = 0
        self.path: str | None = None

        # Close frames.
        self.close_start = 0
        self.close_initiator: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.close_frames: list[tuple[str, FrameRecord]] | tuple[()] = ()

    def on_bytes_in(self, start: int, data: bytes) -> list[FrameRecord] | None:
        """Bytes from the client, decoded before the protocol sees them.

        Returns the frames they completed; :meth:`on_bytes_in_done` stamps their end once the
        protocol has processed the chunk, so a frame span covers the server's work on it.

        A first chunk that holds a whole, well-formed request head (as uvicorn hands it over)
        is checked and kept as it is, with its time: the request is in, with its path, and
        the head is decoded after the server has answered (:meth:`release_request`), off the
        client's wait.  Anything else is decoded as it comes.
        """
        if self.phase == _FINISHED:
            return None
        decoder = self.request_decoder
        if decoder is not None:
            if self.held_request is None and not decoder.bytes_fed and len(data) <= MAX_EARLY_BYTES:
                target = request_target(data)
                if target is not None:
                    self.held_request = (start, bytes(data))  # the caller's, if mutable
                    self._request_in(start, target)
                    return None
            self.release_request()  # what came first goes first
            if self.request_decoder is not None:
                data = self._decode_request(start, data)
                if not data:
                    return None
        if self.client_frames is None:
            self._keep_early(data)
            return None
        records: list[FrameRecord] = []
        for item in self.client_frames.feed(data):
            if type(item) is ProtocolError:
                self._wire_error(start, item)
            else:
                record = FrameRecord(start, start, item)
                records.append(record)
                self._on_client_frame(record)
        return records

    def release_request(self) -> None:
        """Decode the held request head (see :meth:`on_bytes_in`), as of when it arrived:
        before the server's answer is decoded, before the app's span ends (the head names its
        path), and before the connection ends, whichever comes first."""
        held = self.held_request
        if held is None:
            return
        self.held_request = None
        start, data = held
        try:  # contained here: the caller goes on with its own bytes (the answer, the end)
            after = self._decode_request(start, data)
            if after:
                self._keep_early(after)
        except Exception as exc:
            errors.record("recorder.request", exc)

    def _decode_request(self, start: int, data: bytes) -> bytes:
        """Feed the request head's decoder; returns the bytes after the head, if it ended."""
        decoder = self.request_decoder
        assert decoder is not None
        result = decoder.feed(data)
        if result is None:
            return b""
        self.request_decoder = None
        if isinstance(result, ProtocolError):
            self._wire_error(start, result)
            return b""
        self._on_request(start, result)
        return decoder.trailing

    def _keep_early(self, data: bytes) -> None:
        """Frames pipelined before the 101: decoded once the extensions are known."""
        room = MAX_EARLY_BYTES - len(self.pre_handshake_bytes)
        if room > 0:
            self.pre_handshake_bytes += data[:room]

    def on_bytes_in_done(self, records: list[FrameRecord], end: int) -> None:
        for record in records:
            record.end = end
            if record.frame.opcode in _PING_PONG:
                emit_control_frame(self, vocab.WS_FRAME_RECEIVE, record)

    def on_bytes_out(self, start: int, end: int, data: bytes) -> None:
        if self.phase == _FINISHED:
            return
        if self.held_request is not None:
            self.release_request()  # the request, then its answer
        if self.response_decoder is not None:
            result = self.response_decoder.feed(data)
            if result is None:
                return
            trailing = self.response_decoder.trailing
            self.response_decoder = None
            if isinstance(result, ProtocolError):
                self._wire_error(start, result)
                return
            self._on_response(start, end, result)
            if not trailing:
                return
            data = trailing
        if self.server_frames is None:
            return
        send = self.current_send
        for item in self.server_frames.feed(data):
            if type(item) is ProtocolError:
                self._wire_error(start, item)
            elif send is not None and item.opcode in _DATA_OPCODES:
                send.frames.append(FrameRecord(start, end, item))  # what the send put out
            else:
                self._on_server_frame(FrameRecord(start, end, item))

    def _on_request(self, at: int, head: RequestHead) -> None:
        self.request = head
        if self.path is None:  # not noted when it arrived (held)
            self._request_in(at, head.target)

    def _request_in(self, at: int, target: str) -> None:
        """A well-formed request head has arrived at ``at``: its path, and the handshake."""
        self.path = target.partition("?")[0]
        if self.recording:
            self.span.set_attribute(vocab.URL_PATH, self.path)
            self.span.set_attribute(vocab.URL_SCHEME, "ws")
        if not self.handshake_start:
            self.handshake_start = at
        self._step(Event.REQUEST)

    def _on_response(self, start: int, end: int, head: ResponseHead) -> None:
        self.response = head
        self.status = head.status
        if not self.response_start:
            self.response_start = start
        self.response_end = end
        self._step(Event.SWITCH if head.status == 101 else Event.DENY)
        if head.status == 101:
            rsv = (
                0b100
                if "permessage-deflate" in (head.header("sec-websocket-extensions") or "")
                else 0
            )
            preview = self.config.capture_payload
            self.client_frames = FrameDecoder(
                client_side=True, preview_bytes=preview, rsv_allowed=rsv
            )
            self.server_frames = FrameDecoder(
                client_side=False, preview_bytes=preview, rsv_allowed=rsv
            )
            if self.pre_handshake_bytes:
                pending, self.pre_handshake_bytes = self.pre_handshake_bytes, b""
                self.on_bytes_in_done(self.on_bytes_in(start, pending) or [], end)
        if self.handshake_ends_on_response or head.status != 101:
            self.on_handshake_end(end)

    def _on_client_frame(self, record: FrameRecord) -> None:
        frame = record.frame
        opcode = frame.opcode
        if opcode in _MESSAGE_START or (
            opcode == _CONTINUATION and self.assembling is not None
        ):
            message = self.assembling
            if opcode != _CONTINUATION or message is None:
                message = self.assembling = InMessage(record.start, [], opcode)
            if (
                len(message.frames) < self.config.max_frames_per_message
                and self.frames_held < MAX_FRAMES_HELD
            ):
                message.frames.append(record)
                self.frames_held += 1
            else:
                message.frames_dropped += 1
            if frame.fin:
                message.complete_at = record.start
                self.assembling = None
                completed = self.completed
                if type(completed) is tuple:
                    completed = self.completed = []
                if len(completed) >= MAX_PENDING_MESSAGES:
                    self._release(completed.pop(0))
                    self.recorder.stats["messages_dropped"] += 1
                completed.append(message)
        elif opcode == _CLOSE:
            self._on_close_frame(vocab.INITIATOR_CLIENT, record)

    def _release(self, message: InMessage) -> InMessage:
        """A message leaves the queue: its frames no longer count against the budget."""
        self.frames_held -= len(message.frames)
        return message

    def _on_server_frame(self, record: FrameRecord) -> None:
        """A frame the server wrote outside any send's data (a send's own frames go to it in
        :meth:`on_bytes_out`): a close frame, or a control frame of its own."""
        if record.frame.opcode == _CLOSE:
            self._on_close_frame(vocab.INITIATOR_SERVER, record)
        else:
            emit_control_frame(self, vocab.WS_FRAME_SEND, record)

    def _wire_error(self, at: int, error: ProtocolError) -> None:
        wire_errors = self.wire_errors
        if len(wire_errors) < MAX_WIRE_ERRORS:
            if type(wire_errors) is tuple:
                wire_errors = self.wire_errors = []
            wire_errors.append((at, error))
        else:
            self.wire_errors_dropped += 1

    def _on_close_frame(self, side: str, record: FrameRecord) -> None:
        close_frames = self.close_frames
        if len(close_frames) < MAX_CLOSE_FRAMES:
            if type(close_frames) is tuple:
                close_frames = self.close_frames = []
            close_frames.append((side, record))
        if self.close_initiator is None:
            self.close_initiator = side
            self.close_start = record.start
            self.close_code = record.frame.close_code
            self.close_reason = record.frame.close_reason
        self._step(Event.CLOSE_FRAME)
