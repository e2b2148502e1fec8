"""What a trace says about each connection, as plain values to ``assert`` on.

A :class:`TraceSet` holds spans; a test wants facts: the handshake's status, the frames on the
wire, the close code.  :func:`connections` turns a trace set into one :class:`ConnectionView`
per ``ws.connection`` with those facts as small frozen dataclasses, and assertion methods whose
failure message carries the connection's tree as ``wstrace show`` prints it, so a failing test
explains itself.  Reading side only: works on spans read back from any OTLP JSON file.

Two things the span tree does not say directly are resolved here:

- *Whose wire a frame was on.*  A broadcast's sends nest under the sender's message (that is
  what caused them) but their frames went out on the recipients' connections; a send's
  recipient is found through its span link (:meth:`TraceSet.recipient`).
- *What the middleware alone can see.*  Under Starlette's ``TestClient`` (or another server)
  only the ASGI layer is traced: messages, sends, accept, close — no frames, no handshake
  stages.  Frame assertions on such a connection fail with that explanation instead of
  passing vacuously.

The assertion methods set ``__tracebackhide__``: pytest points a failure at the test's line.
"""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console

from tracer import vocab
from tracer.analysis import fmt
from tracer.analysis.tree import TreeOptions, connection_tree
from tracer.export.records import EventRecord, SpanRecord
from tracer.export.traceset import Connection, TraceSet

TREE_WIDTH = 240
"""Columns the failure-message tree is laid out for: wide enough that no line is cut."""
TREE_MAX_LINES = 400
"""A connection with thousands of frames would bury the failure: longer trees are cut."""

RECEIVE = "receive"
"""Direction of a frame or message the server received (client → server)."""
SEND = "send"
"""Direction of a frame or message the server sent (server → client)."""


class TraceAssertionError(AssertionError):
    """An assertion about a recorded connection failed; the message holds its tree."""


@dataclass(frozen=True)
class Handshake:
    """The opening handshake as the server answered it."""

    status: int | None
    """101 when the upgrade was accepted; the refusal's status (403, 404…) otherwise."""
    headers: dict[str, tuple[str, ...]]
    """Request headers recorded (an allowlist; credentials redacted), lower-case names."""
    subprotocol: str | None
    extensions: str | None
    accept_valid: bool | None
    """The server's ``Sec-WebSocket-Accept`` checked against the key (RFC 6455 §4.2.2)."""
    duration_ns: int | None
    """Request read to response written; ``None`` when only the ASGI layer was traced."""

    @property
    def accepted(self) -> bool:
        return self.status == 101

    @property
    def duration(self) -> float | None:
        """Seconds."""
        return None if self.duration_ns is None else self.duration_ns / 1e9

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass(frozen=True)
class Frame:
    """One frame on the wire, in Wireshark's terms."""

    direction: str
    """``"receive"`` (client → server) or ``"send"`` (server → client)."""
    opcode: int
    opcode_name: str
    fin: bool
    rsv: int
    mask: bool
    length: int
    """Payload length in bytes."""
    header_length: int | None
    close_code: int | None
    close_reason: str | None
    time_ns: int

    def __str__(self) -> str:
        return f"{self.direction} {fmt.frame_summary(_frame_attributes(self))}"


@dataclass(frozen=True)
class Message:
    """A data message received by the app or sent by it."""

    direction: str
    type: str
    """``"text"`` or ``"binary"``."""
    size: int | None
    frames: int | None
    queue_wait_ns: int | None
    handler_ns: int | None
    error: str | None
    time_ns: int


@dataclass(frozen=True)
class Broadcast:
    """One app message fanned out to several connections."""

    recipients: int
    """How many sends the fan-out made."""
    recipient_numbers: tuple[int, ...]
    """The :attr:`ConnectionView.number` of each recipient, where the trace tells it."""
    duration_ns: int
    time_ns: int


@dataclass(frozen=True)
class Close:
    """The end of the connection: ``initiator`` is ``client``, ``server`` or ``none`` (a drop,
    recorded with code 1006)."""

    code: int | None
    reason: str | None
    initiator: str


@dataclass(frozen=True)
class StackFrame:
    """One Python frame of the stack when ``websocket.accept`` reached the server."""

    function: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.function} ({fmt.short_path(self.file)}:{self.line})"


