"""One upgraded connection: the facts the hooks report, in the order its phases allow.

The record decides *when* spans are made (its phase, :mod:`tracer.recorder.phase`); what they
are is the emitters' business (:mod:`tracer.recorder.emit`).
"""

from __future__ import annotations

from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from tracer import vocab
from tracer._contain import errors
from tracer.chain import innermost_span
from tracer.recorder.abandoned import guard
from tracer.recorder.emit.close import emit_close, emit_wire_errors, end_connection
from tracer.recorder.emit.handshake import emit_handshake
from tracer.recorder.emit.messages import (
    emit_control_frame,
    emit_message,
    emit_send,
    emit_undelivered,
    flush_greeting,
)
from tracer.recorder.phase import (
    INVALID,
    AppEvent,
    AppPhase,
    Event,
    InvalidTransition,
    Phase,
    next_app_phase,
    next_phase,
)
from tracer.recorder.records import (
    GREETING_FLUSH,
    MAX_CLOSE_FRAMES,
    MAX_EARLY_BYTES,
    MAX_FRAMES_HELD,
    MAX_PENDING_MESSAGES,
    MAX_SENDS_PER_MESSAGE,
    MAX_WIRE_ERRORS,
    Attributes,
    FrameRecord,
    Handling,
    HttpStages,
    InMessage,
    SendRecord,
    _explicit_broadcast,
    _handling,
)
from tracer.recorder.spans import capture_stack
from tracer.wire import (
    FrameDecoder,
    Opcode,
    ProtocolError,
    RequestHead,
    RequestHeadDecoder,
    ResponseHead,
    ResponseHeadDecoder,
)

if TYPE_CHECKING:
    from tracer.recorder import Recorder

_PING_PONG = (Opcode.PING, Opcode.PONG)
_MESSAGE_START = (Opcode.TEXT, Opcode.BINARY)
_DATA_OPCODES = (Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY)

# Phases as plain ints: the checks on the hot path are int comparisons.
_HTTP = int(Phase.HTTP)
_OPEN = int(Phase.OPEN)
_FINISHED = int(Phase.FINISHED)
_NOT_STARTED = int(AppPhase.NOT_STARTED)
_ORPHANED = int(AppPhase.ORPHANED)
_RUNNING = (int(AppPhase.RUNNING), _ORPHANED)


