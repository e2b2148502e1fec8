"""What the hooks cost per message, stage by stage, timed in this process.

    python -m bench.hooks

One echoed message of the benchmark, in ``connection`` shape with frames as spans, played
through wstrace's real wrappers (:mod:`tracer.hooks.ws`, the
:class:`~tracer.hooks.transport.TapTransport`, ``tracer.broadcast()``) on a stand-in protocol
whose own work is nothing: what is timed is wstrace's alone.  The message's life, as uvicorn
and the auction app drive it:

- **receive** — the app asks for the next message (the previous one is over), and it is
  handed over: the receive wrapper, without the message spans below;
- **data in** — the client's frame arrives: ``data_received`` decodes it and queues the message;
- **broadcast** — the app's ``with tracer.broadcast():`` block, entered and left;
- **send** — the app sends the answer: the send wrapper, without the write below;
- **data out** — the server writes the answer's frame: the tap decodes it;
- **message spans** — the message is over: the emitters hand its five spans (message, frame,
  broadcast, send, frame) as on ``wstrace serve``'s set-up — one template fact, the values
  the export process builds them from (:mod:`tracer.export.message_facts`) — to a span
  processor that keeps nothing.  Messages are emitted a batch at a time
  (:mod:`tracer.recorder.emit.batches`; here, a batch is as many as make one), in the stage
  of the message that completes the batch: this stage's figure is the mean over every
  message, the others' their median.

A connection's own life (:func:`measure_connection`) is played the same way, from the
socket's ``connection_made`` to its ``connection_lost``, with the auction app's ASGI chain (13
layers, entered and left through :func:`tracer.asgi.run_layer` as under
:class:`~tracer.TracingMiddleware`); the HTTP layer's hooks (head parse, upgrade, switch) and
the middleware's own set-up are not in it.

Clock reads between the stages split each message's time with nothing counted twice; each
stage's figure is its median over thousands of messages.  A message's index stays under
``max_messages_per_trace`` (every message a child of its connection, as at the start of a
benchmark round).  A tight loop keeps caches warm and leaves the garbage collector little to
walk: in a server, between other work, the same code costs more; the shares are what this says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import statistics
from collections.abc import Callable, Iterator
from time import perf_counter_ns, time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from tracer import vocab
from tracer.asgi import run_layer, server_chain
from tracer.config import TracerConfig
from tracer.export.facts import span_count
from tracer.hooks import ws
from tracer.hooks.context import RECORD_ATTRIBUTE, Active
from tracer.recorder import ConnectionRecord, Recorder, broadcast
from tracer.recorder.emit.batches import emit_waiting
from tracer.wire import CloseCode, Opcode, accept_key, encode_frame

STAGES = ("receive", "data in", "broadcast", "send", "data out", "message spans")
CONNECTION_STAGES = (
    "made", "request", "app start", "accept", "greeting", "close in", "close out", "app end",
    "lost",
)  # fmt: skip
"""A connection's life: the socket connected; the request head arrives; the app and its chain
start; it accepts (the 101 written, the handshake's spans out); it sends a greeting; the
client's close frame arrives (the greeting's spans out), and the server's goes back; the
chain and the app end; the socket is lost (the close and the connection's spans out)."""
CHAIN_LAYERS = (
    "ProxyHeadersMiddleware", "FastAPI", "Starlette", "ServerErrorMiddleware",
    "ExceptionTelemetryMiddleware", "AppBodyLimitMiddleware", "CORSMiddleware",
    "ExceptionMiddleware", "AsyncExitStackMiddleware", "APIRouter", "APIWebSocketRoute",
    "websocket_endpoint",
)  # fmt: skip
"""The auction app's chain under wstrace, outermost first (``solve_dependencies``, the
thirteenth, returns before the endpoint runs and is left out)."""
_CLOSE_CODE = int(CloseCode.NORMAL_CLOSURE).to_bytes(2, "big")
MESSAGES_PER_CONNECTION = 900
"""Under ``TracerConfig.max_messages_per_trace`` (1000): no message becomes a trace of its own."""

_KEY = base64.b64encode(b"wstrace-bench-k!").decode()
_REQUEST = (
    "GET /ws/1 HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()
_RESPONSE = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept_key(_KEY)}\r\n\r\n"
).encode()
_BID = '{"type":"bid","bidder":"alice","amount":1234}'
_ANSWER = '{"type":"bid","bidder":"alice","amount":1234,"at":1733000000.123}'


class _Count(SpanProcessor):
    """Counts the spans and keeps none: their export is not the hooks' cost.  It takes them
    as facts, as ``wstrace serve``'s pipeline does (:mod:`tracer.export.facts`)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: Any) -> None:
        self.ended += 1

    def takes_facts(self) -> bool:
        return True

    def on_fact(self, fact: Any) -> None:
        self.ended += span_count(fact)  # a message's family counts every span it holds


class _Transport:
    """The socket's side of a transport: takes writes, does nothing."""

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name in ("peername", "sockname") else default