@dataclass(frozen=True)
class ProtocolError:
    """Bad bytes seen on the wire (``truncated``, ``unmasked``, ``bad-utf8``…)."""

    kind: str
    offset: int | None


@dataclass(eq=False)
class ConnectionView:
    """Everything recorded about one WebSocket connection, with assertion methods."""

    number: int
    """The connection id the server layer gave it, else its position (1-based)."""
    path: str
    source: str
    """``"server"`` (hooks below ASGI: the wire is seen) or ``"asgi"`` (the middleware alone)."""
    impl_http: str | None
    impl_ws: str | None
    handshake: Handshake
    frames: list[Frame]
    messages: list[Message]
    broadcasts: list[Broadcast]
    close: Close | None
    stack: list[StackFrame]
    protocol_errors: list[ProtocolError]
    duration_ns: int
    spans: list[SpanRecord] = field(repr=False)
    _traces: TraceSet = field(repr=False)
    _conn: Connection = field(repr=False)
    frames_recorded: bool = True
    """``False`` when the recording was made with ``frames="off"``: there are none to check."""

    @property
    def label(self) -> str:
        return self._conn.label

    @property
    def wire_visible(self) -> bool:
        """Whether frames were recordable (the server hooks saw this connection's bytes)."""
        return self.source == vocab.SOURCE_SERVER

    def tree(self, *, frames: bool = True) -> str:
        """The connection's span tree as ``wstrace show`` prints it, without colour."""
        return render_tree(self._traces, self._conn, frames=frames)

    def fail(self, message: str) -> TraceAssertionError:
        """An assertion error about this connection, its tree appended."""
        return TraceAssertionError(f"{self.label}: {message}\n\n{self.tree()}")

    # --- assertions --------------------------------------------------------------------

    def assert_accepted(self) -> ConnectionView:
        __tracebackhide__ = True
        if not self.handshake.accepted:
            raise self.fail(f"handshake not accepted (status {self.handshake.status})")
        return self

    def assert_handshake_refused(self, status: int | None = None) -> ConnectionView:
        """The upgrade was refused during the handshake (with ``status``, when given)."""
        __tracebackhide__ = True
        got = self.handshake.status
        if got == 101:
            raise self.fail("handshake accepted (101), expected it to be refused")
        if got is None:
            raise self.fail("no handshake response recorded")
        if status is not None and got != status:
            raise self.fail(f"handshake refused with {got}, expected {status}")
        return self

    def assert_closed(
        self, code: int | None = None, *, initiator: str | None = None, reason: str | None = None
    ) -> ConnectionView:
        """The connection closed (with that ``code`` / ``initiator`` / ``reason``, if given)."""
        __tracebackhide__ = True
        close = self.close
        if close is None:
            status = self.handshake.status
            why = f" (handshake answered {status})" if status not in (None, 101) else ""
            raise self.fail(f"no closing handshake recorded{why}")
        wanted = {"code": code, "initiator": initiator, "reason": reason}
        wrong = [
            f"{name} {getattr(close, name)!r}, expected {value!r}"
            for name, value in wanted.items()
            if value is not None and getattr(close, name) != value
        ]
        if wrong:
            raise self.fail("closed with " + "; ".join(wrong))
        return self

    def assert_no_frame_larger_than(
        self, limit: int, *, direction: str | None = None
    ) -> ConnectionView:
        """No frame's payload is over ``limit`` bytes (in ``direction``, if given)."""
        __tracebackhide__ = True
        self._require_wire("frame sizes")
        big = [
            f
            for f in self.frames
            if f.length > limit and (direction is None or f.direction == direction)
        ]
        if big:
            shown = ", ".join(f"{f.direction} {f.opcode_name} len={f.length}" for f in big[:5])
            more = f" and {len(big) - 5} more" if len(big) > 5 else ""
            raise self.fail(f"{len(big)} frame(s) larger than {limit} B: {shown}{more}")
        return self

    def assert_ping_answered(self) -> ConnectionView:
        """Every ping was answered by a pong in the other direction, with the same length."""
        __tracebackhide__ = True
        self._require_wire("pings and pongs")
        pings = [f for f in self.frames if f.opcode == 0x9]
        if not pings:
            raise self.fail("no ping frame recorded")
        pongs = [f for f in self.frames if f.opcode == 0xA]
        unanswered = [
            ping
            for ping in pings
            if not any(
                pong.direction != ping.direction
                and pong.time_ns >= ping.time_ns
                and pong.length == ping.length
                for pong in pongs
            )
        ]
        if unanswered:
            raise self.fail(
                f"{len(unanswered)} of {len(pings)} ping(s) got no pong: "
                + ", ".join(str(p) for p in unanswered[:5])
            )
        return self

    def assert_broadcast_reached(self, recipients: int) -> ConnectionView:
        """A message handled on this connection was fanned out to exactly ``recipients``."""
        __tracebackhide__ = True
        if any(b.recipients == recipients for b in self.broadcasts):
            return self
        if not self.broadcasts:
            raise self.fail(f"no broadcast recorded, expected one reaching {recipients}")
        counts = ", ".join(str(b.recipients) for b in self.broadcasts)
        raise self.fail(f"broadcasts reached {counts} connection(s), expected {recipients}")

    def _require_wire(self, what: str) -> None:
        __tracebackhide__ = True
        if not self.frames_recorded:
            raise self.fail(f"{what} cannot be checked: frames were not recorded (frames='off')")
        if not self.wire_visible:
            raise self.fail(
                f"{what} cannot be checked: only the ASGI middleware traced this connection "
                "(TestClient or an uninstrumented server), which sees messages, not frames; "
                "serve the app with ws_server to record the wire"
            )


