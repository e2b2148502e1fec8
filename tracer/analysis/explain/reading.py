"""Reading one connection's spans: lookups by stage, attribute helpers, and the recorded frames
and stack turned back into what they describe.  Shared by the steps of the walkthrough."""

from __future__ import annotations

import re
from typing import Any

from tracer import vocab
from tracer.analysis import fmt
from tracer.analysis.explain.framebits import (
    rebuild_header,
)
from tracer.analysis.explain.model import Table, Val
from tracer.analysis.explain.source import CodeRef, resolve
from tracer.export.records import EventRecord, SpanRecord
from tracer.export.traceset import Connection, TraceSet
from tracer.wire.codes import Opcode


class Spans:
    """The spans of one connection, by name, in start order."""

    def __init__(self, traces: TraceSet, conn: Connection) -> None:
        self.traces = traces
        self.conn = conn
        self.all = conn.spans

    def first(self, name: str, within: SpanRecord | None = None) -> SpanRecord | None:
        pool = self.all if within is None else [s for s, _ in self.traces.walk(within)]
        return next((s for s in pool if s.name == name), None)

    def named(self, name: str) -> list[SpanRecord]:
        return [s for s in self.all if s.name == name]

    def layers(self) -> list[SpanRecord]:
        return [s for s in self.all if vocab.MIDDLEWARE_LAYER in s.attributes]


def attr(span: SpanRecord | None, key: str, default: Any = None) -> Any:
    return default if span is None else span.attributes.get(key, default)


def integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def code_ref(span: SpanRecord | None) -> CodeRef | None:
    """The installed code of the function a span recorded, or None if it recorded none."""
    function = attr(span, vocab.CODE_FUNCTION_NAME)
    if not isinstance(function, str) or not function:
        return None
    return resolve(function, recorded_line=integer(attr(span, vocab.CODE_LINE_NUMBER)))


def code_refs(*spans: SpanRecord | None) -> list[CodeRef]:
    refs: list[CodeRef] = []
    for span in spans:
        ref = code_ref(span)
        if ref is not None and all(r.function != ref.function for r in refs):
            refs.append(ref)
    return refs


def headers_of(span: SpanRecord | None) -> list[tuple[str, str]]:
    """Recorded request headers (allowlisted and redacted when recorded), in recorded order."""
    found = []
    for key, value in span.attributes.items() if span is not None else ():
        if key.startswith(vocab.HTTP_REQUEST_HEADER_PREFIX):
            name = key[len(vocab.HTTP_REQUEST_HEADER_PREFIX) :]
            values = value if isinstance(value, list) else [value]
            found.extend((name, str(v)) for v in values)
    return found


def field_name(name: str) -> str:
    """``sec-websocket-key`` → ``Sec-WebSocket-Key``: the spelling of RFC 6455's examples."""
    return "-".join(
        "WebSocket" if part == "websocket" else part.title() for part in name.split("-")
    )


def header(span: SpanRecord | None, name: str) -> str | None:
    return next((v for n, v in headers_of(span) if n == name), None)


def facts(*rows: tuple[str, Any]) -> Table:
    """A two-column table of recorded values; rows whose value is None are left out."""
    return Table(["field", "value"], [[label, Val(v)] for label, v in rows if v is not None])


def ms(ns: Any) -> str | None:
    value = integer(ns)
    return None if value is None else fmt.duration(value)


def stack_event(accept: SpanRecord | None) -> EventRecord | None:
    if accept is None:
        return None
    return next((e for e in accept.events if e.name == vocab.EVENT_HANDSHAKE_STACK), None)


def stack_refs(event: EventRecord) -> list[CodeRef]:
    """The recorded stack, innermost first (as a traceback reads bottom-up), resolved."""
    functions = list(event.attributes.get(vocab.STACK_FUNCTIONS) or [])
    files = list(event.attributes.get(vocab.STACK_FILES) or [])
    lines = list(event.attributes.get(vocab.STACK_LINES) or [])
    refs = []
    for i, function in enumerate(functions):
        file = str(files[i]) if i < len(files) else ""
        line = integer(lines[i]) if i < len(lines) else None
        refs.append(resolve(str(function), recorded_file=file, recorded_line=line, in_body=True))
    return refs[::-1]


def frames_named(s: Spans, name: str) -> list[tuple[int, SpanRecord | EventRecord]]:
    found: list[tuple[int, SpanRecord | EventRecord]] = []
    for span in s.all:
        if span.name == name:
            found.append((span.start_ns, span))
        found.extend((e.time_ns, e) for e in span.events if e.name == name)
    found.sort(key=lambda item: item[0])
    return found


def first_data_frame(s: Spans) -> SpanRecord | EventRecord | None:
    """The first frame the client sent after the handshake (a data frame if there is one)."""
    frames = [f for _, f in frames_named(s, vocab.WS_FRAME_RECEIVE)]
    for frame in frames:
        if integer(frame.attributes.get(vocab.WS_OPCODE)) in (Opcode.TEXT, Opcode.BINARY):
            return frame
    return frames[0] if frames else None


def frame_header_bytes(a: dict[str, Any]) -> bytes | None:
    """The header bytes rebuilt from a recorded frame's fields (None if a field is missing)."""
    try:
        key_hex = a.get(vocab.WS_MASKING_KEY)
        return rebuild_header(
            fin=bool(a[vocab.WS_FIN]),
            rsv=int(a.get(vocab.WS_RSV, 0)),
            opcode=int(a[vocab.WS_OPCODE]),
            masking_key=bytes.fromhex(str(key_hex)) if a.get(vocab.WS_MASK) and key_hex else None,
            payload_length=int(a[vocab.WS_PAYLOAD_LENGTH]),
        )
    except (KeyError, TypeError, ValueError):
        return None


_ESCAPED_BYTE = re.compile(r"\\x([0-9a-f]{2})")


def preview_bytes(a: dict[str, Any]) -> bytes | None:
    """The captured payload bytes (unmasked).  The recorder stores them as UTF-8 text with
    undecodable bytes written ``\\xNN``; those are turned back into bytes."""
    preview = a.get(vocab.WS_PAYLOAD_PREVIEW)
    if not isinstance(preview, str):
        return None
    out = bytearray()
    position = 0
    for match in _ESCAPED_BYTE.finditer(preview):
        out += preview[position : match.start()].encode("utf-8", "replace")
        out.append(int(match[1], 16))
        position = match.end()
    out += preview[position:].encode("utf-8", "replace")
    return bytes(out)


def message_of(s: Spans, frame: SpanRecord | EventRecord | None) -> SpanRecord | None:
    if isinstance(frame, SpanRecord):
        parent = s.traces.parent(frame)
        if parent is not None and parent.name == vocab.WS_MESSAGE_RECEIVE:
            return parent
    if isinstance(frame, EventRecord):
        for span in s.named(vocab.WS_MESSAGE_RECEIVE):
            if frame in span.events:
                return span
    return s.first(vocab.WS_MESSAGE_RECEIVE)
