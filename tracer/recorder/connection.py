"""One upgraded connection: its recorded stages, and the spans made from them."""

from __future__ import annotations

from collections.abc import Iterable
from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracer import vocab
from tracer._contain import errors
from tracer.chain import innermost_span
from tracer.recorder.abandoned import guard
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
from tracer.recorder.spans import (
    capture_stack,
    error_event,
    frame_attributes,
    stack_event_attributes,
)
from tracer.wire import (
    CloseCode,
    FrameDecoder,
    Opcode,
    ProtocolError,
    RequestHead,
    RequestHeadDecoder,
    ResponseHead,
    ResponseHeadDecoder,
    check_accept,
    opcode_name,
)

if TYPE_CHECKING:
    from tracer.recorder import Recorder

_PING_PONG = (Opcode.PING, Opcode.PONG)
_MESSAGE_START = (Opcode.TEXT, Opcode.BINARY)
_DATA_OPCODES = (Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY)
ABNORMAL_CLOSURE = int(CloseCode.ABNORMAL_CLOSURE)
"""Recorded when the connection was lost without a close frame (RFC 6455 §7.1.5)."""
NO_STATUS_RCVD = int(CloseCode.NO_STATUS_RCVD)
"""Recorded for a close frame that carried no status code (§7.1.5)."""

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
                self._emit_control_frame(vocab.WS_FRAME_RECEIVE, record)

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
            self._emit_control_frame(vocab.WS_FRAME_SEND, record)

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
                self._emit_handshake()
            except Exception as exc:
                errors.record("recorder.emit_handshake", exc)
        # What only the handshake spans needed: let it go for the rest of the connection's life.
        self.http = None
        self.request = None
        self.response = None
        self.validations = []
        self.accept_stack = None

    def _emit_handshake(self) -> None:
        rec = self.recorder
        http = self.http
        conn = self.span
        if http is not None and http.parse_start:
            parse_attrs: Attributes = dict(self.http_code.get(vocab.HTTP_HEADERS_PARSE, {}))
            head_error = None
            if http.head_bytes:
                decoder = RequestHeadDecoder()
                result = decoder.feed(b"".join(http.head_bytes))
                if isinstance(result, RequestHead):
                    parse_attrs.update(
                        {
                            vocab.HTTP_REQUEST_METHOD: result.method,
                            vocab.URL_PATH: result.target.partition("?")[0],
                            vocab.NETWORK_PROTOCOL_VERSION: result.http_version,
                            "wstrace.http.header_count": len(result.headers),
                            "wstrace.http.head_bytes": result.length,
                        }
                    )
                    parse_attrs.update(
                        self.config.header_attributes(
                            vocab.HTTP_REQUEST_HEADER_PREFIX, result.headers
                        )
                    )
                elif isinstance(result, ProtocolError):
                    head_error = result.kind
            rec.span(
                vocab.HTTP_HEADERS_PARSE,
                conn,
                http.parse_start,
                http.parse_end or http.parse_start,
                parse_attrs,
                error=head_error,
            )
            if http.detect_start:
                rec.span(
                    vocab.HTTP_UPGRADE_DETECT,
                    conn,
                    http.detect_start,
                    http.switch_start or http.detect_end,
                    {
                        **self.http_code.get(vocab.HTTP_UPGRADE_DETECT, {}),
                        "wstrace.upgrade": "websocket",
                    },
                )
            if http.switch_start:
                rec.span(
                    vocab.WS_PROTOCOL_SWITCH,
                    conn,
                    http.switch_start,
                    http.switch_end,
                    {
                        **self.http_code.get(vocab.WS_PROTOCOL_SWITCH, {}),
                        vocab.IMPL_WS: self.impl_ws,
                    },
                )
        start = self.handshake_start or self.started
        end = max(self.handshake_end, self.response_end, start)
        request = self.request
        attrs: Attributes = dict(self.ws_code.get(vocab.WS_HANDSHAKE, {}))
        key = request.header("sec-websocket-key") if request else None
        if request is not None:
            attrs[vocab.HTTP_REQUEST_METHOD] = request.method
            attrs[vocab.URL_PATH] = self.path or ""
            version = request.header("sec-websocket-version")
            if version is not None:
                attrs[vocab.WS_VERSION] = version
            if key is not None:
                attrs[vocab.WS_KEY] = key
            attrs.update(
                self.config.header_attributes(vocab.HTTP_REQUEST_HEADER_PREFIX, request.headers)
            )
        status = self.response.status if self.response else None
        if status is not None:
            attrs[vocab.HTTP_RESPONSE_STATUS_CODE] = status
        error = self.handshake_error
        if status is not None and status != 101:
            error = error or str(status)
        elif status is None:
            error = error or "no-response"
        hs = rec.start(vocab.WS_HANDSHAKE, conn, start, attrs)
        for v_start, v_end, v_error in self.validations:
            v_attrs: Attributes = dict(self.ws_code.get(vocab.WS_HANDSHAKE_VALIDATE, {}))
            if key is not None:
                v_attrs[vocab.WS_KEY] = key
            if request is not None and request.header("sec-websocket-version") is not None:
                v_attrs[vocab.WS_VERSION] = request.header("sec-websocket-version")
            v_attrs["wstrace.handshake.valid"] = v_error is None
            rec.span(vocab.WS_HANDSHAKE_VALIDATE, hs, v_start, v_end, v_attrs, error=v_error)
        if self.response is not None:
            response = self.response
            r_attrs: Attributes = {
                **self.ws_code.get(vocab.WS_HANDSHAKE_RESPONSE, {}),
                vocab.HTTP_RESPONSE_STATUS_CODE: response.status,
                "wstrace.http.head_bytes": response.length,
            }
            accept = response.header("sec-websocket-accept")
            if key is not None:
                r_attrs[vocab.WS_KEY] = key
            if accept is not None:
                r_attrs[vocab.WS_ACCEPT_KEY] = accept
                r_attrs[vocab.WS_ACCEPT_VALID] = check_accept(key, accept)
            extensions = response.header("sec-websocket-extensions")
            if extensions:
                r_attrs[vocab.WS_EXTENSIONS] = extensions
            subprotocol = response.header("sec-websocket-protocol")
            if subprotocol:
                r_attrs[vocab.WS_SUBPROTOCOL] = self.config.subprotocol(subprotocol)
            r_start = min(self.response_start or self.response_end, self.response_end)
            r_error = None if response.status == 101 else str(response.status)
            rec.span(
                vocab.WS_HANDSHAKE_RESPONSE,
                hs,
                max(r_start, start),
                self.response_end,
                r_attrs,
                error=r_error,
            )
            if self.recording:
                self.span.set_attribute(vocab.HTTP_RESPONSE_STATUS_CODE, response.status)
        if error is not None:
            hs.set_attribute(vocab.ERROR_TYPE, error)
            hs.set_status(Status(StatusCode.ERROR, error))
        hs.end(end_time=end)
        if self.accept_start and self.status:
            self._emit_accept()

    def _emit_accept(self) -> None:
        parent = self.accept_parent or self.app_span or self.span
        attrs: Attributes = dict(self.ws_code.get(vocab.WS_ACCEPT, {}))
        if self.status:
            attrs[vocab.HTTP_RESPONSE_STATUS_CODE] = self.status
        span = self.recorder.start(vocab.WS_ACCEPT, parent, self.accept_start, attrs)
        if self.accept_stack:
            span.add_event(
                vocab.EVENT_HANDSHAKE_STACK,
                stack_event_attributes(self.accept_stack),
                timestamp=self.accept_start,
            )
        span.end(end_time=max(self.response_end, self.accept_start))

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
                owner.record._flush_greeting(owner)
        elif self.recording:
            # A send from outside any handler (a background task): straight under its connection.
            self._emit_send(self.span, send, self)

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

    def _flush_greeting(self, greeting: Handling) -> None:
        """Emit a greeting phase's sends so far; the phase itself goes on."""
        sends, greeting.sends = greeting.sends, []
        explicit, greeting.explicit_broadcasts = greeting.explicit_broadcasts, []
        greeting.held = 0
        try:
            self._emit_message(
                Handling(self, None, sends=sends, explicit_broadcasts=explicit), time_ns()
            )
        except Exception as exc:
            errors.record("recorder.emit_message", exc)

    def _close_handling(self, at: int) -> None:
        handling = self.handling
        if handling is None or handling.closed:
            return
        handling.closed = True
        self.handling = None
        try:
            self._emit_message(handling, at)
        except Exception as exc:
            errors.record("recorder.emit_message", exc)

    # --- Emission of messages --------------------------------------------------------------

    def _emit_message(self, handling: Handling, end: int) -> None:
        if not handling.message_type:
            # The greeting phase (accept, initial sends): no received message to hang it under.
            if self.recording:
                parent = self.app_span or self.span
                self._emit_sends(parent, handling.sends, owner_record=self)
                self._emit_explicit_broadcasts(parent, handling)
            return
        if not self.recording and self.config.message_sampling == "inherit":
            return
        rec = self.recorder
        message = handling.message
        self.messages_seen += 1
        index = self.messages_seen
        start = message.first_arrival if message else handling.delivered_at
        start = min(start, handling.delivered_at or start)
        own_trace = (
            self.config.shape == vocab.SHAPE_MESSAGE or index > self.config.max_messages_per_trace
        )
        attrs: Attributes = {
            **self.ws_code.get(vocab.WS_MESSAGE_RECEIVE, {}),
            vocab.WS_MESSAGE_TYPE: handling.message_type,
            vocab.WS_MESSAGE_SIZE: handling.size,
            vocab.MESSAGE_INDEX: index,
            vocab.CONNECTION_ID: self.id,
        }
        if message is not None:
            ready = message.complete_at
            asked = handling.asked_at
            attrs[vocab.WS_MESSAGE_FRAMES] = len(message.frames) + message.frames_dropped
            attrs[vocab.QUEUE_WAIT_NS] = max(0, asked - ready) if asked > ready else 0
            if message.frames_dropped:
                attrs[vocab.FRAMES_DROPPED] = message.frames_dropped
        attrs[vocab.HANDLER_NS] = max(0, end - handling.delivered_at)
        attrs[vocab.DELIVERED_NS] = max(0, handling.delivered_at - start)
        if handling.sends_dropped:
            attrs["wstrace.sends.dropped"] = handling.sends_dropped
        if own_trace:
            links = [Link(self.span_context, {"wstrace.link": "handshake"})]
            parent = None
            if (
                index > self.config.max_messages_per_trace
                and self.config.shape != vocab.SHAPE_MESSAGE
            ):
                attrs[vocab.MESSAGES_OVERFLOWED] = True
        else:
            links = None
            parent = self.span
        span = rec.start(vocab.WS_MESSAGE_RECEIVE, parent, start, attrs, links, SpanKind.SERVER)
        if not span.is_recording():
            span.end(end_time=end)
            return
        if message is not None:
            self._emit_frames(span, vocab.WS_FRAME_RECEIVE, message.frames)
        self._emit_sends(span, handling.sends, owner_record=self)
        self._emit_explicit_broadcasts(span, handling)
        span.end(end_time=max(end, start))

    def _emit_frames(self, parent: Any, name: str, frames: Iterable[FrameRecord]) -> None:
        mode = self.config.frames
        if mode == vocab.FRAMES_OFF:
            return
        redactor = self.config.redact_payload
        code = self.ws_code.get(name, {})
        for record in frames:
            attrs = frame_attributes(record.frame, redactor)
            if mode == vocab.FRAMES_SPANS:
                self.recorder.span(name, parent, record.start, record.end, {**code, **attrs})
            else:
                parent.add_event(name, attrs, timestamp=record.start)

    def _emit_sends(
        self, parent: Any, sends: list[SendRecord], *, owner_record: ConnectionRecord
    ) -> None:
        """Sends of one handling; runs to other connections become ``ws.broadcast`` spans."""
        for group in _group_fan_out(sends, owner_record):
            if len(group) == 1 and group[0].recipient is owner_record:
                self._emit_send(parent, group[0], owner_record)
                continue
            owner_record.emit_broadcast(
                parent, group[0].start, group[-1].end, group, detected="automatic"
            )

    def _emit_explicit_broadcasts(self, parent: Any, handling: Handling) -> None:
        for start, end, sends in handling.explicit_broadcasts:
            self.emit_broadcast(parent, start, end, sends, detected="explicit")

    def emit_broadcast(
        self, parent: Any, start: int, end: int, sends: list[SendRecord], *, detected: str
    ) -> None:
        links = None
        if parent is None:  # a broadcast from outside any connection's handler
            links = [Link(s.recipient.span_context, {"wstrace.link": "recipient"}) for s in sends]
        broadcast = self.recorder.start(
            vocab.WS_BROADCAST,
            parent,
            start,
            {
                vocab.BROADCAST_RECIPIENTS: len(sends),
                vocab.CONNECTION_ID: self.id,
                "wstrace.broadcast.detected": detected,
            },
            links,
        )
        for send in sends:
            self._emit_send(broadcast, send, self)
        broadcast.end(end_time=max([end, start, *(s.end for s in sends)]))

    def _emit_send(self, parent: Any, send: SendRecord, owner: ConnectionRecord) -> None:
        recipient = send.recipient
        attrs: Attributes = {
            **recipient.ws_code.get(vocab.WS_MESSAGE_SEND, {}),
            vocab.WS_MESSAGE_TYPE: send.message_type,
            vocab.WS_MESSAGE_SIZE: send.size,
            vocab.WS_MESSAGE_FRAMES: len(send.frames),
            vocab.CONNECTION_ID: recipient.id,
        }
        links = None
        if recipient is not owner:
            links = [Link(recipient.span_context, {"wstrace.link": "recipient"})]
        span = self.recorder.start(vocab.WS_MESSAGE_SEND, parent, send.start, attrs, links)
        if send.error:
            span.set_attribute(vocab.ERROR_TYPE, send.error)
            span.set_status(Status(StatusCode.ERROR, send.error))
        recipient._emit_frames(span, vocab.WS_FRAME_SEND, send.frames)
        span.end(end_time=max(send.end, send.start))

    def _emit_control_frame(self, name: str, record: FrameRecord) -> None:
        if not self.recording:
            return
        try:
            self._emit_frames(self.span, name, [record])
        except Exception as exc:
            errors.record("recorder.emit_control_frame", exc)

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
                self._emit_undelivered(at)
                self._emit_close()
                for when, error in self.wire_errors:
                    name, attrs = error_event(error)
                    self.span.add_event(name, attrs, timestamp=when)
                if self.wire_errors_dropped:
                    self.span.set_attribute(
                        "wstrace.protocol_errors.dropped", self.wire_errors_dropped
                    )
        except Exception as exc:
            errors.record("recorder.finish", exc)
        finally:
            self._step(Event.FINISH)
            self.guard.detach()
            self.recorder.open_records.discard(self)
            if self.lost_error:
                self.span.set_attribute(vocab.ERROR_TYPE, self.lost_error)
            self.span.set_attribute(vocab.WS_CLOSE_CODE, self._effective_close_code())
            self.span.end(end_time=max(at, self.lost_at))

    def _effective_close_code(self) -> int:
        if self.close_initiator is None:
            return ABNORMAL_CLOSURE
        return self.close_code if self.close_code is not None else NO_STATUS_RCVD

    def _emit_undelivered(self, at: int) -> None:
        pending = list(self.completed)
        if self.assembling is not None:
            pending.append(self.assembling)
        for message in pending:
            attrs: Attributes = {
                **self.ws_code.get(vocab.WS_MESSAGE_RECEIVE, {}),
                vocab.WS_MESSAGE_FRAMES: len(message.frames) + message.frames_dropped,
                vocab.WS_MESSAGE_TYPE: opcode_name(message.opcode),
                vocab.CONNECTION_ID: self.id,
            }
            if message.frames_dropped:
                attrs[vocab.FRAMES_DROPPED] = message.frames_dropped
            span = self.recorder.start(
                vocab.WS_MESSAGE_RECEIVE, self.span, message.first_arrival, attrs
            )
            self._emit_frames(span, vocab.WS_FRAME_RECEIVE, message.frames)
            span.set_attribute(vocab.ERROR_TYPE, "undelivered")
            span.set_status(Status(StatusCode.ERROR, "message not delivered to the app"))
            span.end(end_time=max(at, message.first_arrival))
        self.completed.clear()
        self.assembling = None

    def _emit_close(self) -> None:
        if self.status != 101:
            return
        code = self._effective_close_code()
        initiator = self.close_initiator or vocab.INITIATOR_NONE
        start = self.close_start or self.lost_at
        attrs: Attributes = {
            **self.ws_code.get(vocab.WS_CLOSE, {}),
            vocab.WS_CLOSE_CODE: code,
            vocab.WS_CLOSE_INITIATOR: initiator,
        }
        if self.close_reason:
            attrs[vocab.WS_CLOSE_REASON] = self.close_reason
        span = self.recorder.start(vocab.WS_CLOSE, self.span, start, attrs)
        for side, record in self.close_frames:
            name = vocab.WS_FRAME_RECEIVE if side == vocab.INITIATOR_CLIENT else vocab.WS_FRAME_SEND
            self._emit_frames(span, name, [record])
        if code == ABNORMAL_CLOSURE:
            span.set_attribute(vocab.ERROR_TYPE, "abnormal-closure")
        span.end(end_time=max(self.lost_at, start))


def _group_fan_out(sends: list[SendRecord], owner: ConnectionRecord) -> Iterable[list[SendRecord]]:
    """Split a handling's sends into single sends and fan-out runs.

    A run is a maximal sequence of sends to distinct connections that includes at least one
    connection other than the one whose message is being handled: the shape of a broadcast
    loop.  Sends to the owner alone stay single.
    """
    run: list[SendRecord] = []
    seen: set[int] = set()

    def flush() -> Iterable[list[SendRecord]]:
        if any(s.recipient is not owner for s in run):
            yield list(run)
        else:
            for s in run:
                yield [s]

    for send in sends:
        rid = id(send.recipient)
        if rid in seen:
            yield from flush()
            run.clear()
            seen.clear()
        run.append(send)
        seen.add(rid)
    if run:
        yield from flush()


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