class ConnectionList(tuple):  # type: ignore[type-arg]
    """Connections in the order they started; filter with :meth:`where`."""

    def where(
        self, path: str | None = None, *, predicate: Callable[[ConnectionView], bool] | None = None
    ) -> ConnectionList:
        """Connections whose path is ``path`` (``*`` and ``?`` match as in a shell glob)."""
        found: Iterable[ConnectionView] = self
        if path is not None:
            found = (c for c in found if fnmatch.fnmatchcase(c.path, path))
        if predicate is not None:
            found = (c for c in found if predicate(c))
        return ConnectionList(found)

    def one(self, path: str | None = None) -> ConnectionView:
        """The only connection (on ``path``); an assertion error if there are none or several."""
        __tracebackhide__ = True
        found = self.where(path) if path is not None else self
        if len(found) != 1:
            on = f" on {path!r}" if path is not None else ""
            paths = ", ".join(sorted({c.path for c in self})) or "none"
            raise TraceAssertionError(
                f"expected one connection{on}, found {len(found)} (paths recorded: {paths})"
            )
        return found[0]

    def assert_no_frame_larger_than(
        self, limit: int, *, direction: str | None = None
    ) -> ConnectionList:
        __tracebackhide__ = True
        if not self:
            raise TraceAssertionError("no connection recorded: no frame to check")
        for conn in self:
            conn.assert_no_frame_larger_than(limit, direction=direction)
        return self


def render_tree(traces: TraceSet, conn: Connection, *, frames: bool = True) -> str:
    """The tree ``wstrace show`` prints for ``conn``, as plain text (no colour, no cut lines)."""
    out = io.StringIO()
    console = Console(
        file=out, width=TREE_WIDTH, color_system=None, force_terminal=False, highlight=False
    )
    console.print(connection_tree(traces, conn, TreeOptions(frames=frames)))
    lines = out.getvalue().rstrip().splitlines()
    if len(lines) > TREE_MAX_LINES:
        hidden = len(lines) - TREE_MAX_LINES
        lines = [*lines[:TREE_MAX_LINES], f"… {hidden} more lines (keep the trace to see them)"]
    return "\n".join(line.rstrip() for line in lines)


# --- building the views ----------------------------------------------------------------------


def connections(traces: TraceSet, *, frames_recorded: bool = True) -> ConnectionList:
    """One view per connection in ``traces``, in start order.  ``frames_recorded=False`` (a
    trace made with ``frames="off"``) makes frame assertions fail rather than pass on none."""
    on_wire: dict[int, list[SpanRecord]] = {}
    for key, owner in _wire_owners(traces).items():
        span = traces.get(*key)
        if span is not None:
            on_wire.setdefault(id(owner), []).append(span)
    views = (_view(traces, conn, on_wire.get(id(conn), [])) for conn in traces.connections)
    if frames_recorded:
        return ConnectionList(views)
    return ConnectionList(replace(view, frames_recorded=False) for view in views)


def _number(conn: Connection) -> int:
    return conn.connection_id if conn.connection_id is not None else conn.index


