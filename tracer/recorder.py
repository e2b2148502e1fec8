"""Turns stage boundaries reported by the hooks into OpenTelemetry spans.

One :class:`ConnectionRecord` per upgraded connection.  The hooks call its ``on_*`` methods
with timestamps; those methods only store numbers and small tuples (the hot path).  Spans are
built in batches at natural boundaries — when the handshake is over, when the app has finished
handling a message, when the connection is gone — with explicit start and end times, so every
span is complete, correctly parented and strictly nested when it reaches the exporter.

Two kinds of span live here: ``ws.connection`` and ``asgi.app`` are started for real when they
begin (other layers, such as :class:`tracer.TracingMiddleware`, need their context while they
run); everything else is built after the fact from the recorded timestamps.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracer import vocab
from tracer._contain import errors
from tracer.config import TracerConfig
from tracer.wire import (
    Frame,
    FrameDecoder,
    ProtocolError,
    RequestHead,
    RequestHeadDecoder,
    ResponseHead,
    ResponseHeadDecoder,
    check_accept,
)

Attributes = dict[str, Any]

# Bounds on what one connection may hold in memory, whatever its peer sends.
_MAX_PENDING_MESSAGES = 1024
"""Complete messages waiting for the app's receive()."""
_MAX_WIRE_ERRORS = 64
"""Protocol errors kept per connection (the rest are counted)."""
_MAX_EARLY_BYTES = 65536
"""Bytes pipelined before the 101 kept for decoding once the extensions are known."""
_MAX_CLOSE_FRAMES = 8
_MAX_SENDS_PER_MESSAGE = 4096
"""Sends kept per handled message; beyond, they are counted, not traced."""
_GREETING_FLUSH = 64
"""Sends made before the first received message are flushed in batches of this size, so a
push-only app (one that never receives) keeps a bounded record."""
_TRACER_DIR = __file__.rsplit("/", 1)[0] + "/"


def stack_entry(function: Any) -> tuple[str, str, int] | None:
    """A function as a handshake-stack row: (qualified name, file, first line)."""
    function = getattr(function, "__wrapped__", function)
    code = getattr(function, "__code__", None)
    if code is None:
        return None
    return getattr(function, "__qualname__", code.co_name), code.co_filename, code.co_firstlineno


def code_attributes(function: Any) -> Attributes:
    """``code.*`` attributes of the installed function that does a stage's work."""
    function = getattr(function, "__wrapped__", function)
    code = getattr(function, "__code__", None)
    if code is None:
        return {}
    module = getattr(function, "__module__", "") or ""
    qualname = getattr(function, "__qualname__", code.co_name)
    return {
        vocab.CODE_FUNCTION_NAME: f"{module}.{qualname}" if module else qualname,
        vocab.CODE_FILE_PATH: code.co_filename,
        vocab.CODE_LINE_NUMBER: code.co_firstlineno,
    }


# --- What the hooks record ---------------------------------------------------------------------


@dataclass(slots=True)
class HttpStages:
    """Timestamps the HTTP-layer hooks collect before a request turns out to be an upgrade."""

    connection_made: int
    parse_start: int = 0
    parse_end: int = 0
    detect_start: int = 0
    detect_end: int = 0
    switch_start: int = 0
    switch_end: int = 0
    head_bytes: list[bytes] = field(default_factory=list)
    head_size: int = 0
    head_complete: bool = False


@dataclass(slots=True)
class FrameRecord:
    start: int
    end: int
    frame: Frame


@dataclass(slots=True)
class InMessage:
    """A data message assembled from client frames, waiting to be delivered to the app."""

    first_arrival: int
    frames: list[FrameRecord]
    opcode: int
    complete_at: int = 0
    frames_dropped: int = 0


@dataclass(slots=True)
class SendRecord:
    """One ASGI send to one connection, and the frames it put on that connection's wire."""

    start: int
    recipient: ConnectionRecord
    message_type: str
    size: int
    end: int = 0
    frames: list[FrameRecord] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class Handling:
    """A connection's app task between two ``receive()`` calls.

    ``message`` is ``None`` before the first data message (the app is accepting and greeting).
    Sends made while a handling is open belong to it; sends to other connections are fan-out.
    """

    record: ConnectionRecord
    message: InMessage | None
    asked_at: int = 0
    delivered_at: int = 0
    size: int = 0
    message_type: str = ""
    sends: list[SendRecord] = field(default_factory=list)
    explicit_broadcasts: list[tuple[int, int, list[SendRecord]]] = field(default_factory=list)
    sends_dropped: int = 0
    closed: bool = False


