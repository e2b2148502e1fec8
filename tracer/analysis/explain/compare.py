"""The same scenario on every implementation, side by side: where each stage's code lives.

Each column is one trace of the scenario (one WebSocket implementation, or one HTTP parser);
each row is a stage, and a cell names the function that did the work in the installed version,
with its file:line.  A last section compares the shape of the call chains: whether the app runs
inside the handshake, under which span the 101 is written, and the server's own frames at both
ends of the stack recorded at ``accept()``.  Nothing in it depends on timing.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer import vocab
from tracer.analysis.explain.model import Document, Para, RfcRef, Step, Table, Val
from tracer.analysis.explain.reading import Spans, code_ref, stack_event, stack_refs
from tracer.export.traceset import TraceSet

SERVER_PACKAGES = ("uvicorn", "websockets", "wsproto", "h11", "httptools", "zttp")

WS_ROWS: tuple[tuple[str, str], ...] = (
    ("the handshake is driven by", vocab.WS_HANDSHAKE),
    ("the handshake is validated in", vocab.WS_HANDSHAKE_VALIDATE),
    ("the ASGI app is run by", vocab.ASGI_APP),
    ("the app's accept() reaches the server in", vocab.WS_ACCEPT),
    ("the 101 is written by", vocab.WS_HANDSHAKE_RESPONSE),
    ("frames are read in", vocab.WS_FRAME_RECEIVE),
    ("a message is handed to the app by", vocab.WS_MESSAGE_RECEIVE),
    ("a message is sent by", vocab.WS_MESSAGE_SEND),
    ("the end of the connection is seen in", vocab.WS_CLOSE),
)
HTTP_ROWS: tuple[tuple[str, str], ...] = (
    ("the TCP connection is taken by", vocab.CONNECTION),
    ("the request head is parsed in", vocab.HTTP_HEADERS_PARSE),
    ("the upgrade is detected in", vocab.HTTP_UPGRADE_DETECT),
    ("the protocol is switched in", vocab.WS_PROTOCOL_SWITCH),
)


@dataclass
class Run:
    """One column: a label (the implementation) and the trace of the scenario on it."""

    label: str
    traces: TraceSet
    connection: int = 1

    def spans(self) -> Spans:
        return Spans(self.traces, self.traces.connection(self.connection))


def _cell(spans: Spans, name: str) -> list[Val | str]:
    span = spans.first(name)
    ref = code_ref(span)
    if span is None or ref is None:
        return ["(not recorded)"]
    return [Val(ref.qualname), " ", Val(ref.location)]


def _where_table(runs: list[Run], rows: tuple[tuple[str, str], ...]) -> Table:
    all_spans = [run.spans() for run in runs]
    body = []
    for label, name in rows:
        body.append([label, *(_cell(spans, name) for spans in all_spans)])
    return Table(["stage", *(f"`{run.label}`" for run in runs)], body)


def _parent_name(spans: Spans, name: str) -> str:
    span = spans.first(name)
    parent = spans.traces.parent(span) if span is not None else None
    return "(not recorded)" if parent is None else parent.name


def _app_inside_handshake(spans: Spans) -> str:
    handshake, app = spans.first(vocab.WS_HANDSHAKE), spans.first(vocab.ASGI_APP)
    if handshake is None or app is None:
        return "(not recorded)"
    if handshake.start_ns <= app.start_ns <= handshake.end_ns:
        return "yes: the handshake waits for the app's accept()"
    return "no: the app starts after the request is validated"


def _server_frames(spans: Spans, innermost: bool) -> list[Val | str]:
    event = stack_event(spans.first(vocab.WS_ACCEPT))
    if event is None:
        return ["(no stack recorded)"]
    refs = stack_refs(event)  # innermost first
    if not innermost:
        refs = [r for r in refs if r.package and not r.package.startswith("Python ")][::-1]
    picked = []
    for ref in refs:
        top = (ref.module or "").split(".")[0]
        if top not in SERVER_PACKAGES:
            break
        picked.append(ref)
    if not picked:
        return ["(none)"]
    cell: list[Val | str] = []
    for i, ref in enumerate(picked):
        cell += [" → " if i else "", Val(f"{ref.qualname} {ref.location}")]
    return cell


_ORDERED_STAGES = (
    vocab.WS_HANDSHAKE,
    vocab.WS_HANDSHAKE_VALIDATE,
    vocab.ASGI_APP,
    vocab.WS_ACCEPT,
    vocab.WS_HANDSHAKE_RESPONSE,
)


def _stage_order(spans: Spans) -> list[Val | str]:
    """The handshake stages in the order they started: where the implementations differ."""
    firsts = [spans.first(name) for name in _ORDERED_STAGES]
    started = sorted((s.start_ns, s.name) for s in firsts if s is not None)
    cell: list[Val | str] = []
    for i, (_, name) in enumerate(started):
        cell += [" → " if i else "", Val(name)]
    return cell


def _owner(spans: Spans, name: str) -> list[Val | str]:
    ref = code_ref(spans.first(name))
    return ["(not recorded)"] if ref is None or not ref.package else [Val(ref.package)]


def _stack_depth(spans: Spans) -> list[Val | str]:
    event = stack_event(spans.first(vocab.WS_ACCEPT))
    return ["?"] if event is None else [Val(len(event.attributes.get(vocab.STACK_FUNCTIONS) or []))]


def _chain_table(runs: list[Run]) -> Table:
    all_spans = [run.spans() for run in runs]
    rows = [
        ["handshake stages, in the order they start", *map(_stage_order, all_spans)],
        [
            "the handshake is driven by code of",
            *(_owner(s, vocab.WS_HANDSHAKE) for s in all_spans),
        ],
        [
            "the 101 is built by code of",
            *(_owner(s, vocab.WS_HANDSHAKE_RESPONSE) for s in all_spans),
        ],
        ["does the app run inside the handshake span?", *map(_app_inside_handshake, all_spans)],
        [
            "the 101 (`ws.handshake.response`) is written under",
            *(Val(_parent_name(s, vocab.WS_HANDSHAKE_RESPONSE)) for s in all_spans),
        ],
        [
            "the validation (`ws.handshake.validate`) runs under",
            *(Val(_parent_name(s, vocab.WS_HANDSHAKE_VALIDATE)) for s in all_spans),
        ],
        [
            "server frames at the top of the stack at accept() (innermost first)",
            *(_server_frames(s, innermost=True) for s in all_spans),
        ],
        [
            "server frames at the bottom of that stack (the task that runs the app)",
            *(_server_frames(s, innermost=False) for s in all_spans),
        ],
        ["frames in the stack at accept()", *map(_stack_depth, all_spans)],
    ]
    return Table(["", *(f"`{run.label}`" for run in runs)], rows)


def compare(ws_runs: list[Run], http_runs: list[Run]) -> Document:
    """The side-by-side document: WebSocket implementations, HTTP parsers, chain shapes."""
    steps = [
        Step(
            1,
            "ws-where",
            "Where each stage runs, per WebSocket implementation",
            [RfcRef("RFC 6455", "4.2", "Server-Side Requirements")],
            [
                "The same auction scenario, served by uvicorn with each WebSocket "
                "implementation (`--ws`). The legacy `websockets` protocol runs the handshake "
                "as one coroutine; `websockets-sansio` and `wsproto` are sans-I/O libraries "
                "that uvicorn feeds bytes and asks for bytes to write."
            ],
            blocks=[_where_table(ws_runs, WS_ROWS)],
        ),
        Step(
            2,
            "chain",
            "How the call chains differ",
            [RfcRef("RFC 6455", "4.2.2", "Sending the Server's Opening Handshake")],
            [
                "The application code is the same in every column, so the stack at "
                "`accept()` differs only at its two ends: the server code that called the "
                "app, and the server code that receives `websocket.accept`. The real "
                "difference is who drives the handshake: the legacy `websockets` protocol "
                "reads the request and writes the 101 itself, while with `websockets-sansio` "
                "and `wsproto` uvicorn drives and the library only checks the request and "
                "builds the response bytes, which uvicorn writes."
            ],
            blocks=[_chain_table(ws_runs)],
        ),
        Step(
            3,
            "http-where",
            "Where each stage runs, per HTTP parser",
            [RfcRef("RFC 9110", "7.8", "Upgrade")],
            [
                "The same scenario with each HTTP parser (`--http`). The parser only reads "
                "the request head and spots the upgrade; after the switch the WebSocket "
                "implementation owns the connection, whichever parser read the head."
            ],
            blocks=[_where_table(http_runs, HTTP_ROWS)],
        ),
    ]
    intro = [
        Para(
            [
                "Each column is a real run of the same scenario, traced; each cell names the "
                "function that did the work and its file:line in the installed packages."
            ]
        )
    ]
    return Document("WebSocket implementations side by side", intro, steps)


__all__ = ["Run", "compare"]
