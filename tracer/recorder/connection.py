"""One upgraded connection: the facts the hooks report, in the order its phases allow.

The record decides *when* spans are made (its phase, :mod:`tracer.recorder.phase`); what they
are is the emitters' business (:mod:`tracer.recorder.emit`).
"""

from __future__ import annotations

from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from tracer import vocab
from tracer._contain import errors
from tracer.recorder.abandoned import guard
from tracer.recorder.app_side import ACCEPT_RUNNING, AppSide
from tracer.recorder.asgi_side import AsgiSide
from tracer.recorder.emit.batches import emit_handled
from tracer.recorder.emit.close import emit_close, emit_wire_errors, end_connection
from tracer.recorder.emit.handshake import emit_accept, emit_handshake
from tracer.recorder.emit.messages import emit_undelivered
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
from tracer.recorder.records import Attributes, HttpStages
from tracer.recorder.wire_side import WireSide

if TYPE_CHECKING:
    from tracer.recorder import Recorder

# Phases as plain ints: the checks on the hot path are int comparisons.
_HTTP = int(Phase.HTTP)
_OPEN = int(Phase.OPEN)
_FINISHED = int(Phase.FINISHED)
_ORPHANED = int(AppPhase.ORPHANED)
_RUNNING = (int(AppPhase.RUNNING), _ORPHANED)
_HAPPENED = 1
"""A handshake timestamp once its spans are out: true (it happened), and a small int, which
Python does not allocate."""
_NO_CODE: dict[str, Attributes] = {}
"""No ``code.*`` attributes per stage: the middleware alone cannot see the server's code."""


