"""The data the HTML viewer embeds: a trace set reduced to compact, JSON-ready tables.

The page must open a trace of a thousand connections quickly, so the model is not the raw
OTLP JSON but a few tables that repeat nothing:

* ``s`` — every string once (span names, attribute keys, string values, paths…);
* ``p`` — every distinct attribute ``(key, value)`` pair once, as ``[key, kind, value]``:
  a frame's ``websocket.fin=True`` or a stage's ``code.file.path`` is stored once for the
  whole file, and a span lists the indexes of its pairs;
* ``conns`` — one object per connection, holding its spans as arrays of small integers
  (times in nanoseconds from the connection's start), the frames on its wire, its
  broadcasts' fan-out and its handshake stack.

Spans are arrays, positions named by the ``SPAN_*`` constants below (the viewer's script
uses the same positions)::

    [name, parent, start, duration, pairs, span_id, status, status_message, events, kind, trace]

``parent`` is the index of the parent span within the connection (-1 for a root),
``events`` is ``[[name, time, pairs], ...]`` and ``trace`` indexes the connection's
``traces`` list (its own trace first, then linked message traces).

A connection's ``frames`` are the frames that crossed *its* socket — the ones it received,
and the ones sent to it, wherever the send was recorded (a broadcast's sends live under the
sender's message) — as ``[time, conn, span, event, direction, message conn, message span]``:
where the frame is recorded (``event`` -1 for a frame span), and the message it belongs to.
``fan`` lists its broadcasts as ``[broadcast, trigger message, first frame in, sends]`` with
each send ``[span, recipient conn, last frame out]``.  ``stack`` holds the handshake stack's
rows ``[function, short file, line, package]``, outermost first.

Values are kept as recorded: nothing is escaped or trimmed here.  The page renders every
string as text, never as markup, and shows control characters visibly.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tracer import vocab
from tracer.analysis import fmt
from tracer.analysis.stats import (
    compute_stats,
    first_frame_in,
    last_frame_out,
)
from tracer.export.records import EventRecord, SpanRecord
from tracer.export.traceset import Connection, TraceSet

MODEL_VERSION = 1

# Positions in a span array.
SPAN_NAME, SPAN_PARENT, SPAN_START, SPAN_DUR, SPAN_PAIRS, SPAN_ID = range(6)
SPAN_STATUS, SPAN_STATUS_MESSAGE, SPAN_EVENTS, SPAN_KIND, SPAN_TRACE = range(6, 11)

# Kinds of attribute value in a pair ``[key, kind, value]``.
KIND_STR = 0
"""``value`` indexes the string table."""
KIND_NUM = 1
"""``value`` is a JSON number (an integer within 2**53, or a finite float)."""
KIND_BOOL = 2
"""``value`` is 0 or 1."""
KIND_JSON = 3
"""``value`` is a list or object, as JSON (strings inside it are raw)."""
KIND_BYTES = 4
"""``value`` indexes the string table: the bytes as hex."""
KIND_TEXT = 5
"""``value`` indexes the string table: a number JSON cannot hold (big int, NaN, ±inf)."""
KIND_NULL = 6

DIR_RECEIVE = 0
DIR_SEND = 1

# Latency histograms: logarithmic bins, BINS_PER_DECADE per power of ten from HIST_MIN_NS.
HIST_MIN_NS = 100
BINS_PER_DECADE = 8
HIST_BINS = 9 * BINS_PER_DECADE  # 100 ns .. 100 s

_MAX_SAFE_INT = 2**53 - 1
_PACKAGE_GROUPS = (
    "uvicorn",
    "websockets",
    "wsproto",
    "starlette",
    "fastapi",
    "h11",
    "httptools",
    "anyio",
    "tracer",
)


class _Table:
    """Interning table: each distinct item gets one index, in first-seen order."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._index: dict[Any, int] = {}

    def add(self, key: Any, item: Any = None) -> int:
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.items)
            self.items.append(key if item is None else item)
        return index