class _Protocol:
    """Stands in for uvicorn's protocol object: the wrappers keep their record in its dict."""


async def _open_connection(family: ws.Family, code: dict[str, Any]) -> tuple[_Protocol, Any]:
    """A connection through the real wrappers up to its 101: (protocol, tapped transport).

    Awaited in the task that then plays the messages: as in a server, the app's task context
    holds its current message, and nothing leaks into the caller's."""
    protocol = _Protocol()
    ws.make_connection_made(family, code)(_keep_transport)(protocol, _Transport())
    ws.data_received_hook(_ignore)(protocol, _REQUEST)
    record: ConnectionRecord = protocol.__dict__[RECORD_ATTRIBUTE]
    record.on_app_start(time_ns(), None)
    tap = protocol.transport

    async def accept(self: Any, message: Any) -> None:
        tap.write(_RESPONSE)

    await ws.send_hook(accept)(protocol, {"type": "websocket.accept"})
    return protocol, tap


async def _messages(
    family: ws.Family, code: dict[str, Any], count: int, counter: _Count
) -> list[list[int]]:
    """A new connection and ``count`` echoed messages on it; per message, the ns each stage
    took (in STAGES order)."""
    protocol, tap = await _open_connection(family, code)
    counter.ended = 0  # the handshake's spans are not the messages'
    record: ConnectionRecord = protocol.__dict__[RECORD_ATTRIBUTE]
    frame_in = encode_frame(Opcode.TEXT, _BID.encode(), mask=b"\x01\x02\x03\x04")
    frame_out = encode_frame(Opcode.TEXT, _ANSWER.encode())
    received = {"type": "websocket.receive", "text": _BID}
    answer = {"type": "websocket.send", "text": _ANSWER}
    marks: list[int] = []

    def queue_message(self: Any, data: bytes) -> None:  # data_received: queue, pause reading
        tap.pause_reading()

    async def receive(self: Any) -> Any:  # uvicorn's receive: the message is there already
        marks.append(perf_counter_ns())
        data_received(protocol, frame_in)
        marks.append(perf_counter_ns())
        tap.resume_reading()
        return received

    async def send(self: Any, message: Any) -> None:  # uvicorn's send: one frame written
        marks.append(perf_counter_ns())
        tap.write(frame_out)
        marks.append(perf_counter_ns())

    # The protocol's methods, hooked as in a server (ws.patches installs them on its class).
    data_received = ws.data_received_hook(queue_message)
    hooked_receive = ws.receive_hook(receive)
    hooked_send = ws.send_hook(send)

    stages: list[list[int]] = []
    for _ in range(count):
        marks.clear()
        started = perf_counter_ns()
        record.on_receive_enter(time_ns())  # the previous message is over: its spans go out
        marks.append(perf_counter_ns())
        await hooked_receive(protocol)
        marks.append(perf_counter_ns())
        with broadcast():
            marks.append(perf_counter_ns())
            await hooked_send(protocol, answer)
            marks.append(perf_counter_ns())
        marks.append(perf_counter_ns())
        emitted, asked, decoded, handed, opened, wrote, written, sent, left = marks
        stages.append([
            (asked - emitted) + (handed - decoded),  # receive: the call, then the handover
            decoded - asked,  # data in
            (opened - handed) + (left - sent),  # broadcast: the block's entry and exit
            (wrote - opened) + (sent - written),  # send: around the write
            written - wrote,  # data out
            emitted - started,  # message spans (of the previous message, or of a batch)
        ])
    emit_waiting()  # what the last batch left (not timed: each batch was, once)
    return stages


@contextlib.contextmanager
def _recording() -> Iterator[_Count]:
    """The hooks report to a recorder of their own while the block runs: the counter of the
    spans it makes."""
    provider = TracerProvider()
    counter = _Count()
    provider.add_span_processor(counter)
    before, Active.recorder = Active.recorder, Recorder(provider, TracerConfig())
    try:
        yield counter
    finally:
        Active.recorder = before
        provider.shutdown()


def measure(messages: int = 9000) -> dict[str, float]:
    """µs per message of each stage over ``messages`` echoed messages (medians; the message
    spans' a mean, see the module's docstring), and how many
    spans were made per message (``spans``: five, if every stage was traced)."""
    family = ws.FAMILIES["websockets-sansio"]  # the benchmark's server
    code = ws.stage_code(family)
    per_stage: list[list[int]] = [[] for _ in STAGES]
    with _recording() as counter:
        for first in range(0, messages, MESSAGES_PER_CONNECTION):
            count = min(MESSAGES_PER_CONNECTION, messages - first)
            played = asyncio.run(_messages(family, code, count, counter))
            for stages in played[1:]:  # [0]: no previous message to emit
                for kept, ns in zip(per_stage, stages, strict=True):
                    kept.append(ns)
    figures = {
        stage: statistics.median(ns) / 1000 for stage, ns in zip(STAGES, per_stage, strict=True)
    }
    # A batch of messages is emitted in one message's stage: that one's figure is the mean.
    figures[STAGES[-1]] = statistics.mean(per_stage[-1]) / 1000
    return {**figures, "spans": counter.ended / max(1, count - 1)}


