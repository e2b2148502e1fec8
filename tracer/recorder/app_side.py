"""A connection as its ASGI app drives it: the app task's life, its sends and receives, and
the *handling* they delimit (what the app did between two ``receive()`` calls), which is
emitted as one message once the next receive starts (with the next batch:
:mod:`~tracer.recorder.emit.batches`).

One side of :class:`~tracer.recorder.connection.ConnectionRecord` (a mixin: the record holds
every slot, so a connection stays one small object).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from tracer import vocab
from tracer._contain import errors
from tracer.chain import LAYER_CODES, innermost_span
from tracer.recorder.emit.batches import defer_message, emit_handled, may_wait
from tracer.recorder.emit.messages import emit_message, emit_send, flush_greeting
from tracer.recorder.phase import AppEvent, AppPhase, Phase
from tracer.recorder.records import (
    GREETING_FLUSH,
    MAX_SENDS_PER_MESSAGE,
    Handling,
    SendRecord,
    _explicit_broadcast,
    _handling,
)
from tracer.recorder.spans import capture_stack

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord

_NOT_STARTED = int(AppPhase.NOT_STARTED)
_NO_ATTRIBUTES: dict[str, Any] = {}
_ORPHANED = int(AppPhase.ORPHANED)
_OPEN = int(Phase.OPEN)

ACCEPT_RUNNING: Mapping[str, Any] = MappingProxyType({})
"""A record's ``accept_stack`` while the app's ``websocket.accept`` is being sent: what reached
it is read as the send returns (see :meth:`AppSide.on_accept_exit`)."""


class AppSide:
    """ASGI calls → facts: the app's start and end, each send and receive."""

    __slots__ = ()

    def init_app(self: ConnectionRecord) -> None:
        self.app: Any = None
        self.app_span: Any = None
        self.app_phase = _NOT_STARTED
        self.app_end = 0

        # Messages being handled, sends being made.
        self.handling: Handling | None = None
        self.handled: list[tuple[Handling, int]] | tuple[()] = ()
        """Handled messages waiting to be emitted (see :mod:`~tracer.recorder.emit.batches`)."""
        self.current_send: SendRecord | None = None
        self.messages_seen = 0

        # The app accepting (its span is emitted with the handshake's).
        self.accept_start = 0
        self.accept_stack: Mapping[str, Any] | None = None
        """The handshake stack's event attributes (read-only: shared)."""
        self.accept_parent: Any = None

    def claim(self) -> None:
        """Mark the running app task as owned by the server layer (an inert connection)."""
        _handling.set(Handling(self, None))

    def on_app_start(self, at: int, app: Any = None, app_span: bool = True) -> Any:
        """The app task starts (``asgi.app``, unless the middleware alone reports it: the
        connection's span is the app's then)."""
        self._app_step(AppEvent.START)
        self.app = app
        if self.recording and app_span:
            code = self.ws_code.get(vocab.ASGI_APP, _NO_ATTRIBUTES)
            self.app_span = self.recorder.start_app(self.span, at, code, self.path or "")
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
            message_type, size = payload_of(message)
            send = SendRecord(at, self, message_type, size)
            self.current_send = send
            return send
        if kind == "websocket.accept" and not self.accept_start:
            self.accept_start = at
            self.accept_stack = ACCEPT_RUNNING
        return None

    def on_accept_exit(self: ConnectionRecord) -> None:
        """The send of the app's ``websocket.accept`` returned (or raised): the 101 is on the
        wire, or never will be.  What reached the send — the innermost ASGI layer, the Python
        stack — is read now rather than as it was entered: the same frames are there (each
        caller waits where it called), and the client does not wait for its 101 while the
        stack is read, the costliest step of the handshake's hooks.  If the handshake's spans
        went out meanwhile, ``ws.accept`` follows them now.  Nothing if no accept runs."""
        if self.accept_stack is not ACCEPT_RUNNING:
            return
        self.accept_stack = None
        current = innermost_span(trace.get_current_span())
        if current.get_span_context().trace_id == self.span_context.trace_id:
            self.accept_parent = current  # the innermost ASGI layer (TracingMiddleware)
        if self.config.handshake_stack and self.recording:
            # The server's send, which ran, is shown as entered: the innermost frame.
            self.accept_stack = capture_stack(
                app=self.app, stop=LAYER_CODES, innermost=self.send_frame
            )
        if self.phase >= _OPEN:  # the handshake's spans are out (see _handshake_over)
            self.accept_over()

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
            sends = owner.sends
            if type(sends) is tuple:
                sends = owner.sends = []
            sends.append(send)
            if not owner.message_type and len(sends) >= GREETING_FLUSH:
                flush_greeting(owner)
        elif self.recording:
            # A send from outside any handler (a background task): straight under its connection.
            emit_send(self, self.span, send, self)

    def on_receive_enter(self, at: int) -> None:
        """The app asks for the next message: the previous one has been handled.

        Before the first message, the greeting phase goes on (it ends when a message is
        received, which may be never), but what it sent so far goes out now, as a push-only
        app's batches do, rather than staying with a connection that now waits."""
        handling = self.handling
        if handling is None:
            return
        if handling.message_type:
            self._close_handling(at, batched=True)
        elif handling.held and not handling.closed:
            flush_greeting(handling)

    def on_receive_exit(self, token_at: int, at: int, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind != "websocket.receive":
            if kind == "websocket.disconnect" and self.close_code is None:
                code = message.get("code")
                if isinstance(code, int):
                    self.close_code = code
            return
        message_type, size = payload_of(message)
        if self.handling is not None:  # the greeting phase, still open
            self._close_handling(token_at)
        incoming = None
        if self.completed:  # it came in: it leaves the queue (see _release)
            incoming = self.completed.pop(0)
            self.frames_held -= len(incoming.frames)
        handling = Handling(self, incoming, token_at, at, size, message_type)
        self.handling = handling
        _handling.set(handling)

    def _close_handling(self, at: int, batched: bool = False) -> None:
        """The handling is over: its message is emitted now, or, ``batched`` (and if it may
        wait), with the next batch (:mod:`~tracer.recorder.emit.batches`); what waits goes
        first either way."""
        handling = self.handling
        if handling is None or handling.closed:
            return
        handling.closed = True
        self.handling = None
        if batched and (self.handled or may_wait(self)):  # the first decides for its batch
            defer_message(self, handling, at)
            return
        emit_handled(self)
        try:
            emit_message(self, handling, at)
        except Exception as exc:
            errors.record("recorder.emit_message", exc)


def payload_of(message: dict[str, Any]) -> tuple[str, int]:
    """An ASGI ``websocket.send`` or ``websocket.receive`` message's type (``text`` or
    ``binary``) and its size in bytes, as its frames carry it: text in UTF-8 (RFC 6455 §5.6),
    whose length in characters is its size only when it is ASCII."""
    text = message.get("text")
    if text is not None:
        if text.isascii():  # a flag CPython keeps on the string: no scan
            return "text", len(text)
        return "text", len(text.encode("utf-8", "surrogatepass"))
    data = message.get("bytes")
    return "binary", len(data) if data is not None else 0