@dataclass
class _Interner:
    strings: _Table
    pairs: _Table

    def s(self, value: str) -> int:
        return self.strings.add(value)

    def pair(self, key: str, value: Any) -> int:
        kind, encoded, identity = self._encode(value)
        return self.pairs.add((key, kind, identity), [self.s(key), kind, encoded])

    def pair_list(self, attributes: dict[str, Any]) -> list[int]:
        return [self.pair(key, value) for key, value in attributes.items()]

    def _encode(self, value: Any) -> tuple[int, Any, Any]:
        """``(kind, value as embedded, hashable identity for interning)``."""
        if value is None:
            return KIND_NULL, 0, None
        if isinstance(value, bool):
            return KIND_BOOL, int(value), value
        if isinstance(value, str):
            return KIND_STR, self.s(value), value
        if isinstance(value, bytes):
            text = value.hex()
            return KIND_BYTES, self.s(text), ("bytes", text)
        if isinstance(value, int):
            if abs(value) <= _MAX_SAFE_INT:
                return KIND_NUM, value, ("n", value)
            return KIND_TEXT, self.s(str(value)), ("t", str(value))
        if isinstance(value, float):
            if math.isfinite(value):
                return KIND_NUM, value, ("n", value)
            return KIND_TEXT, self.s(repr(value)), ("t", repr(value))
        plain = _plain(value)
        text = json.dumps(plain, sort_keys=True, ensure_ascii=True)
        return KIND_JSON, plain, ("j", text)


def _plain(value: Any) -> Any:
    """A list/dict attribute as JSON-safe data (bytes → hex, non-finite floats → text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_SAFE_INT:
        return str(value)
    return value


# --- Per-connection facts ------------------------------------------------------------------


def package_of(path: str) -> str:
    """Which package a stack frame's file belongs to: the groups the stack view colours."""
    normalised = path.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/"):
        index = normalised.rfind(marker)
        if index >= 0:
            top = normalised[index + len(marker) :].split("/", 1)[0]
            top = top.removesuffix(".py")
            return "wstrace" if top == "tracer" else top
    if "/asyncio/" in normalised:
        return "asyncio"
    if "/lib/python3" in normalised or normalised.startswith("<frozen"):
        return "python"
    return "app"


def _close_span(conn: Connection) -> SpanRecord | None:
    return next((s for s in conn.spans if s.name == vocab.WS_CLOSE), None)


def _handshake_ns(conn: Connection) -> int | None:
    span = next((s for s in conn.spans if s.name == vocab.WS_HANDSHAKE), None)
    return None if span is None else span.duration_ns


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def incomplete_reasons(traces: TraceSet, conn: Connection) -> list[str]:
    """Why a connection's record is not whole, in words; empty when nothing is missing."""
    reasons: list[str] = []
    dropped = sum(_int(s.attributes.get(vocab.FRAMES_DROPPED)) or 0 for s in conn.spans)
    if dropped:
        reasons.append(f"{dropped} frames not recorded")
    overflowed = sum(1 for s in conn.spans if s.attributes.get(vocab.MESSAGES_OVERFLOWED))
    if overflowed:
        reasons.append(f"{overflowed} message traces overflowed")
    for span in conn.spans:
        for key, value in span.attributes.items():
            if key.endswith(".incomplete") and value:
                reasons.append(f"{span.name}: {key}")
    accepted = conn.root.attributes.get(vocab.HTTP_RESPONSE_STATUS_CODE) == 101
    if accepted and _close_span(conn) is None:
        reasons.append("no ws.close recorded")
    return reasons


def _wire_connection(
    traces: TraceSet, conn: Connection, frame_holder: SpanRecord, recipient: Any
) -> Connection:
    """The connection whose socket a frame went over: a send's recipient, else the owner."""
    if frame_holder.name == vocab.WS_MESSAGE_SEND:
        return recipient(frame_holder) or conn
    for ancestor in traces.ancestors(frame_holder):
        if ancestor.name == vocab.WS_MESSAGE_SEND:
            return recipient(ancestor) or conn
        if ancestor.name == vocab.CONNECTION:
            break
    return conn


