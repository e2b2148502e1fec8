"""The terminal view of one connection (or one trace): a span tree with timing bars.

Each line shows a span's name, its duration, a bar placing it on the connection's time axis,
the implementation's ``file:line`` and the few fields that matter for that stage (frame
header bits, close code and reason, the 101 and its accept key…).  Names are padded so the
columns after them line up whatever the depth, which makes the bars readable as a waterfall.
Every recorded string is escaped (:mod:`tracer.analysis.escape`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from tracer import vocab
from tracer.analysis import fmt
from tracer.analysis.escape import neutralise, safe_markup
from tracer.export.records import EventRecord, SpanRecord
from tracer.export.traceset import Connection, TraceSet

DEFAULT_DEPTH = 40
"""Deeper than any real connection (the ASGI chain to ``ws.accept`` is ~14 levels)."""
MAX_DEPTH = 200
"""The most levels shown: rendering recurses once per level, and files are untrusted."""
BAR_WIDTH = 24
GUIDE_WIDTH = 4
"""Columns Rich's tree guides take per level."""
NAME_COLUMN_MAX = 72


@dataclass
class TreeOptions:
    """What to show: ``depth`` levels below the root, frames or not, bar width."""

    depth: int = DEFAULT_DEPTH
    frames: bool = True
    bar_width: int = BAR_WIDTH

    def __post_init__(self) -> None:
        self.depth = max(0, min(self.depth, MAX_DEPTH))


@dataclass
class _Row:
    """One line of the tree before rendering (so names can be padded to a common width)."""

    depth: int
    name: str
    """Already neutralised (control characters made visible), not yet markup-escaped."""
    style: str
    columns: str
    children: list[_Row] = field(default_factory=list)


@dataclass
class _Elided:
    spans: int = 0
    frames: int = 0
    frames_filtered: int = 0


def bar(start: int, end: int, axis_start: int, axis_end: int, width: int = BAR_WIDTH) -> str:
    """``···████······``: where ``[start, end]`` falls in ``[axis_start, axis_end]``.

    At least one cell is filled, so even a 1 µs stage of a 10 s connection is visible.
    """
    total = max(1, axis_end - axis_start)
    left = min(width - 1, max(0, math.floor((start - axis_start) * width / total)))
    right = min(width, max(left + 1, math.ceil((end - axis_start) * width / total)))
    return "·" * left + "█" * (right - left) + "·" * (width - right)


def marker(at: int, axis_start: int, axis_end: int, width: int = BAR_WIDTH) -> str:
    """``·····◆·····``: a point in time (an event) on the same axis."""
    total = max(1, axis_end - axis_start)
    pos = min(width - 1, max(0, math.floor((at - axis_start) * width / total)))
    return "·" * pos + "◆" + "·" * (width - pos - 1)


def _q(value: Any) -> str:
    """A quoted, escaped string value."""
    return '"' + safe_markup(value) + '"'


def span_details(span: SpanRecord, traces: TraceSet | None = None) -> str:
    """The stage-specific fields of a span, as escaped Rich markup."""
    a = span.attributes
    name = span.name
    if fmt.is_frame(name):
        parts = [safe_markup(fmt.frame_summary(a))]
    else:
        details = _DETAILS.get(name)
        parts = details(span, traces) if details is not None else []
    if vocab.HTTP_ROUTE in a and name != vocab.WS_HANDSHAKE_RESPONSE:
        parts.append(f"route={safe_markup(a[vocab.HTTP_ROUTE])}")
    if vocab.ERROR_TYPE in a:
        parts.append(f"[red]error={safe_markup(a[vocab.ERROR_TYPE])}[/red]")
    if span.status.is_error:
        message = f" {_q(span.status.message)}" if span.status.message else ""
        parts.append(f"[bold red]ERROR[/bold red]{message}")
    return "  ".join(parts)


def _connection_details(span: SpanRecord, traces: TraceSet | None) -> list[str]:
    a = span.attributes
    peer = f"{a.get(vocab.CLIENT_ADDRESS, '?')}:{a.get(vocab.CLIENT_PORT, '?')}"
    server = f":{a[vocab.SERVER_PORT]}" if vocab.SERVER_PORT in a else ""
    parts = [safe_markup(f"{peer} → {server} {a.get(vocab.URL_PATH, '')}".strip())]
    impls = [str(a[k]) for k in (vocab.IMPL_HTTP, vocab.IMPL_WS) if k in a]
    if impls:
        parts.append(safe_markup(" + ".join(impls)))
    if vocab.CONNECTION_ID in a:
        parts.append(f"id={safe_markup(a[vocab.CONNECTION_ID])}")
    return parts


def _validate_details(span: SpanRecord, traces: TraceSet | None) -> list[str]:
    a = span.attributes
    return [
        f"{label}={safe_markup(a[key])}"
        for key, label in ((vocab.WS_KEY, "key"), (vocab.WS_VERSION, "version"))
        if key in a
    ]