def _wire_owners(traces: TraceSet) -> dict[tuple[str, str], Connection]:
    """For every frame and message span (and span carrying frame events, with
    ``frames="events"``): the connection on whose wire it travelled."""
    owners: dict[tuple[str, str], Connection] = {}
    for span in traces.spans:
        carries_frames = any(fmt.is_frame(event.name) for event in span.events)
        if not (carries_frames or fmt.is_frame(span.name) or span.name in _MESSAGE_NAMES):
            continue
        owner = traces.connection_of(span)
        node: SpanRecord | None = span
        while node is not None:
            if node.name == vocab.WS_MESSAGE_SEND:
                owner = traces.recipient(node) or traces.connection_of(node)
                break
            if node.name == vocab.CONNECTION:
                break
            node = traces.parent(node)
        if owner is not None:
            owners[span.key] = owner
    return owners


_MESSAGE_NAMES = (vocab.WS_MESSAGE_RECEIVE, vocab.WS_MESSAGE_SEND)


def _view(traces: TraceSet, conn: Connection, mine: list[SpanRecord]) -> ConnectionView:
    """``mine``: the frame and message spans that travelled on this connection's wire."""
    root = conn.root
    return ConnectionView(
        number=_number(conn),
        path=str(root.attributes.get(vocab.URL_PATH, "")),
        source=str(root.attributes.get(vocab.SOURCE, vocab.SOURCE_SERVER)),
        impl_http=_str(root.attributes.get(vocab.IMPL_HTTP)),
        impl_ws=_str(root.attributes.get(vocab.IMPL_WS)),
        handshake=_handshake(conn),
        frames=_frames(mine),
        messages=[_message(s) for s in mine if s.name in _MESSAGE_NAMES],
        broadcasts=[
            _broadcast(traces, s) for s in conn.spans if s.name == vocab.WS_BROADCAST
        ],
        close=_close(conn),
        stack=_stack(conn),
        protocol_errors=_protocol_errors(conn),
        duration_ns=conn.end_ns - conn.start_ns,
        spans=conn.spans,
        _traces=traces,
        _conn=conn,
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _first(conn: Connection, name: str) -> SpanRecord | None:
    return next((s for s in conn.spans if s.name == name), None)


def _handshake(conn: Connection) -> Handshake:
    root = conn.root
    shake = _first(conn, vocab.WS_HANDSHAKE)
    response = _first(conn, vocab.WS_HANDSHAKE_RESPONSE)
    accept = _first(conn, vocab.WS_ACCEPT)
    status = None
    for span in (response, shake, root, accept):
        if span is not None and status is None:
            status = _int(span.attributes.get(vocab.HTTP_RESPONSE_STATUS_CODE))
    headers: dict[str, tuple[str, ...]] = {}
    prefix = vocab.HTTP_REQUEST_HEADER_PREFIX
    for span in (root, shake):
        if span is None:
            continue
        for key, value in span.attributes.items():
            if key.startswith(prefix):
                values = value if isinstance(value, (list, tuple)) else [value]
                headers.setdefault(key[len(prefix) :], tuple(str(v) for v in values))
    described = response or accept
    attrs = described.attributes if described is not None else {}
    valid = attrs.get(vocab.WS_ACCEPT_VALID)
    return Handshake(
        status=status,
        headers=headers,
        subprotocol=_str(attrs.get(vocab.WS_SUBPROTOCOL)),
        extensions=_str(attrs.get(vocab.WS_EXTENSIONS)),
        accept_valid=valid if isinstance(valid, bool) else None,
        duration_ns=shake.duration_ns if shake is not None else None,
    )


def _frame(name: str, attrs: dict[str, Any], at: int) -> Frame:
    opcode = _int(attrs.get(vocab.WS_OPCODE))
    opcode = opcode if opcode is not None else -1
    return Frame(
        direction=RECEIVE if name == vocab.WS_FRAME_RECEIVE else SEND,
        opcode=opcode,
        opcode_name=str(attrs.get(vocab.WS_OPCODE_NAME, "?")),
        fin=bool(attrs.get(vocab.WS_FIN, False)),
        rsv=_int(attrs.get(vocab.WS_RSV)) or 0,
        mask=bool(attrs.get(vocab.WS_MASK, False)),
        length=_int(attrs.get(vocab.WS_PAYLOAD_LENGTH)) or 0,
        header_length=_int(attrs.get(vocab.WS_HEADER_LENGTH)),
        close_code=_int(attrs.get(vocab.WS_CLOSE_CODE)),
        close_reason=_str(attrs.get(vocab.WS_CLOSE_REASON)),
        time_ns=at,
    )


def _frame_attributes(frame: Frame) -> dict[str, Any]:
    return {
        vocab.WS_FIN: frame.fin,
        vocab.WS_RSV: frame.rsv,
        vocab.WS_OPCODE_NAME: frame.opcode_name,
        vocab.WS_MASK: frame.mask,
        vocab.WS_PAYLOAD_LENGTH: frame.length,
    }


def _frames(spans: Iterable[SpanRecord]) -> list[Frame]:
    """Frames as spans (the default) and as events on their parents (``frames="events"``)."""
    found: list[Frame] = []
    for span in spans:
        if fmt.is_frame(span.name):
            found.append(_frame(span.name, span.attributes, span.start_ns))
        else:
            found.extend(
                _frame(event.name, event.attributes, event.time_ns)
                for event in span.events
                if fmt.is_frame(event.name)
            )
    found.sort(key=lambda f: f.time_ns)
    return found


def _message(span: SpanRecord) -> Message:
    a = span.attributes
    return Message(
        direction=RECEIVE if span.name == vocab.WS_MESSAGE_RECEIVE else SEND,
        type=str(a.get(vocab.WS_MESSAGE_TYPE, "?")),
        size=_int(a.get(vocab.WS_MESSAGE_SIZE)),
        frames=_int(a.get(vocab.WS_MESSAGE_FRAMES)),
        queue_wait_ns=_int(a.get(vocab.QUEUE_WAIT_NS)),
        handler_ns=_int(a.get(vocab.HANDLER_NS)),
        error=_str(a.get(vocab.ERROR_TYPE)),
        time_ns=span.start_ns,
    )


def _broadcast(traces: TraceSet, span: SpanRecord) -> Broadcast:
    sends = [c for c in traces.children(span) if c.name == vocab.WS_MESSAGE_SEND]
    recipients = _int(span.attributes.get(vocab.BROADCAST_RECIPIENTS))
    numbers = tuple(
        _number(target) for target in (traces.recipient(s) for s in sends) if target is not None
    )
    return Broadcast(
        recipients=recipients if recipients is not None else len(sends),
        recipient_numbers=numbers,
        duration_ns=span.duration_ns,
        time_ns=span.start_ns,
    )


def _close(conn: Connection) -> Close | None:
    span = _first(conn, vocab.WS_CLOSE)
    if span is None:
        return None
    a = span.attributes
    return Close(
        code=_int(a.get(vocab.WS_CLOSE_CODE)),
        reason=_str(a.get(vocab.WS_CLOSE_REASON)) or None,
        initiator=str(a.get(vocab.WS_CLOSE_INITIATOR, vocab.INITIATOR_NONE)),
    )


def _events(conn: Connection, name: str) -> Iterator[EventRecord]:
    for span in conn.spans:
        for event in span.events:
            if event.name == name:
                yield event


def _stack(conn: Connection) -> list[StackFrame]:
    for event in _events(conn, vocab.EVENT_HANDSHAKE_STACK):
        a = event.attributes
        functions = list(a.get(vocab.STACK_FUNCTIONS) or [])
        files = list(a.get(vocab.STACK_FILES) or [])
        lines = list(a.get(vocab.STACK_LINES) or [])
        return [
            StackFrame(str(fn), str(file), _int(line) or 0)
            for fn, file, line in zip(functions, files, lines, strict=False)
        ]
    return []


def _protocol_errors(conn: Connection) -> list[ProtocolError]:
    return [
        ProtocolError(
            kind=str(e.attributes.get(vocab.PROTOCOL_ERROR_KIND, "?")),
            offset=_int(e.attributes.get(vocab.PROTOCOL_ERROR_OFFSET)),
        )
        for e in _events(conn, vocab.EVENT_PROTOCOL_ERROR)
    ]


__all__ = [
    "RECEIVE",
    "SEND",
    "Broadcast",
    "Close",
    "ConnectionList",
    "ConnectionView",
    "Frame",
    "Handshake",
    "Message",
    "ProtocolError",
    "StackFrame",
    "TraceAssertionError",
    "connections",
    "render_tree",
]