def _message_of(traces: TraceSet, span: SpanRecord) -> SpanRecord | None:
    """The message a frame belongs to (the frame span's parent or the event's span)."""
    candidates = [span, *traces.ancestors(span)]
    return next(
        (s for s in candidates if s.name in (vocab.WS_MESSAGE_RECEIVE, vocab.WS_MESSAGE_SEND)),
        None,
    )


# --- The model -----------------------------------------------------------------------------


class _Builder:
    """Walks a trace set once, filling the string and pair tables and the connection list."""

    def __init__(self, traces: TraceSet) -> None:
        self.traces = traces
        self.intern = _Interner(_Table(), _Table())
        self.local: dict[tuple[str, str], tuple[int, int]] = {}
        """(trace, span) → (connection position, span position): cross-connection refs."""
        for ci, conn in enumerate(traces.connections):
            for si, span in enumerate(conn.spans):
                self.local[span.key] = (ci, si)
        self.conn_pos = {id(conn): ci for ci, conn in enumerate(traces.connections)}
        self.wire_frames: dict[int, list[list[int]]] = defaultdict(list)
        self.by_id: dict[Any, list[Connection]] = defaultdict(list)
        for conn in traces.connections:
            self.by_id[conn.connection_id].append(conn)

    def recipient(self, send: SpanRecord) -> Connection | None:
        """:meth:`TraceSet.recipient` (by link, else by unique connection id), indexed."""
        for link in send.links:
            where = self.local.get((link.trace_id, link.span_id))
            if where is not None:
                return self.traces.connections[where[0]]
        wanted = send.attributes.get(vocab.CONNECTION_ID)
        matches = self.by_id.get(wanted, []) if wanted is not None else []
        return matches[0] if len(matches) == 1 else None

    def span_row(self, conn: Connection, span: SpanRecord, base: int, traces_idx: dict) -> list:
        s = self.intern.s
        parent = self.traces.parent(span)
        parent_pos = self.local.get(parent.key, (-1, -1)) if parent is not None else (-1, -1)
        same = parent_pos[0] == self.conn_pos[id(conn)]
        events = [
            [s(e.name), e.time_ns - base, self.intern.pair_list(e.attributes)] for e in span.events
        ]
        return [
            s(span.name),
            parent_pos[1] if same else -1,
            span.start_ns - base,
            span.duration_ns,
            self.intern.pair_list(span.attributes),
            span.span_id,
            span.status.code,
            s(span.status.message),
            events,
            span.kind,
            traces_idx[span.trace_id],
        ]

    def collect_frames(self, ci: int, conn: Connection) -> None:
        """Each frame (span or event) of this connection's spans, filed under its wire."""
        for si, span in enumerate(conn.spans):
            if fmt.is_frame(span.name):
                self._frame(conn, ci, si, -1, span, span.name, span.start_ns)
            for ei, event in enumerate(span.events):
                if fmt.is_frame(event.name):
                    self._frame(conn, ci, si, ei, span, event.name, event.time_ns)

    def _frame(
        self, conn: Connection, ci: int, si: int, ei: int, span: SpanRecord, name: str, t: int
    ) -> None:
        direction = DIR_RECEIVE if name == vocab.WS_FRAME_RECEIVE else DIR_SEND
        wire = (
            _wire_connection(self.traces, conn, span, self.recipient)
            if direction == DIR_SEND
            else conn
        )
        message = _message_of(self.traces, span)
        mci, msi = self.local.get(message.key, (-1, -1)) if message is not None else (-1, -1)
        self.wire_frames[self.conn_pos[id(wire)]].append([t, ci, si, ei, direction, mci, msi])

    def fanout(self, conn: Connection, base: int) -> list:
        """Per broadcast: ``[broadcast, trigger, first frame in, [[send, to conn, last out]]]``."""
        result = []
        positions = {span.key: i for i, span in enumerate(conn.spans)}
        for span in conn.spans:
            if span.name != vocab.WS_BROADCAST:
                continue
            trigger = next(
                (a for a in self.traces.ancestors(span) if a.name == vocab.WS_MESSAGE_RECEIVE),
                None,
            )
            first_in = first_frame_in(self.traces, trigger) if trigger else span.start_ns
            sends = []
            for send in self.traces.children(span):
                if send.name != vocab.WS_MESSAGE_SEND:
                    continue
                target = self.recipient(send)
                to = self.conn_pos[id(target)] if target is not None else -1
                sends.append([positions[send.key], to, last_frame_out(self.traces, send) - base])
            result.append(
                [
                    positions[span.key],
                    positions.get(trigger.key, -1) if trigger else -1,
                    first_in - base,
                    sends,
                ]
            )
        return result

    def stack(self, conn: Connection) -> dict | None:
        for si, span in enumerate(conn.spans):
            for ei, event in enumerate(span.events):
                if event.name == vocab.EVENT_HANDSHAKE_STACK:
                    return {"span": si, "event": ei, "rows": self._stack_rows(event)}
        return None

    def _stack_rows(self, event: EventRecord) -> list[list[Any]]:
        s = self.intern.s
        a = event.attributes
        functions = list(a.get(vocab.STACK_FUNCTIONS) or [])
        files = list(a.get(vocab.STACK_FILES) or [])
        lines = list(a.get(vocab.STACK_LINES) or [])
        rows = []
        for i, function in enumerate(functions):
            file = str(files[i]) if i < len(files) else "?"
            line = lines[i] if i < len(lines) else None
            line = line if isinstance(line, int) and not isinstance(line, bool) else None
            rows.append([s(str(function)), s(fmt.short_path(file)), line, s(package_of(file))])
        return rows

    def connection(self, conn: Connection, t0: int) -> dict[str, Any]:
        s = self.intern.s
        base = conn.start_ns
        trace_ids = [conn.root.trace_id]
        for root in conn.linked_roots:
            if root.trace_id not in trace_ids:
                trace_ids.append(root.trace_id)
        for span in conn.spans:
            if span.trace_id not in trace_ids:
                trace_ids.append(span.trace_id)
        traces_idx = {t: i for i, t in enumerate(trace_ids)}
        a = conn.root.attributes
        close = _close_span(conn)
        ca = close.attributes if close is not None else {}
        close_code = _int(ca.get(vocab.WS_CLOSE_CODE, a.get(vocab.WS_CLOSE_CODE)))
        errors = [
            sp.name for sp in conn.spans if sp.status.is_error or vocab.ERROR_TYPE in sp.attributes
        ]
        errors += [
            e.name for sp in conn.spans for e in sp.events if e.name == vocab.EVENT_PROTOCOL_ERROR
        ]
        return {
            "n": conn.connection_id if conn.connection_id is not None else conn.index,
            "peer": s(conn.peer),
            "path": s(str(a.get(vocab.URL_PATH, ""))),
            "http": s(str(a.get(vocab.IMPL_HTTP, "?"))),
            "ws": s(str(a.get(vocab.IMPL_WS, "?"))),
            "t": base - t0,
            "d": conn.end_ns - base,
            "hs": _handshake_ns(conn),
            "st": _int(a.get(vocab.HTTP_RESPONSE_STATUS_CODE)),
            "in": sum(1 for sp in conn.spans if sp.name == vocab.WS_MESSAGE_RECEIVE),
            "out": 0,  # counted by recipient once every connection is known
            "cc": close_code,
            "ci": s(str(ca.get(vocab.WS_CLOSE_INITIATOR, ""))),
            "cr": s(str(ca.get(vocab.WS_CLOSE_REASON, ""))),
            "err": len(errors),
            "errs": [s(name) for name in dict.fromkeys(errors)],
            "inc": [s(reason) for reason in incomplete_reasons(self.traces, conn)],
            "traces": trace_ids,
            "spans": [self.span_row(conn, span, base, traces_idx) for span in conn.spans],
            "fan": self.fanout(conn, base),
            "stack": self.stack(conn),
        }


