"""Spans grouped the way a reader thinks about them: traces, and connections.

A *connection* is a ``ws.connection`` span with everything under it, plus — in the ``message``
trace shape, or once a long connection overflows into separate traces — every trace whose root
carries a span link into it.  Links from spans that are not roots (a broadcast's send linking
to its recipient) do not attach a trace to the recipient: the send belongs to the sender.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tracer import vocab
from tracer.export.completeness import incomplete_traces, is_loss_marker, lost_spans
from tracer.export.records import SpanRecord

Key = tuple[str, str]


@dataclass
class Connection:
    """One WebSocket connection: its root span, linked message traces, and all their spans."""

    index: int
    """1-based position among the connections, ordered by start time."""
    root: SpanRecord
    linked_roots: list[SpanRecord] = field(default_factory=list)
    spans: list[SpanRecord] = field(default_factory=list)
    incomplete: str = ""
    """Why some of the connection's spans are missing from the file (empty: it is whole)."""

    @property
    def connection_id(self) -> int | None:
        value = self.root.attributes.get(vocab.CONNECTION_ID)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def start_ns(self) -> int:
        return min([self.root.start_ns, *(s.start_ns for s in self.linked_roots)])

    @property
    def end_ns(self) -> int:
        return max([self.root.end_ns, *(s.end_ns for s in self.linked_roots)])

    @property
    def peer(self) -> str:
        """``127.0.0.1:50522`` (``?`` for an unknown part)."""
        attrs = self.root.attributes
        host = attrs.get(vocab.CLIENT_ADDRESS, "?")
        port = attrs.get(vocab.CLIENT_PORT, "?")
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    @property
    def label(self) -> str:
        """``conn 3 127.0.0.1:50522 /ws/auction/1`` — raw, untrusted text: escape to render."""
        number = self.connection_id if self.connection_id is not None else self.index
        path = self.root.attributes.get(vocab.URL_PATH, "")
        return f"conn {number} {self.peer} {path}".rstrip()