class ConnectionRecord:
    """Everything recorded about one upgraded connection, and the spans made from it.

    Slotted: one lives as long as its connection, idle ones included (see the memory bar).
    """

    __slots__ = (
        "__weakref__",
        "accept_parent",
        "accept_stack",
        "accept_start",
        "app",
        "app_end",
        "app_phase",
        "app_span",
        "assembling",
        "client_frames",
        "close_code",
        "close_frames",
        "close_initiator",
        "close_reason",
        "close_start",
        "completed",
        "config",
        "current_send",
        "frames_held",
        "guard",
        "handling",
        "handshake_end",
        "handshake_ends_on_response",
        "handshake_error",
        "handshake_start",
        "http",
        "http_code",
        "id",
        "impl_http",
        "impl_ws",
        "inert",
        "lost_at",
        "lost_error",
        "messages_seen",
        "open_spans",
        "path",
        "phase",
        "pre_handshake_bytes",
        "recorder",
        "recording",
        "request",
        "request_decoder",
        "response",
        "response_decoder",
        "response_end",
        "response_start",
        "send_frame",
        "server_frames",
        "span",
        "span_context",
        "started",
        "status",
        "validations",
        "wire_errors",
        "wire_errors_dropped",
        "ws_code",
    )

    def __init__(
        self,
        recorder: Recorder,
        *,
        impl_http: str,
        impl_ws: str,
        http: HttpStages | None,
        http_code: dict[str, Attributes],
        ws_code: dict[str, Attributes],
        transport: Any,
        handshake_ends_on_response: bool,
        send_frame: tuple[str, str, int] | None = None,
    ) -> None:
        self.recorder = recorder
        self.config = recorder.config
        self.id = recorder.next_connection_id()
        self.impl_http = impl_http
        self.impl_ws = impl_ws
        self.http = http
        self.http_code = http_code
        self.ws_code = ws_code
        self.handshake_ends_on_response = handshake_ends_on_response
        self.send_frame = send_frame
        started = http.connection_made if http is not None else time_ns()
        self.started = started

        attributes: Attributes = {
            vocab.NETWORK_PROTOCOL_NAME: "websocket",
            vocab.NETWORK_TRANSPORT: "tcp",
            vocab.IMPL_HTTP: impl_http,
            vocab.IMPL_WS: impl_ws,
            vocab.CONNECTION_ID: self.id,
            vocab.SOURCE: vocab.SOURCE_SERVER,
            **http_code.get(vocab.CONNECTION, {}),
        }
        attributes.update(_address_attributes(transport))
        self.span = recorder.start(
            vocab.CONNECTION, None, started, attributes, kind=SpanKind.SERVER
        )
        self.recording = self.span.is_recording()
        self.open_spans = [self.span]
        self.guard = guard(self, self.open_spans)  # ends them if the server forgets us
        self.span_context = self.span.get_span_context()
        self.inert = not self.recording and (
            self.config.shape == vocab.SHAPE_CONNECTION or self.config.message_sampling == "inherit"
        )
        """Nothing of this connection will be recorded: the hooks step aside."""

        # Wire state.
        self.request_decoder: RequestHeadDecoder | None = RequestHeadDecoder()
        self.response_decoder: ResponseHeadDecoder | None = ResponseHeadDecoder()
        self.client_frames: FrameDecoder | None = None
        self.server_frames: FrameDecoder | None = None
        self.pre_handshake_bytes = b""
        self.request: RequestHead | None = None
        self.response: ResponseHead | None = None
        self.status = 0
        """The response's status code once it is on the wire (the head itself is let go)."""
        self.wire_errors: list[tuple[int, ProtocolError]] = []
        self.wire_errors_dropped = 0

        # Handshake.
        self.handshake_start = 0
        self.handshake_end = 0
        self.handshake_error: str | None = None
        self.validations: list[tuple[int, int, str | None]] = []
        self.response_start = 0
        self.response_end = 0
        self.accept_start = 0
        self.accept_stack: list[tuple[str, str, int]] | None = None
        self.accept_parent: Any = None

        # App.
        self.app: Any = None
        self.app_span: Any = None
        self.app_phase = _NOT_STARTED
        self.app_end = 0

        # Messages.
        self.assembling: InMessage | None = None
        # A list, not a deque: it is short (messages arrived but not yet received by the
        # app), and an empty deque weighs 600 bytes more on every idle connection.
        self.completed: list[InMessage] = []
        self.frames_held = 0
        self.handling: Handling | None = None
        self.current_send: SendRecord | None = None
        self.messages_seen = 0
        self.path: str | None = None

        # Close.
        self.close_start = 0
        self.close_initiator: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.close_frames: list[tuple[str, FrameRecord]] = []
        self.lost_at = 0
        self.lost_error: str | None = None
        self.phase = _HTTP
        """Where the connection is (:class:`~tracer.recorder.phase.Phase`)."""

    # --- Phases: every change goes through the tables of tracer.recorder.phase ---------------

    def _step(self, event: Event) -> None:
        """Move the connection's phase on ``event``; the handshake's spans go out as it ends."""
        before = self.phase
        after = next_phase(before, event)
        if after == INVALID:
            errors.record("recorder.phase", InvalidTransition("connection", before, event))
            return
        self.phase = after
        if before < _OPEN <= after < _FINISHED:  # the answer is out and the handshake over
            self._handshake_over()

    def _app_step(self, event: AppEvent) -> None:
        after = next_app_phase(self.app_phase, event)
        if after == INVALID:
            errors.record("recorder.phase", InvalidTransition("app", self.app_phase, event))
            return
        self.app_phase = after

    # --- Wire: bytes in and out ------------------------------------------------------------

    def on_bytes_in(self, start: int, data: bytes) -> list[FrameRecord] | None:
        """Bytes from the client, decoded before the protocol sees them.

        Returns the frames they completed; :meth:`on_bytes_in_done` stamps their end once the
        protocol has processed the chunk, so a frame span covers the server's work on it.
        """
        if self.phase == _FINISHED:
            return None
        if self.request_decoder is not None:
            result = self.request_decoder.feed(data)
            if result is None:
                return None
            trailing = self.request_decoder.trailing
            self.request_decoder = None
            if isinstance(result, ProtocolError):
                self._wire_error(start, result)
                return None
            self._on_request(start, result)
            if not trailing:
                return None
            data = trailing
        if self.client_frames is None:
            # Frames pipelined before the 101: decoded once the extensions are known.
            room = MAX_EARLY_BYTES - len(self.pre_handshake_bytes)
            if room > 0:
                self.pre_handshake_bytes += data[:room]
            return None
        records: list[FrameRecord] = []
        for item in self.client_frames.feed(data):
            if isinstance(item, ProtocolError):
                self._wire_error(start, item)
            else:
                record = FrameRecord(start, start, item)
                records.append(record)
                self._on_client_frame(record)
        return records

    def on_bytes_in_done(self, records: list[FrameRecord], end: int) -> None:
        for record in records:
            record.end = end
            if record.frame.opcode in _PING_PONG:
                emit_control_frame(self, vocab.WS_FRAME_RECEIVE, record)

    def on_bytes_out(self, start: int, end: int, data: bytes) -> None:
        if self.phase == _FINISHED:
            return
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
        for item in self.server_frames.feed(data):
            if isinstance(item, ProtocolError):
                self._wire_error(start, item)
            else:
                self._on_server_frame(FrameRecord(start, end, item))

    def _on_request(self, at: int, head: RequestHead) -> None:
        self.request = head
        self.path = head.target.partition("?")[0]
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
            opcode == Opcode.CONTINUATION and self.assembling is not None
        ):
            message = self.assembling
            if opcode != Opcode.CONTINUATION or message is None:
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
                if len(self.completed) >= MAX_PENDING_MESSAGES:
                    self._release(self.completed.pop(0))
                    self.recorder.stats["messages_dropped"] += 1
                self.completed.append(message)
        elif opcode == Opcode.CLOSE:
            self._on_close_frame(vocab.INITIATOR_CLIENT, record)

    def _release(self, message: InMessage) -> InMessage:
        """A message leaves the queue: its frames no longer count against the budget."""
        self.frames_held -= len(message.frames)
        return message

    def _on_server_frame(self, record: FrameRecord) -> None:
        if record.frame.opcode == Opcode.CLOSE:
            self._on_close_frame(vocab.INITIATOR_SERVER, record)
            return
        send = self.current_send
        if send is not None and record.frame.opcode in _DATA_OPCODES:
            send.frames.append(record)
        else:
            emit_control_frame(self, vocab.WS_FRAME_SEND, record)

    def _wire_error(self, at: int, error: ProtocolError) -> None:
        if len(self.wire_errors) < MAX_WIRE_ERRORS:
            self.wire_errors.append((at, error))
        else:
            self.wire_errors_dropped += 1

    def _on_close_frame(self, side: str, record: FrameRecord) -> None:
        if len(self.close_frames) < MAX_CLOSE_FRAMES:
            self.close_frames.append((side, record))
        if self.close_initiator is None:
            self.close_initiator = side
            self.close_start = record.start
            self.close_code = record.frame.close_code
            self.close_reason = record.frame.close_reason
        self._step(Event.CLOSE_FRAME)

    # --- Handshake -------------------------------------------------------------------------

    def on_handshake_start(self, at: int) -> None:
        if not self.handshake_start or at < self.handshake_start:
            self.handshake_start = at
        self._step(Event.REQUEST)

    def on_validate(self, start: int, end: int, error: str | None) -> None:
        self.validations.append((start, end, error))

    def on_response_start(self, at: int) -> None:
        if not self.response_start:
            self.response_start = at

    def on_handshake_end(self, at: int, error: str | None = None) -> None:
        if not self.handshake_end:
            self.handshake_end = at
        if error and not self.handshake_error:
            self.handshake_error = error
        self._step(Event.HANDSHAKE_END)

    def _handshake_over(self) -> None:
        """Emit the handshake spans, once: when it has ended and its response is on the wire
        (the phase reaches OPEN or REJECTED), or when the record finishes without them."""
        if self.recording:
            try:
                emit_handshake(self)
            except Exception as exc:
                errors.record("recorder.emit_handshake", exc)
        # What only the handshake spans needed: let it go for the rest of the connection's life.
        self.http = None
        self.request = None
        self.response = None
        self.validations = []
        self.accept_stack = None

    # --- The app ---------------------------------------------------------------------------

    def claim(self) -> None:
        """Mark the running app task as owned by the server layer (an inert connection)."""
        _handling.set(Handling(self, None))

    def on_app_start(self, at: int, app: Any = None) -> Any:
        self._app_step(AppEvent.START)
        self.app = app
        if self.recording:
            attrs = {**self.ws_code.get(vocab.ASGI_APP, {}), vocab.URL_PATH: self.path or ""}
            self.app_span = self.recorder.start(vocab.ASGI_APP, self.span, at, attrs)
            self.open_spans.append(self.app_span)
        greeting = Handling(self, None, asked_at=at)
        self.handling = greeting
        return _handling.set(greeting)

    def on_app_end(self, at: int, error: str | None) -> None:
        orphaned = self.app_phase == _ORPHANED
        self._app_step(AppEvent.END)
        self.app_end = at
        self._close_handling(at)
        if self.app_span is not None:
            if error is not None:
                self.app_span.set_attribute(vocab.ERROR_TYPE, error)
                self.app_span.set_status(Status(StatusCode.ERROR, error))
            self.app_span.end(end_time=at)
        if orphaned:  # the connection went first: it ends now
            self._finish(max(at, self.lost_at))

    def on_send_enter(self, at: int, message: Any) -> SendRecord | None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "websocket.send":
            data = message.get("text")
            message_type = "text"
            if data is None:
                data = message.get("bytes")
                message_type = "binary"
            send = SendRecord(at, self, message_type, len(data) if data is not None else 0)
            self.current_send = send
            return send
        if kind == "websocket.accept" and not self.accept_start:
            self.accept_start = at
            current = innermost_span(trace.get_current_span())
            if current.get_span_context().trace_id == self.span_context.trace_id:
                self.accept_parent = current  # the innermost ASGI layer (TracingMiddleware)
            if self.config.handshake_stack and self.recording:
                # The server's send is being entered, not yet running: it is the innermost frame.
                self.accept_stack = capture_stack(app=self.app)
                if self.send_frame is not None:
                    self.accept_stack.append(self.send_frame)
        return None

    def on_send_exit(self, send: SendRecord, at: int, error: str | None) -> None:
        send.end = at
        send.error = error
        if self.current_send is send:
            self.current_send = None
        explicit = _explicit_broadcast.get()
        if explicit is not None:
            explicit.append(send)  # emitted by the broadcast() block that collects it
            return
        owner = _handling.get()
        if owner is not None and not owner.closed:
            if owner.held >= MAX_SENDS_PER_MESSAGE:
                owner.sends_dropped += 1
                return
            owner.held += 1
            owner.sends.append(send)
            if not owner.message_type and len(owner.sends) >= GREETING_FLUSH:
                flush_greeting(owner)
        elif self.recording:
            # A send from outside any handler (a background task): straight under its connection.
            emit_send(self, self.span, send, self)

    def on_receive_enter(self, at: int) -> None:
        """The app asks for the next message: the previous one has been handled."""
        handling = self.handling
        if handling is not None and handling.message_type:
            self._close_handling(at)

    def on_receive_exit(self, token_at: int, at: int, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind != "websocket.receive":
            if kind == "websocket.disconnect" and self.close_code is None:
                code = message.get("code")
                if isinstance(code, int):
                    self.close_code = code
            return
        data = message.get("text")
        message_type = "text"
        if data is None:
            data = message.get("bytes")
            message_type = "binary"
        self._close_handling(token_at)  # the greeting phase, if still open
        incoming = self._release(self.completed.pop(0)) if self.completed else None
        handling = Handling(
            self,
            incoming,
            asked_at=token_at,
            delivered_at=at,
            size=len(data) if data is not None else 0,
            message_type=message_type,
        )
        self.handling = handling
        _handling.set(handling)

    def _close_handling(self, at: int) -> None:
        handling = self.handling
        if handling is None or handling.closed:
            return
        handling.closed = True
        self.handling = None
        try:
            emit_message(self, handling, at)
        except Exception as exc:
            errors.record("recorder.emit_message", exc)

    # --- The end ---------------------------------------------------------------------------

    def on_lost(self, at: int, exc: BaseException | None) -> None:
        if self.phase == _FINISHED or self.app_phase == _ORPHANED:
            return  # lost already (or finished by uninstrument())
        self.lost_at = at
        if exc is not None:
            self.lost_error = type(exc).__name__
        if self.client_frames is not None:
            for item in self.client_frames.eof():
                self._wire_error(at, item)
        self._app_step(AppEvent.LOST)
        if self.app_phase != _ORPHANED:  # no app running: nothing more to wait for
            self._finish(max(at, self.app_end))

    def force_finish(self, at: int) -> None:
        if not self.lost_at:
            self.lost_at = at
        if self.app_span is not None and self.app_phase in _RUNNING:
            self._app_step(AppEvent.FORCE_END)
            self._close_handling(at)
            self.app_span.end(end_time=at)
        self._finish(at)

    def _finish(self, at: int) -> None:
        if self.phase == _FINISHED:
            return
        try:
            self._close_handling(at)
            if self.phase < _OPEN:  # finished before the handshake was over: emit what is known
                self._handshake_over()
            if self.recording:
                emit_undelivered(self, at)
                emit_close(self)
                emit_wire_errors(self)
        except Exception as exc:
            errors.record("recorder.finish", exc)
        finally:
            self._step(Event.FINISH)
            self.guard.detach()
            self.recorder.open_records.discard(self)
            end_connection(self, at)


def _address_attributes(transport: Any) -> Attributes:
    attrs: Attributes = {}
    try:
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
    except Exception:
        return attrs
    if isinstance(peer, tuple) and len(peer) >= 2:
        attrs[vocab.CLIENT_ADDRESS] = str(peer[0])
        attrs[vocab.CLIENT_PORT] = int(peer[1])
    if isinstance(local, tuple) and len(local) >= 2:
        attrs[vocab.SERVER_ADDRESS] = str(local[0])
        attrs[vocab.SERVER_PORT] = int(local[1])
    return attrs