def _response_details(span: SpanRecord, traces: TraceSet | None) -> list[str]:
    a = span.attributes
    parts: list[str] = []
    if vocab.HTTP_RESPONSE_STATUS_CODE in a:
        parts.append(f"[bold]{safe_markup(a[vocab.HTTP_RESPONSE_STATUS_CODE])}[/bold]")
    if vocab.WS_ACCEPT_KEY in a:
        parts.append(f"accept={safe_markup(a[vocab.WS_ACCEPT_KEY])}")
    valid = a.get(vocab.WS_ACCEPT_VALID)
    if valid is True:
        parts.append("[green]✓ valid[/green]")
    elif valid is False:
        parts.append("[red]✗ INVALID accept[/red]")
    return parts


def _message_details(span: SpanRecord, traces: TraceSet | None) -> list[str]:
    a = span.attributes
    parts: list[str] = []
    if vocab.WS_MESSAGE_TYPE in a:
        parts.append(safe_markup(a[vocab.WS_MESSAGE_TYPE]))
    if vocab.WS_MESSAGE_SIZE in a:
        parts.append(f"{safe_markup(a[vocab.WS_MESSAGE_SIZE])} B")
    if vocab.WS_MESSAGE_FRAMES in a:
        count = a[vocab.WS_MESSAGE_FRAMES]
        parts.append(f"{safe_markup(count)} frame{'' if count == 1 else 's'}")
    if vocab.QUEUE_WAIT_NS in a:
        parts.append(f"queue {fmt.duration(_num(a[vocab.QUEUE_WAIT_NS]))}")
    if vocab.HANDLER_NS in a:
        parts.append(f"handler {fmt.duration(_num(a[vocab.HANDLER_NS]))}")
    if span.name == vocab.WS_MESSAGE_SEND:
        target = traces.recipient(span) if traces is not None else None
        if target is not None:
            parts.append(f"→ {safe_markup(target.label)}")
        elif vocab.CONNECTION_ID in a:
            parts.append(f"→ conn id {safe_markup(a[vocab.CONNECTION_ID])}")
    return parts


def _broadcast_details(span: SpanRecord, traces: TraceSet | None) -> list[str]:
    count = span.attributes.get(vocab.BROADCAST_RECIPIENTS)
    if count is None:
        return []
    return [f"→ {safe_markup(count)} recipient{'' if count == 1 else 's'}"]


def _close_details(span: SpanRecord, traces: TraceSet | None) -> list[str]:
    a = span.attributes
    parts: list[str] = []
    if vocab.WS_CLOSE_CODE in a:
        parts.append(f"code={safe_markup(a[vocab.WS_CLOSE_CODE])}")
    if a.get(vocab.WS_CLOSE_REASON):
        parts.append(f"reason={_q(a[vocab.WS_CLOSE_REASON])}")
    if vocab.WS_CLOSE_INITIATOR in a:
        parts.append(f"by {safe_markup(a[vocab.WS_CLOSE_INITIATOR])}")
    return parts


_DETAILS: dict[str, Callable[[SpanRecord, TraceSet | None], list[str]]] = {
    vocab.CONNECTION: _connection_details,
    vocab.WS_HANDSHAKE_VALIDATE: _validate_details,
    vocab.WS_HANDSHAKE_RESPONSE: _response_details,
    vocab.WS_MESSAGE_RECEIVE: _message_details,
    vocab.WS_MESSAGE_SEND: _message_details,
    vocab.WS_BROADCAST: _broadcast_details,
    vocab.WS_CLOSE: _close_details,
}
"""Span name -> what its line in the tree shows besides its name and duration."""


def event_details(event: EventRecord) -> str:
    a = event.attributes
    if fmt.is_frame(event.name):
        return safe_markup(fmt.frame_summary(a))
    if event.name == vocab.EVENT_HANDSHAKE_STACK:
        depth = len(a.get(vocab.STACK_FUNCTIONS) or [])
        return f"{depth} Python frames (--stack lists them)"
    if event.name == vocab.EVENT_PROTOCOL_ERROR:
        kind = a.get(vocab.PROTOCOL_ERROR_KIND, "?")
        offset = a.get(vocab.PROTOCOL_ERROR_OFFSET)
        where = f" at byte {safe_markup(offset)}" if offset is not None else ""
        return f"[red]{safe_markup(kind)}{where}[/red]"
    return "  ".join(f"{safe_markup(k)}={safe_markup(v)}" for k, v in list(a.items())[:6])


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _style(span: SpanRecord) -> str:
    if span.status.is_error:
        return "bold red"
    if fmt.is_frame(span.name):
        return "dim"
    if span.name in vocab.STAGE_SPAN_NAMES:
        return "bold cyan"
    return "cyan"