class ConnectionRecord(WireSide, AppSide, AsgiSide):
    """Everything recorded about one upgraded connection, and when its spans are made.

    The wire's facts are gathered by :class:`~tracer.recorder.wire_side.WireSide`, the app's
    by :class:`~tracer.recorder.app_side.AppSide`; this class holds their slots, the
    connection's identity and span, the handshake's timestamps, the phases and the end.

    ``source`` says who reports the facts: the server hooks (``server``), or the middleware
    alone (``asgi``: :class:`~tracer.recorder.asgi_side.AsgiSide` turns the ASGI messages into
    the facts the hooks would have reported, and there is no wire side).

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
        "handled",
        "handling",
        "handshake_end",
        "handshake_ends_on_response",
        "handshake_error",
        "handshake_start",
        "held_request",
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
        "source",
        "span",
        "span_context",
        "started",
        "status",
        "subprotocol",
        "template_head",
        "validations",
        "wire_errors",
        "wire_errors_dropped",
        "ws_code",
    )

    def __init__(
        self,
        recorder: Recorder,
        *,
        impl_http: str = "",
        impl_ws: str = "",
        http: HttpStages | None = None,
        http_code: dict[str, Attributes] | None = None,
        ws_code: dict[str, Attributes] | None = None,
        transport: Any = None,
        handshake_ends_on_response: bool = False,
        send_frame: tuple[str, str, int] | None = None,
        source: str = vocab.SOURCE_SERVER,
        peer: Attributes | None = None,
    ) -> None:
        """``transport`` (under the hooks) or ``peer`` (the middleware alone: attributes read
        from the ASGI scope) say who is at each end."""
        self.recorder = recorder
        self.config = recorder.config
        self.id = recorder.next_connection_id()
        self.source = source
        self.impl_http = impl_http
        self.impl_ws = impl_ws
        self.http = http
        self.http_code = http_code or _NO_CODE
        self.ws_code = ws_code or _NO_CODE
        self.handshake_ends_on_response = handshake_ends_on_response
        self.send_frame = send_frame
        self.started = http.connection_made if http is not None else time_ns()

        self._open_span(self._connection_attributes(transport, peer))
        self.init_wire()
        self.init_app()
        self.subprotocol: str | None = None
        """The subprotocol an ASGI ``websocket.accept`` chose (the middleware alone)."""

        # Handshake.
        self.handshake_start = 0
        self.handshake_end = 0
        self.handshake_error: str | None = None
        self.validations: list[tuple[int, int, str | None]] | tuple[()] = ()
        self.response_start = 0
        self.response_end = 0

        # The end.
        self.lost_at = 0
        self.lost_error: str | None = None
        self.phase = _HTTP
        """Where the connection is (:class:`~tracer.recorder.phase.Phase`)."""

    def _open_span(self, attributes: Attributes) -> None:
        """``ws.connection``, started when the connection was made: the sampler decides here
        for everything this connection records."""
        self.span = self.recorder.start(
            vocab.CONNECTION, None, self.started, attributes, kind=SpanKind.SERVER
        )
        self.recording = self.span.is_recording()
        self.open_spans = [self.span]
        self.guard = guard(self, self.open_spans)  # ends them if the server forgets us
        self.span_context = self.span.get_span_context()
        self.template_head: tuple[Any, ...] | None = None
        """What its messages' templates take of the connection (see emit.templates)."""
        self.inert = not self.recording and (
            self.config.shape == vocab.SHAPE_CONNECTION or self.config.message_sampling == "inherit"
        )
        """Nothing of this connection will be recorded: the hooks step aside."""

    def _connection_attributes(self, transport: Any, peer: Attributes | None) -> Attributes:
        attributes: Attributes = {vocab.NETWORK_PROTOCOL_NAME: "websocket"}
        if self.source == vocab.SOURCE_SERVER:
            attributes[vocab.NETWORK_TRANSPORT] = "tcp"
            attributes[vocab.IMPL_HTTP] = self.impl_http
            attributes[vocab.IMPL_WS] = self.impl_ws
        attributes[vocab.CONNECTION_ID] = self.id
        attributes[vocab.SOURCE] = self.source
        attributes.update(self.http_code.get(vocab.CONNECTION, {}))
        attributes.update(peer if peer is not None else _address_attributes(transport))
        return attributes

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

    # --- Handshake -------------------------------------------------------------------------

    def on_handshake_start(self, at: int) -> None:
        if not self.handshake_start or at < self.handshake_start:
            self.handshake_start = at
        self._step(Event.REQUEST)

    def on_validate(self, start: int, end: int, error: str | None) -> None:
        if type(self.validations) is tuple:
            self.validations = []
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
        if self.held_request is not None:
            self.release_request()
        if self.recording:
            errors.call("recorder.emit_handshake", emit_handshake, self)
        # What only the handshake spans needed: let it go for the rest of the connection's life.
        self.http = None
        self.request = None
        self.response = None
        self.validations = ()
        # Its timestamps are ints of their own: from now on, only whether each happened counts.
        if self.handshake_start:
            self.handshake_start = _HAPPENED
        if self.handshake_end:
            self.handshake_end = _HAPPENED
        if self.response_start:
            self.response_start = _HAPPENED
        if self.accept_stack is not ACCEPT_RUNNING:
            self.accept_over()
        # else the accept's send has yet to return: ws.accept goes out then (on_accept_exit)

    def accept_over(self) -> None:
        """``ws.accept`` (when the app accepted and was answered), after the handshake's spans;
        then what only it needed goes."""
        if self.recording and self.accept_start and self.status:
            errors.call("recorder.emit_handshake", emit_accept, self)
        self.accept_stack = None
        self.accept_parent = None
        if self.response_end:
            self.response_end = _HAPPENED
        if self.accept_start:
            self.accept_start = _HAPPENED

    def _accept_unreturned(self) -> None:
        """The record is finished while the app's accept is still being sent: ``ws.accept``
        goes out now, without what its send's return would have read (the stack)."""
        if self.accept_stack is ACCEPT_RUNNING:
            self.accept_stack = None
            if self.phase >= _OPEN:  # else with the handshake's spans (_handshake_over)
                self.accept_over()

    # --- The end ---------------------------------------------------------------------------

    def on_lost(self, at: int, exc: BaseException | None) -> None:
        if self.phase == _FINISHED or self.app_phase == _ORPHANED:
            return  # lost already (or finished by uninstrument())
        if self.held_request is not None:
            self.release_request()
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
            self._accept_unreturned()  # under the app, while its span is open
            self.app_span.end(end_time=at)
        self._finish(at)

    def _finish(self, at: int) -> None:
        if self.phase == _FINISHED:
            return
        try:
            if self.held_request is not None:
                self.release_request()
            self._close_handling(at)
            emit_handled(self)  # its messages, before its close and its end
            self._accept_unreturned()
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