class _App:
    """Stands in for the ASGI app (the key of its cached handshake stack)."""


async def _connection(made: Any, layers: list[Any], app: _App) -> list[int]:
    """One connection's life through the real wrappers; the ns each stage took (in
    CONNECTION_STAGES order)."""
    protocol = _Protocol()
    data_received = ws.data_received_hook(_ignore)  # as ws.patches installs it on the class
    connection_lost = ws.connection_lost_hook(_ignore)
    marks = [perf_counter_ns()]
    made(protocol, _Transport())
    marks.append(perf_counter_ns())
    data_received(protocol, _REQUEST)
    marks.append(perf_counter_ns())
    record: ConnectionRecord = protocol.__dict__[RECORD_ATTRIBUTE]
    tap = protocol.transport
    greeting = {"type": "websocket.send", "text": _ANSWER}
    close_in = encode_frame(Opcode.CLOSE, _CLOSE_CODE, mask=b"\x01\x02\x03\x04")

    async def write_101(self: Any, message: Any) -> None:
        tap.write(_RESPONSE)

    async def write_greeting(self: Any, message: Any) -> None:
        tap.write(encode_frame(Opcode.TEXT, _ANSWER.encode()))

    send_101, send_greeting = ws.send_hook(write_101), ws.send_hook(write_greeting)

    async def endpoint() -> None:  # the innermost layer: accept, greet, wait for the close
        marks.append(perf_counter_ns())
        await send_101(protocol, {"type": "websocket.accept"})
        marks.append(perf_counter_ns())
        await send_greeting(protocol, greeting)
        marks.append(perf_counter_ns())
        record.on_receive_enter(time_ns())
        data_received(protocol, close_in)
        marks.append(perf_counter_ns())
        tap.write(encode_frame(Opcode.CLOSE, _CLOSE_CODE))
        marks.append(perf_counter_ns())

    async def layer(depth: int) -> None:
        inner = layer(depth + 1) if depth + 1 < len(layers) else endpoint()
        await run_layer(chain, layers[depth], inner)

    record.on_app_start(time_ns(), app)
    chain = server_chain(record.app_span, record.recorder.tracer, record.recorder)
    token = otel_context.attach(trace.set_span_in_context(chain))
    await layer(0)
    otel_context.detach(token)
    record.on_app_end(time_ns(), None)
    marks.append(perf_counter_ns())
    connection_lost(protocol, None)
    marks.append(perf_counter_ns())
    return [later - earlier for earlier, later in itertools.pairwise(marks)]


def _ignore(*args: Any) -> None:
    pass


def _keep_transport(protocol: Any, transport: Any) -> None:
    """Stands in for the protocol's ``connection_made``: keeps the transport it is handed
    (the tapped one), as uvicorn's protocols do."""
    protocol.transport = transport


def measure_connection(connections: int = 3000) -> dict[str, float]:
    """Median µs per connection of each of its stages (:data:`CONNECTION_STAGES`) over
    ``connections`` connections, and how many spans each made (``spans``)."""
    family = ws.FAMILIES["websockets-sansio"]
    made = ws.make_connection_made(family, ws.stage_code(family))(_keep_transport)
    layers = [(name, {vocab.MIDDLEWARE_LAYER: name}) for name in CHAIN_LAYERS]
    app = _App()

    async def play() -> list[list[int]]:
        return [await _connection(made, layers, app) for _ in range(connections)]

    with _recording() as counter:
        played = asyncio.run(play())
    kept = played[len(played) // 10 :]  # the first ones fill the caches
    medians = [statistics.median(stage) / 1000 for stage in zip(*kept, strict=True)]
    figures = dict(zip(CONNECTION_STAGES, medians, strict=True))
    return {**figures, "spans": counter.ended / connections}


def _table(
    report: Callable[[str], None], what: str, figures: dict[str, float], stages: tuple[str, ...]
) -> None:
    total = sum(figures[name] for name in stages)
    report(f"hooks per {what} (connection shape, {figures['spans']:.0f} spans), medians, "
           "this process:")
    for name in (*stages, "total"):
        us = total if name == "total" else figures[name]
        report(f"  {name:<14} {us:6.2f} µs  {us / total:4.0%}")


def main(report: Callable[[str], None] = print) -> None:
    _table(report, "echoed message", measure(), STAGES)
    _table(report, "connection", measure_connection(), CONNECTION_STAGES)


if __name__ == "__main__":
    main()