class _Builder:
    """Walks spans into rows, counting what the depth limit and frame filter hide."""

    def __init__(self, traces: TraceSet, options: TreeOptions, axis: tuple[int, int]) -> None:
        self.traces = traces
        self.options = options
        self.axis = axis
        self.elided = _Elided()

    def span_row(self, span: SpanRecord, depth: int, extra: Iterable[SpanRecord] = ()) -> _Row:
        start, end = self.axis
        loc = fmt.code_location(span.attributes)
        cols = [
            f"{fmt.duration(span.duration_ns):>10}",
            bar(span.start_ns, span.end_ns, start, end, self.options.bar_width),
        ]
        if loc:
            cols.append(f"[dim]{safe_markup(loc)}[/dim]")
        details = span_details(span, self.traces)
        if details:
            cols.append(details)
        row = _Row(depth, neutralise(span.name), _style(span), "  ".join(cols))
        items: list[tuple[int, int, Any]] = []
        for i, child in enumerate(self.traces.children(span)):
            items.append((child.start_ns, i, child))
        for i, event in enumerate(span.events):
            items.append((event.time_ns, 100_000 + i, event))
        for i, linked in enumerate(extra):
            items.append((linked.start_ns, 200_000 + i, ("linked", linked)))
        items.sort(key=lambda item: (item[0], item[1]))
        for _, _, item in items:
            child_row = self.item_row(item, depth + 1)
            if child_row is not None:
                row.children.append(child_row)
        return row

    def item_row(self, item: Any, depth: int) -> _Row | None:
        if isinstance(item, tuple):  # a linked (message-shape) trace under its connection
            linked: SpanRecord = item[1]
            if depth > self.options.depth:
                self._count_hidden(linked)
                return None
            row = self.span_row(linked, depth)
            row.columns += (
                f"  [magenta]↪ linked trace {safe_markup(linked.trace_id[:12])}[/magenta]"
            )
            return row
        if isinstance(item, EventRecord):
            if fmt.is_frame(item.name):
                if not self.options.frames:
                    self.elided.frames_filtered += 1
                    return None
                if depth > self.options.depth:
                    self.elided.spans += 1
                    self.elided.frames += 1
                    return None
            elif depth > self.options.depth:
                self.elided.spans += 1
                return None
            start, end = self.axis
            offset = fmt.duration(item.time_ns - start)
            cols = [
                f"{'@+' + offset:>10}",
                marker(item.time_ns, start, end, self.options.bar_width),
            ]
            details = event_details(item)
            if details:
                cols.append(details)
            return _Row(depth, "◆ " + neutralise(item.name), "yellow", "  ".join(cols))
        span: SpanRecord = item
        if fmt.is_frame(span.name) and not self.options.frames:
            self.elided.frames_filtered += 1
            return None
        if depth > self.options.depth:
            self._count_hidden(span)
            return None
        return self.span_row(span, depth)

    def _count_hidden(self, span: SpanRecord) -> None:
        for hidden, _ in self.traces.walk(span):
            if fmt.is_frame(hidden.name) and not self.options.frames:
                self.elided.frames_filtered += 1
                continue
            self.elided.spans += 1
            self.elided.frames += int(fmt.is_frame(hidden.name))
            frame_events = sum(fmt.is_frame(e.name) for e in hidden.events)
            self.elided.spans += len(hidden.events) - frame_events
            if self.options.frames:
                self.elided.spans += frame_events
                self.elided.frames += frame_events
            else:
                self.elided.frames_filtered += frame_events


def _name_width(row: _Row) -> int:
    """Widest name column among span rows (events are not aligned: they are markers)."""
    own = 0 if row.name.startswith("◆") else GUIDE_WIDTH * row.depth + cell_len(row.name)
    return max([own, *(_name_width(child) for child in row.children)])


def _to_tree(row: _Row, width: int, tree: Tree | None = None) -> Tree:
    pad = width - GUIDE_WIDTH * row.depth - cell_len(row.name) + 2
    # A name longer than the column pushes its columns right: drop their alignment padding.
    columns = row.columns if pad >= 2 else row.columns.lstrip()
    markup = f"[{row.style}]{escape(row.name)}[/{row.style}]{' ' * max(2, pad)}{columns}"
    # One line per span, cut with … on a narrow terminal rather than wrapped under the guides.
    label = Text.from_markup(markup, overflow="ellipsis")
    label.no_wrap = True
    node = Tree(label, guide_style="bright_black") if tree is None else tree.add(label)
    for child in row.children:
        _to_tree(child, width, node)
    return node


