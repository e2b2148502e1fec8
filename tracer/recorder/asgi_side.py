"""A connection seen from the ASGI layer alone: what :class:`tracer.TracingMiddleware` reports
when no server hooks are installed (Starlette's ``TestClient``, another server).

Without the wire, the ASGI messages are the only facts there are, and they stand for what the
hooks would have seen below them (ASGI spec, WebSocket "HTTP Response" and "Close" messages):

- the app called with a ``websocket`` scope: the request has arrived;
- ``websocket.accept`` sent: the 101 is on its way — the handshake is over when the send
  returns (``ws.accept`` spans that send);
- ``websocket.close`` before accepting: a ``403 Forbidden`` answer; a
  ``websocket.http.response.start`` before accepting: that response's status;
- ``websocket.close`` after accepting, or ``websocket.disconnect`` received: the close
  handshake has started, by the server or by the client (RFC 6455 §7.1.2).

Data messages go through the same methods as under the hooks
(:class:`~tracer.recorder.app_side.AppSide`), so both modes make the same spans from the same
facts; only what the wire alone shows (HTTP stages, frames, the handshake's own span) is
missing here.  One side of :class:`~tracer.recorder.connection.ConnectionRecord`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracer import vocab
from tracer.recorder.phase import Event
from tracer.recorder.records import SendRecord
from tracer.wire import CloseCode

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord

FORBIDDEN = 403
"""The answer an ASGI server gives a ``websocket.close`` sent before accepting (ASGI spec)."""
SWITCHING_PROTOCOLS = 101
NORMAL_CLOSURE = int(CloseCode.NORMAL_CLOSURE)
"""The close code of a ``websocket.close`` message that gives none (ASGI spec)."""

ACCEPT = "websocket.accept"
SEND = "websocket.send"
CLOSE = "websocket.close"
RESPONSE_START = "websocket.http.response.start"
DISCONNECT = "websocket.disconnect"


class AsgiSide:
    """ASGI messages → facts, for a connection the middleware traces alone."""

    __slots__ = ()

    def on_asgi_request(self: ConnectionRecord, at: int) -> None:
        """The app was called with the connection's ``websocket`` scope."""
        self.handshake_start = at
        self._step(Event.REQUEST)

    def on_asgi_send_enter(self: ConnectionRecord, at: int, message: Any) -> SendRecord | None:
        """The app sends ``message``; a data message's record, for :meth:`on_asgi_send_exit`."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in (SEND, ACCEPT):
            return self.on_send_enter(at, message)
        if kind == CLOSE:
            code = message.get("code", NORMAL_CLOSURE)
            if not self.status:
                self._deny(FORBIDDEN, at)
                # No close handshake happens (the client gets a 403), but the app's code and
                # reason are what it meant: the connection keeps them.
                self._note_close(vocab.INITIATOR_SERVER, code, message.get("reason"))
            else:
                self.on_asgi_close(vocab.INITIATOR_SERVER, code, message.get("reason"), at)
        elif kind == RESPONSE_START and not self.status:
            self._deny(message.get("status"), at)
        return None

    def on_asgi_send_exit(
        self: ConnectionRecord, sent: SendRecord | None, message: Any, at: int, error: str | None
    ) -> None:
        """The app's send of ``message`` returned (or raised ``error``)."""
        if sent is not None:
            self.on_send_exit(sent, at, error)
            return
        self.on_accept_exit()
        if isinstance(message, dict) and message.get("type") == ACCEPT and error is None:
            self._accepted(message, at)
        elif self.status and self.status != SWITCHING_PROTOCOLS:
            self.response_end = self.response_end or at
            self._step(Event.HANDSHAKE_END)

    def on_asgi_receive(self: ConnectionRecord, asked: int, at: int, message: Any) -> None:
        """``receive()``, asked at ``asked``, returned ``message``."""
        if isinstance(message, dict) and message.get("type") == DISCONNECT:
            code = message.get("code")
            self.on_asgi_close(
                vocab.INITIATOR_CLIENT,
                code if isinstance(code, int) else None,
                message.get("reason"),
                at,
            )
        self.on_receive_exit(asked, at, message)

    def on_asgi_close(
        self: ConnectionRecord, initiator: str, code: int | None, reason: Any, at: int
    ) -> None:
        """The first close, from either side, starts the close handshake."""
        if self.close_initiator is not None or self.status != SWITCHING_PROTOCOLS:
            return
        self._note_close(initiator, code, reason)
        self.close_start = at
        self._step(Event.CLOSE_FRAME)

    def _note_close(self: ConnectionRecord, initiator: str, code: int | None, reason: Any) -> None:
        self.close_initiator = initiator
        self.close_code = code
        self.close_reason = reason if isinstance(reason, str) and reason else None

    def _accepted(self: ConnectionRecord, message: dict[str, Any], at: int) -> None:
        if self.status:  # accepted twice, or after an answer: the app's mistake, not a phase
            return
        subprotocol = message.get("subprotocol")
        if isinstance(subprotocol, str) and subprotocol:
            self.subprotocol = self.config.subprotocol(subprotocol)
        self._answer(SWITCHING_PROTOCOLS, self.accept_start or at)
        self.response_end = at
        self._step(Event.SWITCH)
        self._step(Event.HANDSHAKE_END)

    def _deny(self: ConnectionRecord, status: Any, at: int) -> None:
        self._answer(status if isinstance(status, int) else FORBIDDEN, at)
        self._step(Event.DENY)

    def _answer(self: ConnectionRecord, status: int, at: int) -> None:
        self.status = status
        self.response_start = at
        if self.recording:
            self.span.set_attribute(vocab.HTTP_RESPONSE_STATUS_CODE, status)