def installed_versions(traces: TraceSet) -> dict[str, str]:
    """``{code file path: "uvicorn 0.54.0"}`` for the recorded files that exist here, under a
    ``site-packages`` folder: the distribution that owns the file, at its installed version.

    Only files present on this machine are named, so the version is the one of the very file
    the trace points at (when the view is made where the trace was recorded)."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    owners = packages_distributions()
    files = {
        span.attributes.get(vocab.CODE_FILE_PATH)
        for span in traces.spans
        if isinstance(span.attributes.get(vocab.CODE_FILE_PATH), str)
    }
    result: dict[str, str] = {}
    for file in sorted(files):
        top = package_of(file)
        dists = owners.get(top, [])
        if top in ("app", "asyncio", "python") or not dists or not os.path.exists(file):
            continue
        try:
            result[file] = f"{dists[0]} {version(dists[0])}"
        except PackageNotFoundError:
            continue
    return result


def _histogram(values: list[int]) -> list[int]:
    """Counts per logarithmic bin (values below 100 ns in the first, above 100 s in the last)."""
    counts = [0] * HIST_BINS
    for value in values:
        if value <= HIST_MIN_NS:
            index = 0
        else:
            index = int(math.log10(value / HIST_MIN_NS) * BINS_PER_DECADE)
        counts[min(HIST_BINS - 1, max(0, index))] += 1
    return counts


def _latency(traces: TraceSet) -> dict[str, Any]:
    """Per stage and for fan-out / queue wait / handler: the summary and a histogram."""
    from tracer.analysis.stats import fanout_latencies

    stats = compute_stats(traces)
    durations: dict[str, list[int]] = defaultdict(list)
    queue: list[int] = []
    handler: list[int] = []
    for span in traces.spans:
        durations[span.name].append(span.duration_ns)
        if span.name == vocab.WS_MESSAGE_RECEIVE:
            for key, into in ((vocab.QUEUE_WAIT_NS, queue), (vocab.HANDLER_NS, handler)):
                value = span.attributes.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    into.append(value)
    fanout, _ = fanout_latencies(traces)

    def row(name: str, summary: Any, values: list[int], stage: bool) -> dict[str, Any]:
        return {"name": name, "stage": stage, **summary.to_json(), "hist": _histogram(values)}

    return {
        "method": stats.to_json()["percentile_method"],
        "hist": {"min_ns": HIST_MIN_NS, "per_decade": BINS_PER_DECADE, "bins": HIST_BINS},
        "stages": [
            row(name, summary, durations[name], name in vocab.STAGE_SPAN_NAMES)
            for name, summary in stats.stages.items()
        ],
        "derived": [
            row("fan-out per broadcast", stats.fanout, fanout, False),
            row("queue wait", stats.queue_wait, queue, False),
            row("handler", stats.handler, handler, False),
        ],
        "untriggered": stats.broadcasts_without_trigger,
    }


def build_model(traces: TraceSet, *, sources: list[str] | None = None) -> dict[str, Any]:
    """Everything the viewer shows, as one JSON-ready dict (see the module docstring)."""
    builder = _Builder(traces)
    t0 = min((c.start_ns for c in traces.connections), default=0)
    conns = [builder.connection(conn, t0) for conn in traces.connections]
    for ci, conn in enumerate(traces.connections):
        builder.collect_frames(ci, conn)
    for ci, conn in enumerate(traces.connections):
        frames = sorted(builder.wire_frames.get(ci, []), key=lambda f: f[0])
        base = conn.start_ns
        conns[ci]["frames"] = [[f[0] - base, *f[1:]] for f in frames]
    for conn in traces.connections:
        for span in conn.spans:
            if span.name == vocab.WS_MESSAGE_SEND:
                target = builder.recipient(span) or conn
                conns[builder.conn_pos[id(target)]]["out"] += 1
    return {
        "v": MODEL_VERSION,
        "sources": list(sources or []),
        "t0": str(t0),
        "spans": len(traces.spans),
        "unattached": len(traces.unattached),
        "s": builder.intern.strings.items,
        "p": builder.intern.pairs.items,
        "conns": conns,
        "latency": _latency(traces),
        "versions": installed_versions(traces),
    }


__all__ = ["MODEL_VERSION", "build_model", "incomplete_reasons", "package_of"]