class TraceSet:
    """All spans from one or more files, indexed for tree walks and connection lookups."""

    def __init__(self, spans: Iterable[SpanRecord]) -> None:
        by_key: dict[Key, SpanRecord] = {}
        markers: list[SpanRecord] = []
        for span in spans:
            if is_loss_marker(span):
                markers.append(span)
            else:
                by_key.setdefault(span.key, span)
        order = {key: i for i, key in enumerate(by_key)}
        self.spans: list[SpanRecord] = sorted(
            by_key.values(), key=lambda s: (s.start_ns, order[s.key])
        )
        self._by_key = by_key
        self._parent: dict[Key, SpanRecord] = {}
        self._children: dict[Key, list[SpanRecord]] = defaultdict(list)
        self.roots: list[SpanRecord] = []
        for span in self.spans:
            parent = span.parent_key
            if parent is not None and parent in by_key:
                self._parent[span.key] = by_key[parent]
                self._children[parent].append(span)
            else:
                self.roots.append(span)
        self._break_cycles()
        self.traces: dict[str, list[SpanRecord]] = defaultdict(list)
        for span in self.spans:
            self.traces[span.trace_id].append(span)
        self.traces = dict(self.traces)
        self.connections: list[Connection] = []
        self._owner: dict[Key, Connection] = {}
        self.unattached: list[SpanRecord] = []
        self._group_connections()
        self.lost_spans: dict[str, int] = lost_spans(markers)
        """Trace id -> spans of it dropped before they reached the file."""
        self.incomplete: dict[str, str] = incomplete_traces(self.traces, by_key, self.lost_spans)
        """Trace id -> why the trace is not whole (spans lost, root missing, orphans)."""
        self._mark_incomplete_connections()

    # --- lookups -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.spans)

    def get(self, trace_id: str, span_id: str) -> SpanRecord | None:
        return self._by_key.get((trace_id, span_id))

    def parent(self, span: SpanRecord) -> SpanRecord | None:
        return self._parent.get(span.key)

    def children(self, span: SpanRecord) -> list[SpanRecord]:
        """Direct children, ordered by start time."""
        return self._children.get(span.key, [])

    def walk(self, span: SpanRecord, depth: int = 0) -> Iterator[tuple[SpanRecord, int]]:
        """Depth-first pre-order: ``(span, depth)`` with ``depth`` 0 for ``span`` itself."""
        stack = [(span, depth)]
        while stack:
            current, level = stack.pop()
            yield current, level
            stack.extend((child, level + 1) for child in reversed(self.children(current)))

    def ancestors(self, span: SpanRecord) -> Iterator[SpanRecord]:
        current = self.parent(span)
        while current is not None:
            yield current
            current = self.parent(current)

    def connection_of(self, span: SpanRecord) -> Connection | None:
        return self._owner.get(span.key)

    def connection(self, index: int) -> Connection:
        """The ``index``-th connection (1-based); ``LookupError`` says which ones exist."""
        if not self.connections:
            raise LookupError(
                "no ws.connection spans in the trace; use --trace ID to show a trace "
                f"({self._trace_hint()})"
            )
        if not 1 <= index <= len(self.connections):
            raise LookupError(
                f"no connection {index}: the trace has {len(self.connections)} "
                f"(use --connection 1..{len(self.connections)})"
            )
        return self.connections[index - 1]

    def find_trace(self, trace_id: str) -> str:
        """Full trace id from an id or a unique prefix of at least 4 hex digits."""
        wanted = trace_id.strip().lower()
        if wanted in self.traces:
            return wanted
        matches = [t for t in self.traces if len(wanted) >= 4 and t.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise LookupError(f"trace id prefix {trace_id!r} is ambiguous; give more digits")
        raise LookupError(f"no trace {trace_id!r} in the file ({self._trace_hint()})")

    def trace_roots(self, trace_id: str) -> list[SpanRecord]:
        return [s for s in self.roots if s.trace_id == trace_id]

    def recipient(self, send: SpanRecord) -> Connection | None:
        """The connection a ``ws.message.send`` went to: by span link, else by connection id."""
        for link in send.links:
            owner = self._owner.get((link.trace_id, link.span_id))
            if owner is not None:
                return owner
        wanted = send.attributes.get(vocab.CONNECTION_ID)
        if wanted is None:
            return None
        matches = [c for c in self.connections if c.connection_id == wanted]
        return matches[0] if len(matches) == 1 else None

    # --- grouping ----------------------------------------------------------------------------

    def _break_cycles(self) -> None:
        """A crafted file can make spans each other's parents (or their own): such spans are
        reachable from no root.  Each becomes a root, so every walk over the set terminates."""
        reached: set[Key] = set()
        for root in self.roots:
            reached.update(span.key for span, _ in self.walk(root))
        for span in self.spans:
            if span.key in reached:
                continue
            parent = self._parent.pop(span.key)
            self._children[parent.key].remove(span)
            self.roots.append(span)
            reached.update(s.key for s, _ in self.walk(span))
        self.roots.sort(key=lambda s: s.start_ns)

    def _trace_hint(self) -> str:
        ids = list(self.traces)
        if not ids:
            return "the file holds no spans"
        shown = ", ".join(t[:12] for t in ids[:5])
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        return f"traces: {shown}{more}"

    def _mark_incomplete_connections(self) -> None:
        for conn in self.connections:
            trace_ids = dict.fromkeys(s.trace_id for s in [conn.root, *conn.linked_roots])
            conn.incomplete = "; ".join(
                self.incomplete[t] for t in trace_ids if t in self.incomplete
            )

    @property
    def incomplete_connections(self) -> list[Connection]:
        return [conn for conn in self.connections if conn.incomplete]

    def _group_connections(self) -> None:
        roots = [s for s in self.spans if s.name == vocab.CONNECTION]
        for index, root in enumerate(roots, start=1):
            conn = Connection(index=index, root=root)
            for span, _ in self.walk(root):
                self._owner.setdefault(span.key, conn)
                conn.spans.append(span)
            self.connections.append(conn)
        for root in self.roots:
            if root.name == vocab.CONNECTION:
                continue
            owner = next(
                (
                    self._owner[(link.trace_id, link.span_id)]
                    for link in root.links
                    if (link.trace_id, link.span_id) in self._owner
                ),
                None,
            )
            if owner is None or root.key in self._owner:
                self.unattached.append(root)
                continue
            owner.linked_roots.append(root)
            for span, _ in self.walk(root):
                self._owner.setdefault(span.key, owner)
                owner.spans.append(span)
        for conn in self.connections:
            conn.spans.sort(key=lambda s: s.start_ns)