def _notes(elided: _Elided, options: TreeOptions) -> list[str]:
    notes = []
    if elided.spans:
        frames = f" ({elided.frames} of them frames)" if elided.frames else ""
        notes.append(
            f"… {elided.spans} spans/events below depth {options.depth} not shown{frames}; "
            f"raise --depth to see them"
        )
    if elided.frames_filtered:
        notes.append(f"… {elided.frames_filtered} frames hidden; drop --no-frames to see them")
    return notes


class _TreeView:
    """The tree, laid out for the width it is printed at.

    The name column is as wide as the widest name, but never so wide that the duration and the
    bar no longer fit: on a narrow terminal it shrinks, and the few rows whose name is longer
    push their own columns right instead of every row losing its timings.
    """

    def __init__(self, row: _Row, elided: _Elided, options: TreeOptions, header: str) -> None:
        self.row = row
        self.elided = elided
        self.options = options
        self.header = header

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        timing = 10 + 2 + self.options.bar_width + 2  # duration, gap, bar, gap
        room = max(16, options.max_width - timing)
        width = min(NAME_COLUMN_MAX, _name_width(self.row), room)
        yield Text.from_markup(self.header)
        yield _to_tree(self.row, width)
        for note in _notes(self.elided, self.options):
            yield Text.from_markup(f"[dim italic]{note}[/dim italic]")


def _render(row: _Row, elided: _Elided, options: TreeOptions, header: str) -> RenderableType:
    return _TreeView(row, elided, options, header)


def connection_header(conn: Connection) -> str:
    root = conn.root
    header = (
        f"[bold]{safe_markup(conn.label)}[/bold]  "
        f"{fmt.duration(conn.end_ns - conn.start_ns)}  "
        f"{len(conn.spans)} spans  trace {safe_markup(root.trace_id)}"
    )
    if conn.incomplete:
        header += f"\n[bold red]incomplete:[/bold red] {safe_markup(conn.incomplete)}"
    return header


def connection_tree(
    traces: TraceSet, conn: Connection, options: TreeOptions | None = None
) -> RenderableType:
    """The tree of one connection, its message-shape traces folded in under the root."""
    options = options or TreeOptions()
    builder = _Builder(traces, options, (conn.start_ns, conn.end_ns))
    row = builder.span_row(conn.root, 0, extra=conn.linked_roots)
    return _render(row, builder.elided, options, connection_header(conn))


def trace_tree(
    traces: TraceSet, trace_id: str, options: TreeOptions | None = None
) -> RenderableType:
    """The tree of one trace (all its roots, on the trace's own time axis)."""
    options = options or TreeOptions()
    spans = traces.traces[trace_id]
    roots = traces.trace_roots(trace_id)
    axis = (min(s.start_ns for s in spans), max(s.end_ns for s in spans))
    builder = _Builder(traces, options, axis)
    header = (
        f"[bold]trace {safe_markup(trace_id)}[/bold]  {fmt.duration(axis[1] - axis[0])}  "
        f"{len(spans)} spans"
    )
    owner = traces.connection_of(roots[0]) if roots else None
    if owner is not None:
        header += f"  (part of {safe_markup(owner.label)}; --connection {owner.index})"
    if trace_id in traces.incomplete:
        header += f"\n[bold red]incomplete:[/bold red] {safe_markup(traces.incomplete[trace_id])}"
    rows = [builder.span_row(root, 0) for root in roots]
    if len(rows) == 1:
        return _render(rows[0], builder.elided, options, header)
    shell = _Row(0, f"{len(rows)} roots", "bold", "")
    for row in rows:
        _shift(row)
        shell.children.append(row)
    return _render(shell, builder.elided, options, header)


def _shift(row: _Row) -> None:
    row.depth += 1
    for child in row.children:
        _shift(child)


def handshake_stack(traces: TraceSet, spans: Iterable[SpanRecord]) -> RenderableType:
    """The Python stack recorded when ``websocket.accept`` reached the server, outermost first."""
    for span in spans:
        for event in span.events:
            if event.name != vocab.EVENT_HANDSHAKE_STACK:
                continue
            a = event.attributes
            functions = list(a.get(vocab.STACK_FUNCTIONS) or [])
            files = list(a.get(vocab.STACK_FILES) or [])
            lines = list(a.get(vocab.STACK_LINES) or [])
            table = Table(
                title=f"handshake stack on {safe_markup(span.name)} (outermost first)",
                title_justify="left",
                show_edge=False,
                header_style="bold",
            )
            table.add_column("#", justify="right", style="dim")
            table.add_column("function", style="cyan")
            table.add_column("file:line")
            for i, function in enumerate(functions):
                file = files[i] if i < len(files) else "?"
                line = lines[i] if i < len(lines) else "?"
                where = f"{fmt.short_path(str(file))}:{line}"
                table.add_row(str(i + 1), safe_markup(function), safe_markup(where))
            return table
    return Text("no handshake stack recorded (no wstrace.handshake.stack event on ws.accept)")
