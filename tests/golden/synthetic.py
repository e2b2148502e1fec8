"""Realistic wstrace traces built with the real OpenTelemetry SDK, deterministically.

Ids come from a counter and every time is explicit, so the same call always produces the same
spans — the basis of the golden OTLP JSON test and of hand-checked numbers elsewhere.  The
shape follows what the hooks and middleware record (see ``tracer.vocab``): a ``ws.connection``
root with the server stages, the ASGI middleware chain down to ``ws.accept``, messages with
frames, broadcasts whose sends link to each recipient's connection, and the close.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import IdGenerator, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracer import vocab
from tracer.wire import opcode_name

T0 = 1_700_000_000_000_000_000
"""Base time (ns since the epoch) of every synthetic trace."""

MIDDLEWARE_CHAIN = (
    "ProxyHeadersMiddleware",
    "FastAPI",
    "Starlette",
    "ServerErrorMiddleware",
    "CORSMiddleware",
    "ExceptionMiddleware",
    "AsyncExitStackMiddleware",
    "Router",
    "/ws/auction/{auction_id}",
    "websocket_endpoint",
)
SITE = "/venv/lib/python3.11/site-packages"


def us(offset: float) -> int:
    """``T0`` plus ``offset`` microseconds, in ns."""
    return T0 + round(offset * 1000)


class SequentialIds(IdGenerator):
    """Trace ids 0x0af7651916cd43dd8448eb211c800001…, span ids 0x00f067aa0ba90001…"""

    def __init__(self) -> None:
        self._trace = 0
        self._span = 0

    def generate_trace_id(self) -> int:
        self._trace += 1
        return 0x0AF7651916CD43DD8448EB211C800000 + self._trace

    def generate_span_id(self) -> int:
        self._span += 1
        return 0x00F067AA0BA90000 + self._span


def code_attrs(function: str, file: str, line: int) -> dict[str, Any]:
    return {
        vocab.CODE_FUNCTION_NAME: function,
        vocab.CODE_FILE_PATH: f"{SITE}/{file}",
        vocab.CODE_LINE_NUMBER: line,
    }


def frame_attrs(opcode: int, length: int, *, masked: bool, fin: bool = True) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        vocab.WS_FIN: fin,
        vocab.WS_RSV: 0,
        vocab.WS_OPCODE: opcode,
        vocab.WS_OPCODE_NAME: opcode_name(opcode),
        vocab.WS_MASK: masked,
        vocab.WS_PAYLOAD_LENGTH: length,
        vocab.WS_HEADER_LENGTH: (6 if masked else 2) + (2 if length > 125 else 0),
    }
    if masked:
        attrs[vocab.WS_MASKING_KEY] = "37fa213d"
    return attrs


@dataclass
class Conn:
    """A connection under construction: its root span and the offsets it lives at."""

    conn_id: int
    start: float
    end: float
    root: Any
    handshake: Any = None
    port: int = 0
    spans: list[Any] = field(default_factory=list)


class TraceBuilder:
    """Build auction-app traces; ``finish()`` ends every span (exporting it)."""

    def __init__(
        self,
        exporter: SpanExporter | Sequence[SpanExporter],
        *,
        shape: str = vocab.SHAPE_CONNECTION,
        frames: str = vocab.FRAMES_SPANS,
        resource: dict[str, Any] | None = None,
    ) -> None:
        self.provider = TracerProvider(
            resource=Resource(resource or {"service.name": "auction-demo"}),
            id_generator=SequentialIds(),
        )
        for each in exporter if isinstance(exporter, Sequence) else [exporter]:
            self.provider.add_span_processor(SimpleSpanProcessor(each))
        self.tracer = self.provider.get_tracer("wstrace", "0.1.0")
        self.shape = shape
        self.frames = frames
        self.conns: dict[int, Conn] = {}

    # --- primitives -----------------------------------------------------------------------

    def start(
        self,
        name: str,
        at: float,
        parent: Any = None,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Any:
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            links=list(links),
            start_time=us(at),
        )

    def span(self, name: str, at: float, until: float, parent: Any, **kw: Any) -> Any:
        span = self.start(name, at, parent, **kw)
        span.end(end_time=us(until))
        return span

    def frame(self, name: str, at: float, until: float, parent: Any, attrs: dict) -> None:
        if self.frames == vocab.FRAMES_SPANS:
            self.span(name, at, until, parent, attributes=attrs)
        elif self.frames == vocab.FRAMES_EVENTS:
            parent.add_event(name, attrs, timestamp=us(at))

    # --- stages ---------------------------------------------------------------------------

    def connection(
        self, conn_id: int, start: float, end: float, *, path: str = "/ws/auction/1"
    ) -> Conn:
        """Open a connection and record its whole opening: parse → … → 101 → first send."""
        port = 50520 + conn_id
        root = self.start(
            vocab.CONNECTION,
            start,
            kind=SpanKind.SERVER,
            attributes={
                vocab.IMPL_HTTP: "httptools",
                vocab.IMPL_WS: "websockets",
                vocab.CLIENT_ADDRESS: "127.0.0.1",
                vocab.CLIENT_PORT: port,
                vocab.SERVER_PORT: 8000,
                vocab.URL_PATH: path,
                vocab.CONNECTION_ID: conn_id,
                vocab.NETWORK_PROTOCOL_NAME: "websocket",
            },
        )
        conn = Conn(conn_id, start, end, root, port=port)
        self.conns[conn_id] = conn
        s = start
        http = "uvicorn/protocols/http/httptools_impl.py"
        self.span(
            vocab.HTTP_HEADERS_PARSE,
            s + 10,
            s + 40,
            root,
            attributes=code_attrs("data_received", http, 250),
        )
        self.span(
            vocab.HTTP_UPGRADE_DETECT,
            s + 40,
            s + 50,
            root,
            attributes=code_attrs("_should_upgrade_to_ws", http, 151),
        )
        self.span(
            vocab.WS_PROTOCOL_SWITCH,
            s + 50,
            s + 80,
            root,
            attributes=code_attrs("handle_websocket_upgrade", http, 209),
        )
        legacy = "websockets/legacy/server.py"
        handshake = self.start(
            vocab.WS_HANDSHAKE, s + 80, root, attributes=code_attrs("handshake", legacy, 545)
        )
        conn.handshake = handshake
        key = f"dGhlIHNhbXBsZSBub25jZQ{conn_id}="
        self.span(
            vocab.WS_HANDSHAKE_VALIDATE,
            s + 90,
            s + 110,
            handshake,
            attributes={
                **code_attrs("check_request", "websockets/legacy/handshake.py", 31),
                vocab.WS_KEY: key,
                vocab.WS_VERSION: "13",
            },
        )
        asgi = self.start(
            vocab.ASGI_APP,
            s + 120,
            root,
            attributes=code_attrs(
                "run_asgi", "uvicorn/protocols/websockets/websockets_impl.py", 243
            ),
        )
        parent, layer_spans, at = asgi, [], s + 122
        for depth, name in enumerate(MIDDLEWARE_CHAIN):
            attrs = code_attrs("__call__", f"starlette/layer{depth}.py", 10 + depth)
            if name.startswith("/"):
                attrs[vocab.HTTP_ROUTE] = name
            parent = self.start(name, at, parent, attributes=attrs)
            layer_spans.append(parent)
            at += 2
        accept = self.start(
            vocab.WS_ACCEPT,
            s + 300,
            parent,
            attributes=code_attrs("accept", "starlette/websockets.py", 161),
        )
        stack = [("run_asgi", "uvicorn/protocols/websockets/websockets_impl.py", 243)]
        stack += [("__call__", f"starlette/layer{i}.py", 10 + i) for i in range(8)]
        stack += [
            ("websocket_endpoint", "/srv/demo_app/main.py", 58),
            ("accept", "starlette/websockets.py", 161),
            ("asgi_send", "uvicorn/protocols/websockets/websockets_impl.py", 318),
        ]
        accept.add_event(
            vocab.EVENT_HANDSHAKE_STACK,
            {
                vocab.STACK_FUNCTIONS: [f for f, _, _ in stack],
                vocab.STACK_FILES: [
                    f if f.startswith("/srv") else f"{SITE}/{f}" for _, f, _ in stack
                ],
                vocab.STACK_LINES: [line for _, _, line in stack],
            },
            timestamp=us(s + 340),
        )
        self.span(
            vocab.WS_HANDSHAKE_RESPONSE,
            s + 350,
            s + 390,
            handshake,
            attributes={
                **code_attrs("write_http_response", legacy, 293),
                vocab.HTTP_RESPONSE_STATUS_CODE: 101,
                vocab.WS_KEY: key,
                vocab.WS_ACCEPT_KEY: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                vocab.WS_ACCEPT_VALID: True,
            },
        )
        accept.end(end_time=us(s + 395))
        handshake.end(end_time=us(s + 400))
        self.send(conn, s + 420, length=40, parent=root)
        conn.spans = [asgi, *layer_spans]
        return conn

    def send(self, to: Conn, at: float, *, length: int, parent: Any, link: bool = False) -> None:
        """One ``ws.message.send`` of 80 µs with its frame; ``link`` → points at ``to``."""
        links = [Link(to.root.get_span_context())] if link else []
        attrs: dict[str, Any] = {vocab.WS_MESSAGE_TYPE: "text", vocab.WS_MESSAGE_SIZE: length}
        if link:
            attrs[vocab.CONNECTION_ID] = to.conn_id
        msg = self.start(vocab.WS_MESSAGE_SEND, at, parent, attributes=attrs, links=links)
        self.frame(
            vocab.WS_FRAME_SEND, at + 10, at + 60, msg, frame_attrs(0x1, length, masked=False)
        )
        msg.end(end_time=us(at + 80))

    def message(
        self,
        conn: Conn,
        at: float,
        *,
        length: int = 24,
        frames: int = 1,
        queue_wait_ns: int = 50_000,
        handler_ns: int = 300_000,
        broadcast_to: Sequence[Conn] = (),
        until: float | None = None,
    ) -> Any:
        """A received text message, optionally fanned out to ``broadcast_to``."""
        links: list[Link] = []
        parent = conn.root
        if self.shape == vocab.SHAPE_MESSAGE:
            links, parent = [Link(conn.handshake.get_span_context())], None
        end = until if until is not None else at + 100 + 100 * len(broadcast_to) + 50
        msg = self.start(
            vocab.WS_MESSAGE_RECEIVE,
            at,
            parent,
            links=links,
            kind=SpanKind.CONSUMER if parent is None else SpanKind.INTERNAL,
            attributes={
                vocab.WS_MESSAGE_TYPE: "text",
                vocab.WS_MESSAGE_SIZE: length,
                vocab.WS_MESSAGE_FRAMES: frames,
                vocab.QUEUE_WAIT_NS: queue_wait_ns,
                vocab.HANDLER_NS: handler_ns,
            },
        )
        per = length // frames
        for i in range(frames):
            last = i == frames - 1
            self.frame(
                vocab.WS_FRAME_RECEIVE,
                at + 5 * i,
                at + 5 * i + 4,
                msg,
                frame_attrs(0x1 if i == 0 else 0x0, per, masked=True, fin=last),
            )
        if broadcast_to:
            b_at = at + 100
            bcast = self.start(
                vocab.WS_BROADCAST,
                b_at,
                msg,
                attributes={vocab.BROADCAST_RECIPIENTS: len(broadcast_to)},
            )
            for i, target in enumerate(broadcast_to):
                self.send(target, b_at + 10 + 100 * i, length=length + 20, parent=bcast, link=True)
            bcast.end(end_time=us(b_at + 100 * len(broadcast_to) + 20))
        msg.end(end_time=us(end))
        return msg

    def close(
        self,
        conn: Conn,
        *,
        code: int = 1000,
        reason: str = "bye",
        initiator: str = vocab.INITIATOR_CLIENT,
    ) -> None:
        """Closing handshake at the end of the connection, then end everything still open.

        An abnormal drop (initiator ``none``, code 1006) has no close frames on the wire.
        """
        e = conn.end
        close = self.start(
            vocab.WS_CLOSE,
            e - 50,
            conn.root,
            attributes={
                vocab.WS_CLOSE_CODE: code,
                vocab.WS_CLOSE_REASON: reason,
                vocab.WS_CLOSE_INITIATOR: initiator,
                **code_attrs("connection_lost", "websockets/legacy/protocol.py", 1370),
            },
        )
        if initiator != vocab.INITIATOR_NONE:
            length = 2 + len(reason.encode())
            self.frame(
                vocab.WS_FRAME_RECEIVE, e - 48, e - 45, close, frame_attrs(0x8, length, masked=True)
            )
            self.frame(
                vocab.WS_FRAME_SEND, e - 40, e - 35, close, frame_attrs(0x8, length, masked=False)
            )
        close.end(end_time=us(e - 5))
        ends = {id(span): e - 60 - 2 * depth for depth, span in enumerate(conn.spans)}
        for span in reversed(conn.spans):  # innermost first, each inside its parent
            span.end(end_time=us(ends[id(span)]))
        conn.root.end(end_time=us(e))


def auction(
    exporter: SpanExporter | Sequence[SpanExporter],
    *,
    shape: str = vocab.SHAPE_CONNECTION,
    frames: str = vocab.FRAMES_SPANS,
    close_reason: str = "bye",
) -> TraceBuilder:
    """Three bidders in one room; bidder 1 and then bidder 2 bid, each bid fanned out to all.

    Times (µs after T0): connections open at 0, 200, 400 and close at 5000, 5200, 5400.
    Bid 1 arrives on conn 1 at 1000 (frame 1000–1004), broadcast 1100–1420, sends at
    1110/1210/1310 (+80), frames 1120–1170, 1220–1270, 1320–1370.  Bid 2 arrives on conn 2 at
    2000, three frames (2000, 2005, 2010), sends at 2110/2210/2310.
    """
    b = TraceBuilder(exporter, shape=shape, frames=frames)
    c1 = b.connection(1, 0, 5000)
    c2 = b.connection(2, 200, 5200)
    c3 = b.connection(3, 400, 5400)
    everyone = [c1, c2, c3]
    b.message(c1, 1000, broadcast_to=everyone, queue_wait_ns=40_000, handler_ns=380_000)
    b.message(
        c2,
        2000,
        frames=3,
        length=30,
        broadcast_to=everyone,
        queue_wait_ns=60_000,
        handler_ns=350_000,
    )
    b.message(c3, 3000, queue_wait_ns=10_000, handler_ns=20_000)
    b.close(c1, reason=close_reason)
    b.close(c2, code=1001, initiator=vocab.INITIATOR_SERVER, reason="going away")
    b.close(c3, code=1006, initiator=vocab.INITIATOR_NONE, reason="")
    return b


def small(exporter: SpanExporter) -> TraceBuilder:
    """Eight spans covering every OTLP/JSON feature wstrace writes, for the golden test.

    Kinds SERVER and INTERNAL; string, int, bool, double and array attributes; an event with
    array attributes; a link with attributes; an ERROR status with a message; a resource with
    a bool attribute.  Everything between 0 and 1000 µs after ``T0``.
    """
    b = TraceBuilder(exporter, resource={"service.name": "golden", "wstrace.sample": True})
    root = b.start(
        vocab.CONNECTION,
        0,
        kind=SpanKind.SERVER,
        attributes={
            vocab.CLIENT_ADDRESS: "127.0.0.1",
            vocab.CLIENT_PORT: 50527,
            vocab.URL_PATH: "/ws/auction/7",
            vocab.CONNECTION_ID: 7,
            vocab.NETWORK_PROTOCOL_NAME: "websocket",
        },
    )
    b.span(
        vocab.WS_HANDSHAKE_RESPONSE,
        100,
        140,
        root,
        attributes={
            **code_attrs("write_http_response", "websockets/legacy/server.py", 293),
            vocab.HTTP_RESPONSE_STATUS_CODE: 101,
            vocab.WS_ACCEPT_KEY: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            vocab.WS_ACCEPT_VALID: True,
        },
    )
    endpoint = b.start("websocket_endpoint", 150, root, attributes={"wstrace.sample.ratio": 0.25})
    accept = b.start(vocab.WS_ACCEPT, 160, endpoint)
    accept.add_event(
        vocab.EVENT_HANDSHAKE_STACK,
        {
            vocab.STACK_FUNCTIONS: ["run_asgi", "accept"],
            vocab.STACK_FILES: ["a.py", "b.py"],
            vocab.STACK_LINES: [243, 161],
        },
        timestamp=us(170),
    )
    accept.end(end_time=us(180))
    endpoint.set_status(Status(StatusCode.ERROR, "handler raised"))
    endpoint.end(end_time=us(900))
    msg = b.start(
        vocab.WS_MESSAGE_RECEIVE,
        500,
        root,
        attributes={vocab.QUEUE_WAIT_NS: 1500, vocab.HANDLER_NS: 2500},
    )
    bcast = b.start(vocab.WS_BROADCAST, 520, msg, attributes={vocab.BROADCAST_RECIPIENTS: 1})
    send = b.start(
        vocab.WS_MESSAGE_SEND,
        530,
        bcast,
        attributes={vocab.CONNECTION_ID: 7},
        links=[Link(root.get_span_context(), {"wstrace.link": "recipient"})],
    )
    b.span(vocab.WS_FRAME_SEND, 540, 550, send, attributes=frame_attrs(0x1, 5, masked=False))
    send.end(end_time=us(560))
    bcast.end(end_time=us(570))
    msg.end(end_time=us(600))
    root.end(end_time=us(1000))
    return b