_handling: contextvars.ContextVar[Handling | None] = contextvars.ContextVar(
    "wstrace_handling", default=None
)
_explicit_broadcast: contextvars.ContextVar[list[SendRecord] | None] = contextvars.ContextVar(
    "wstrace_broadcast", default=None
)


def current_handling() -> Handling | None:
    return _handling.get()


# --- The recorder -------------------------------------------------------------------------------


class Recorder:
    """Process-wide: owns the OpenTelemetry tracer and every open connection record."""

    def __init__(self, tracer_provider: Any = None, config: TracerConfig | None = None) -> None:
        from tracer import __version__

        self.config = config or TracerConfig()
        self.tracer = trace.get_tracer(
            vocab.INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        self._sdk = SdkParts.of(self.tracer)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.open_records: weakref.WeakSet[ConnectionRecord] = weakref.WeakSet()
        self.stats = {"connections": 0, "frames_dropped": 0, "messages_dropped": 0}

    def next_connection_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def new_connection(self, **kwargs: Any) -> ConnectionRecord:
        record = ConnectionRecord(self, **kwargs)
        self.open_records.add(record)
        self.stats["connections"] += 1
        return record

    def flush_open(self) -> None:
        """End every span of connections still open (used when uninstrumenting)."""
        now = time_ns()
        for record in list(self.open_records):
            try:
                record.force_finish(now)
            except Exception as exc:
                errors.record("recorder.flush_open", exc)

    # Span building helpers: the only place spans are made.

    def start(
        self,
        name: str,
        parent: Any,
        start: int,
        attributes: Attributes | None = None,
        links: Sequence[Link] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Any:
        """Start a span at a past time ``start``; the caller ends it with an explicit time.

        Roots go through the SDK's tracer (its sampler decides).  Children of a recording span
        are :class:`PendingSpan`: the same finished span reaches the same processors, without
        the SDK's per-span machinery (context objects, sampler call, locks) on this path.
        """
        sdk = self._sdk
        if sdk is not None:
            if parent is not None:
                parent_context = parent.get_span_context()
                if not parent.is_recording():
                    return trace.NonRecordingSpan(parent_context)
                context = trace.SpanContext(
                    parent_context.trace_id,
                    sdk.new_span_id(),
                    False,
                    parent_context.trace_flags,
                    parent_context.trace_state,
                )
                return PendingSpan(
                    sdk, name, context, parent_context, start, attributes, links, kind
                )
            if links:  # a message's own trace
                inherit = self.config.message_sampling == "inherit"
                return sdk.root(name, start, attributes, links, kind, inherit)
        context = trace.set_span_in_context(parent) if parent is not None else _ROOT_CONTEXT
        return self.tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, links=links, start_time=start
        )

    def span(
        self,
        name: str,
        parent: Any,
        start: int,
        end: int,
        attributes: Attributes | None = None,
        links: Sequence[Link] | None = None,
        error: str | None = None,
    ) -> Any:
        span = self.start(name, parent, start, attributes, links)
        if error is not None:
            span.set_attribute(vocab.ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(end, start))
        return span


@dataclass(frozen=True, slots=True)
class SdkParts:
    """What an SDK tracer hands every span it makes: where finished spans go, and tags."""

    processor: Any
    resource: Any
    scope: Any
    new_span_id: Any
    new_trace_id: Any
    sampler: Any

    @classmethod
    def of(cls, tracer: Any) -> SdkParts | None:
        processor = getattr(tracer, "span_processor", None)
        generator = getattr(tracer, "id_generator", None)
        if processor is None or generator is None or not isinstance(tracer, sdk_trace.Tracer):
            return None  # a no-op or foreign tracer: use the API path
        sampler = getattr(tracer, "sampler", None)
        if sampler is None:
            return None
        return cls(
            processor,
            tracer.resource,
            getattr(tracer, "_instrumentation_scope", None),
            generator.generate_span_id,
            generator.generate_trace_id,
            sampler,
        )

    def root(
        self,
        name: str,
        start: int,
        attributes: Attributes | None,
        links: Sequence[Link],
        kind: SpanKind,
        inherit: bool = False,
    ) -> Any:
        """A new trace's root: sampled by the provider's sampler like any SDK root, or, with
        ``inherit``, as the trace its first link points to was (the connection's decision)."""
        trace_id = self.new_trace_id()
        trace_state = None
        if inherit:
            sampled = links[0].context.trace_flags.sampled
        else:
            result = self.sampler.should_sample(None, trace_id, name, kind, attributes, links)
            sampled = result.decision.is_sampled()
            trace_state = result.trace_state
            if sampled and result.attributes:
                attributes = {**(attributes or {}), **result.attributes}
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
        context = trace.SpanContext(trace_id, self.new_span_id(), False, flags, trace_state)
        if not sampled:
            return trace.NonRecordingSpan(context)
        return PendingSpan(self, name, context, None, start, attributes, links, kind)


class PendingSpan(trace.Span):
    """A child span recorded after the fact, finished into a ``ReadableSpan`` by :meth:`end`.

    It behaves as a span for everything that may touch it while it is open (attributes,
    events, status, being a parent in an OpenTelemetry context), and costs a small slotted
    object.  Its sampling follows its parent's, as the SDK's default ``ParentBased`` does.
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_events",
        "_kind",
        "_links",
        "_name",
        "_owned",
        "_parent",
        "_sdk",
        "_start",
        "_status",
    )

    def __init__(
        self,
        sdk: SdkParts,
        name: str,
        context: trace.SpanContext,
        parent: trace.SpanContext | None,
        start: int,
        attributes: Attributes | None,
        links: Sequence[Link] | None,
        kind: SpanKind,
    ) -> None:
        self._sdk = sdk
        self._name = name
        self._parent = parent
        self._context = context
        self._start = start
        # Shared until written: many spans (a chain layer, a frame's code.*) start from a
        # mapping that never changes, and an open span's weight counts per idle connection.
        self._attributes = attributes if attributes is not None else {}
        self._owned = attributes is None
        self._links = tuple(links) if links else ()
        self._events: list[sdk_trace.Event] = []
        self._kind = kind
        self._status = _UNSET

    def get_span_context(self) -> trace.SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._sdk is not None

    def _own(self) -> dict[str, Any]:
        if not self._owned:
            self._attributes = dict(self._attributes)
            self._owned = True
        return self._attributes

    def set_attribute(self, key: str, value: Any) -> None:
        self._own()[key] = value

    def set_attributes(self, attributes: Any) -> None:
        self._own().update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self._events.append(sdk_trace.Event(name, attributes, timestamp or time_ns()))

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        if isinstance(status, Status):
            self._status = status
        else:
            self._status = Status(status, description)

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self.add_event("exception", {"exception.type": type(exception).__name__})

    def end(self, end_time: int | None = None) -> None:
        sdk = self._sdk
        if sdk is None:
            return  # ended already
        self._sdk = None
        sdk.processor.on_end(
            sdk_trace.ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=sdk.resource,
                attributes=self._attributes,
                events=self._events,
                links=self._links,
                kind=self._kind,
                status=self._status,
                start_time=self._start,
                end_time=end_time if end_time is not None else time_ns(),
                instrumentation_scope=sdk.scope,
            )
        )


_UNSET = Status(StatusCode.UNSET)
_ROOT_CONTEXT = trace.set_span_in_context(trace.INVALID_SPAN)


def _frame_attributes(frame: Frame, preview_redactor: Any = None) -> Attributes:
    attributes: Attributes = {
        vocab.WS_FIN: frame.fin,
        vocab.WS_RSV: frame.rsv,
        vocab.WS_OPCODE: frame.opcode,
        vocab.WS_OPCODE_NAME: frame.opcode_name,
        vocab.WS_MASK: frame.masked,
        vocab.WS_PAYLOAD_LENGTH: frame.payload_length,
        vocab.WS_HEADER_LENGTH: frame.header_length,
        vocab.FRAME_OFFSET: frame.offset,
    }
    if frame.masking_key is not None:
        attributes[vocab.WS_MASKING_KEY] = frame.masking_key.hex()
    if frame.close_code is not None:
        attributes[vocab.WS_CLOSE_CODE] = frame.close_code
    if frame.close_reason is not None:
        attributes[vocab.WS_CLOSE_REASON] = frame.close_reason
    if frame.preview is not None:
        preview = preview_redactor(frame.preview) if preview_redactor else frame.preview
        attributes[vocab.WS_PAYLOAD_PREVIEW] = preview.decode("utf-8", "backslashreplace")
    return attributes


def _error_event(error: ProtocolError) -> tuple[str, Attributes]:
    attributes: Attributes = {
        vocab.PROTOCOL_ERROR_KIND: error.kind,
        vocab.PROTOCOL_ERROR_OFFSET: error.offset,
    }
    if error.detail:
        attributes["wstrace.protocol_error.detail"] = error.detail
    return vocab.EVENT_PROTOCOL_ERROR, attributes


_SKIP = ("", "", 0)
_stack_rows: dict[tuple[Any, int], tuple[str, str, int]] = {}


def capture_stack(skip: int = 1) -> list[tuple[str, str, int]]:
    """The live Python stack, outermost first, without wstrace's own frames.

    Coroutine frames chain through ``f_back`` while they run, so inside the server's
    ``send`` this walks the whole ASGI chain up to the event loop's ``_run``.
    """
    frames: list[tuple[str, str, int]] = []
    frame = sys._getframe(skip)
    while frame is not None:
        code = frame.f_code
        key = (code, frame.f_lasti)
        row = _stack_rows.get(key)
        if row is None:
            # f_lineno decodes the line table: costly, and the same few hundred call sites
            # recur on every handshake, so each is worked out once.
            if code.co_filename.startswith(_TRACER_DIR):
                row = _SKIP
            else:
                row = (getattr(code, "co_qualname", code.co_name), code.co_filename, frame.f_lineno)
            if len(_stack_rows) < 4096:
                _stack_rows[key] = row
        if row is not _SKIP:
            frames.append(row)
        frame = frame.f_back
    frames.reverse()
    return frames


class ConnectionRecord:
    """Everything recorded about one upgraded connection, and the spans made from it.

    Slotted: one lives as long as its connection, idle ones included (see the memory bar).
    """

    __slots__ = (
        "__weakref__",
        "accept_parent",
        "accept_stack",
        "accept_start",
        "app_done",
        "app_end",
        "app_span",
        "app_started",
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
        "finished",
        "handling",
        "handshake_emitted",
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
        "path",
        "pre_handshake_bytes",
        "recorder",
        "recording",
        "rejected_by_app",
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
        self.wire_errors: list[tuple[int, ProtocolError]] = []
        self.wire_errors_dropped = 0

        # Handshake.
        self.handshake_start = 0
        self.handshake_end = 0
        self.handshake_error: str | None = None
        self.validations: list[tuple[int, int, str | None]] = []
        self.response_start = 0
        self.response_end = 0
        self.handshake_emitted = False
        self.accept_start = 0
        self.accept_stack: list[tuple[str, str, int]] | None = None
        self.accept_parent: Any = None
        self.rejected_by_app = False

        # App.
        self.app_span: Any = None
        self.app_started = False
        self.app_done = False
        self.app_end = 0

        # Messages.
        self.assembling: InMessage | None = None
        self.completed: deque[InMessage] = deque()
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
        self.finished = False

    # --- Wire: bytes in and out ------------------------------------------------------------

    def on_bytes_in(self, start: int, data: bytes) -> list[FrameRecord] | None:
        """Bytes from the client, decoded before the protocol sees them.

        Returns the frames they completed; :meth:`on_bytes_in_done` stamps their end once the
        protocol has processed the chunk, so a frame span covers the server's work on it.
        """
        if self.finished:
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
            room = _MAX_EARLY_BYTES - len(self.pre_handshake_bytes)
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
            if record.frame.opcode in (9, 10):
                self._emit_control_frame(vocab.WS_FRAME_RECEIVE, record)

    def on_bytes_out(self, start: int, end: int, data: bytes) -> None:
        if self.finished:
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

    def _on_response(self, start: int, end: int, head: ResponseHead) -> None:
        self.response = head
        if not self.response_start:
            self.response_start = start
        self.response_end = end
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
        if opcode in (1, 2) or (opcode == 0 and self.assembling is not None):
            message = self.assembling
            if opcode != 0 or message is None:
                message = self.assembling = InMessage(record.start, [], opcode)
            if len(message.frames) < self.config.max_frames_per_message:
                message.frames.append(record)
            else:
                message.frames_dropped += 1
            if frame.fin:
                message.complete_at = record.start
                self.assembling = None
                if len(self.completed) >= _MAX_PENDING_MESSAGES:
                    self.completed.popleft()
                    self.recorder.stats["messages_dropped"] += 1
                self.completed.append(message)
        elif opcode == 8:
            self._on_close_frame(vocab.INITIATOR_CLIENT, record)

    def _on_server_frame(self, record: FrameRecord) -> None:
        if record.frame.opcode == 8:
            self._on_close_frame(vocab.INITIATOR_SERVER, record)
            return
        send = self.current_send
        if send is not None and record.frame.opcode in (0, 1, 2):
            send.frames.append(record)
        else:
            self._emit_control_frame(vocab.WS_FRAME_SEND, record)

    def _wire_error(self, at: int, error: ProtocolError) -> None:
        if len(self.wire_errors) < _MAX_WIRE_ERRORS:
            self.wire_errors.append((at, error))
        else:
            self.wire_errors_dropped += 1

    def _on_close_frame(self, side: str, record: FrameRecord) -> None:
        if len(self.close_frames) < _MAX_CLOSE_FRAMES:
            self.close_frames.append((side, record))
        if self.close_initiator is None:
            self.close_initiator = side
            self.close_start = record.start
            self.close_code = record.frame.close_code
            self.close_reason = record.frame.close_reason

    # --- Handshake -------------------------------------------------------------------------

    def on_handshake_start(self, at: int) -> None:
        if not self.handshake_start or at < self.handshake_start:
            self.handshake_start = at

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
        self._maybe_emit_handshake()

    def _maybe_emit_handshake(self, force: bool = False) -> None:
        """Emit the handshake spans once: when it has ended and its response is on the wire."""
        if self.handshake_emitted:
            return
        if not force and (not self.handshake_end or self.response is None):
            return
        self.handshake_emitted = True
        if self.recording:
            try:
                self._emit_handshake()
            except Exception as exc:
                errors.record("recorder.emit_handshake", exc)
        # What only the handshake spans needed: let it go for the rest of the connection's life.
        self.http = None
        self.request = None
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
                r_attrs[vocab.WS_SUBPROTOCOL] = subprotocol
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
        if self.accept_start and self.response is not None:
            self._emit_accept()

    def _emit_accept(self) -> None:
        parent = self.accept_parent or self.app_span or self.span
        attrs: Attributes = dict(self.ws_code.get(vocab.WS_ACCEPT, {}))
        if self.response is not None:
            attrs[vocab.HTTP_RESPONSE_STATUS_CODE] = self.response.status
        span = self.recorder.start(vocab.WS_ACCEPT, parent, self.accept_start, attrs)
        if self.accept_stack:
            functions, files, lines = zip(*self.accept_stack, strict=True)
            span.add_event(
                vocab.EVENT_HANDSHAKE_STACK,
                {
                    vocab.STACK_FUNCTIONS: list(functions),
                    vocab.STACK_FILES: list(files),
                    vocab.STACK_LINES: list(lines),
                },
                timestamp=self.accept_start,
            )
        span.end(end_time=max(self.response_end, self.accept_start))

    # --- The app ---------------------------------------------------------------------------

    def claim(self) -> None:
        """Mark the running app task as owned by the server layer (an inert connection)."""
        _handling.set(Handling(self, None))

    def on_app_start(self, at: int) -> Any:
        self.app_started = True
        if self.recording:
            attrs = {**self.ws_code.get(vocab.ASGI_APP, {}), vocab.URL_PATH: self.path or ""}
            self.app_span = self.recorder.start(vocab.ASGI_APP, self.span, at, attrs)
        greeting = Handling(self, None, asked_at=at)
        self.handling = greeting
        return _handling.set(greeting)

    def on_app_end(self, at: int, error: str | None) -> None:
        self.app_done = True
        self.app_end = at
        self._close_handling(at)
        if self.app_span is not None:
            if error is not None:
                self.app_span.set_attribute(vocab.ERROR_TYPE, error)
                self.app_span.set_status(Status(StatusCode.ERROR, error))
            self.app_span.end(end_time=at)
        if self.lost_at:
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
            current = trace.get_current_span()
            if current.get_span_context().trace_id == self.span_context.trace_id:
                self.accept_parent = current  # the innermost ASGI layer (TracingMiddleware)
            if self.config.handshake_stack and self.recording:
                # The server's send is being entered, not yet running: it is the innermost frame.
                self.accept_stack = capture_stack()
                if self.send_frame is not None:
                    self.accept_stack.append(self.send_frame)
        elif kind == "websocket.close" and self.response is None:
            self.rejected_by_app = True
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
            if len(owner.sends) >= _MAX_SENDS_PER_MESSAGE:
                owner.sends_dropped += 1
                return
            owner.sends.append(send)
            if not owner.message_type and len(owner.sends) >= _GREETING_FLUSH:
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
        incoming = self.completed.popleft() if self.completed else None
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
            attrs = _frame_attributes(record.frame, redactor)
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
        if self.lost_at:
            return
        self.lost_at = at
        if exc is not None:
            self.lost_error = type(exc).__name__
        if self.client_frames is not None:
            for item in self.client_frames.eof():
                self._wire_error(at, item)
        if not self.app_started or self.app_done:
            self._finish(max(at, self.app_end))

    def force_finish(self, at: int) -> None:
        if not self.lost_at:
            self.lost_at = at
        if self.app_span is not None and not self.app_done:
            self.app_done = True
            self._close_handling(at)
            self.app_span.end(end_time=at)
        self._finish(at)

    def _finish(self, at: int) -> None:
        if self.finished:
            return
        try:
            self._close_handling(at)
            self._maybe_emit_handshake(force=True)
            if self.recording:
                self._emit_undelivered(at)
                self._emit_close()
                for when, error in self.wire_errors:
                    name, attrs = _error_event(error)
                    self.span.add_event(name, attrs, timestamp=when)
                if self.wire_errors_dropped:
                    self.span.set_attribute(
                        "wstrace.protocol_errors.dropped", self.wire_errors_dropped
                    )
        except Exception as exc:
            errors.record("recorder.finish", exc)
        finally:
            self.finished = True
            self.recorder.open_records.discard(self)
            if self.lost_error:
                self.span.set_attribute(vocab.ERROR_TYPE, self.lost_error)
            self.span.set_attribute(vocab.WS_CLOSE_CODE, self._effective_close_code())
            self.span.end(end_time=max(at, self.lost_at))

    def _effective_close_code(self) -> int:
        if self.close_initiator is None:
            return 1006
        return self.close_code if self.close_code is not None else 1005

    def _emit_undelivered(self, at: int) -> None:
        pending = list(self.completed)
        if self.assembling is not None:
            pending.append(self.assembling)
        for message in pending:
            attrs: Attributes = {
                **self.ws_code.get(vocab.WS_MESSAGE_RECEIVE, {}),
                vocab.WS_MESSAGE_FRAMES: len(message.frames),
                vocab.WS_MESSAGE_TYPE: vocab.OPCODE_NAMES.get(message.opcode, "unknown"),
                vocab.CONNECTION_ID: self.id,
            }
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
        if self.response is None or self.response.status != 101:
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
        if code == 1006:
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


@contextlib.contextmanager
def server_broadcast() -> Iterator[None]:
    """The server-hooks half of :func:`tracer.broadcast`: collect the block's sends."""
    sends: list[SendRecord] = []
    token = _explicit_broadcast.set(sends)
    started = time_ns()
    try:
        yield
    finally:
        _explicit_broadcast.reset(token)
        try:
            _collect_broadcast(started, time_ns(), sends)
        except Exception as exc:
            errors.record("recorder.broadcast", exc)


def _collect_broadcast(started: int, ended: int, sends: list[SendRecord]) -> None:
    if not sends:
        return
    handling = _handling.get()
    if handling is not None and not handling.closed:
        handling.explicit_broadcasts.append((started, ended, sends))
        return
    owner = sends[0].recipient
    if owner.recording:
        owner.emit_broadcast(None, started, ended, sends, detected="explicit")
