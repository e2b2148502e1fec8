"""Chrome Trace Event JSON for ui.perfetto.dev, chrome://tracing and speedscope.

Layout
------
* One process (pid 1).  One thread track (``tid``) per connection, named like
  ``conn 3 127.0.0.1:50522 /ws/auction/1``; traces that belong to no connection share a track
  named ``other traces``.
* Spans are complete events (``"ph": "X"``).  Frames — spans or events — and other span events
  (the handshake stack, protocol errors) are thread-scoped instant events (``"ph": "i"``,
  ``"s": "t"``) whose args carry the Wireshark field names (``websocket.fin``,
  ``websocket.opcode`` …).
* Perfetto requires slices on one track to nest strictly.  Children are clamped into their
  parent (in integer nanoseconds, before any conversion).  The ASGI app, which runs for the
  whole connection, gets a second track of its own (``conn 3 … (2)``), so the connection's
  main track keeps the server stages, the messages and the close.  A span that *partially*
  overlaps a sibling — the handshake starts before the protocol switch returns; a message can
  arrive while the previous one is still being handled — cannot share a track either, so it
  moves, with its subtree, to a further track of the same connection, placed next to it.  A
  slice only ever sits visually inside its real parent, never inside an unrelated span.
* Broadcasts: a flow arrow (``"ph": "s"`` → ``"ph": "f"``, ``"bp": "e"``) goes from each
  ``ws.broadcast`` slice to each recipient's ``ws.message.send``.  The send is drawn **on the
  recipient's track** when it fits there as a direct child of that connection without partially
  overlapping anything already on it (the usual case: the recipient is idle, waiting for its
  next message); otherwise it stays under the broadcast on the sender's track and the arrow
  still marks it.  Either way every send is exactly one slice and every arrow lands on it.

Time: ``ts``/``dur`` are microseconds relative to the earliest span in the file (the absolute
origin is in the process name), so nanosecond precision survives the float conversion.  Each
value is the nearest double at or above ``ns / 1000`` such that Perfetto's own conversion back
to nanoseconds (``int(x * 1000)`` in older builds, ``llround`` in newer) yields exactly the
intended integer, so clamped children never poke out of their parents after import either.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tracer import vocab
from tracer.analysis import fmt
from tracer.export.records import EventRecord, SpanRecord
from tracer.export.traceset import TraceSet

PID = 1
FLOW_CATEGORY = "wstrace.broadcast"


@dataclass(eq=False)
class _Instant:
    name: str
    time: int
    args: dict[str, Any]


@dataclass(eq=False)
class _Node:
    span: SpanRecord
    start: int
    end: int
    parent: _Node | None
    """The tree parent, into which this node is clamped."""
    lane_parent: _Node | None
    """Whose track this node prefers: the tree parent, or the connection for a linked trace."""
    group: _Group
    depth: int
    seq: int
    children: list[_Node] = field(default_factory=list)
    instants: list[_Instant] = field(default_factory=list)
    lane: _Lane | None = None


@dataclass(eq=False)
class _Lane:
    group: _Group
    number: int
    stack: list[_Node] = field(default_factory=list)
    tid: int = 0
    top_slices: list[tuple[int, int]] = field(default_factory=list)
    """(start, end) of slices directly under the connection on the main lane, sorted."""
    top_instants: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _Group:
    label: str
    main: _Node | None = None
    lanes: list[_Lane] = field(default_factory=list)
    nodes: list[_Node] = field(default_factory=list)

    def lane(self, number: int) -> _Lane:
        while len(self.lanes) <= number:
            self.lanes.append(_Lane(self, len(self.lanes)))
        return self.lanes[number]


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)


def _us(ns: int) -> int | float:
    """Nanoseconds → microseconds for JSON, exact under Perfetto's conversion back to ns."""
    if ns % 1000 == 0:
        return ns // 1000
    value = ns / 1000
    while int(value * 1000.0) < ns:
        value = math.nextafter(value, math.inf)
    return value


def _json_value(value: Any) -> Any:
    """Attribute values as JSON that every consumer accepts: no NaN/Infinity, no bytes."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _args(attributes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    args = {key: _json_value(value) for key, value in attributes.items()}
    args.update({k: v for k, v in extra.items() if v is not None})
    return args


def _category(name: str) -> str:
    head = name.split(".", 1)[0]
    return head if head in ("ws", "http", "asgi", "wstrace") else "app"


def _frame_instant(name: str, time: int, attributes: dict[str, Any], **extra: Any) -> _Instant:
    return _Instant(name, time, _args(attributes, summary=fmt.frame_summary(attributes), **extra))


class _Builder:
    def __init__(self, traces: TraceSet) -> None:
        self.traces = traces
        self.groups: list[_Group] = []
        self.node_of: dict[tuple[str, str], _Node] = {}
        self._seq = 0

    # --- nodes ------------------------------------------------------------------------------

    def build(self) -> None:
        for conn in self.traces.connections:
            group = _Group(conn.label)
            self.groups.append(group)
            group.main = self._tree(conn.root, None, group)
            for linked in conn.linked_roots:
                self._tree(linked, group.main, group)
        if self.traces.unattached:
            group = _Group("other traces")
            self.groups.append(group)
            for root in self.traces.unattached:
                self._tree(root, None, group)

    def _tree(self, root: SpanRecord, lane_parent: _Node | None, group: _Group) -> _Node:
        """Build the node tree of ``root`` iteratively (input nesting depth is untrusted)."""
        top = self._node(root, None, lane_parent, group, 0)
        pending = [top]
        while pending:
            node = pending.pop()
            for child in self.traces.children(node.span):
                if fmt.is_frame(child.name):
                    self._frame_span(node, child)
                else:
                    pending.append(self._node(child, node, node, group, node.depth + 1))
        return top

    def _node(
        self,
        span: SpanRecord,
        parent: _Node | None,
        lane_parent: _Node | None,
        group: _Group,
        depth: int,
    ) -> _Node:
        start, end = span.start_ns, max(span.start_ns, span.end_ns)
        if parent is not None:
            start = _clamp(start, parent.start, parent.end)
            end = _clamp(end, start, parent.end)
        self._seq += 1
        node = _Node(span, start, end, parent, lane_parent, group, depth, self._seq)
        if parent is not None:
            parent.children.append(node)
        group.nodes.append(node)
        self.node_of[span.key] = node
        for event in span.events:
            node.instants.append(self._event(event, node))
        return node

    def _event(self, event: EventRecord, node: _Node) -> _Instant:
        time = _clamp(event.time_ns, node.start, node.end)
        if fmt.is_frame(event.name):
            return _frame_instant(event.name, time, event.attributes)
        attributes = dict(event.attributes)
        if event.name == vocab.EVENT_HANDSHAKE_STACK:
            attributes = {"stack": _stack_lines(event.attributes)}
        return _Instant(event.name, time, _args(attributes))

    def _frame_span(self, node: _Node, frame: SpanRecord) -> None:
        time = _clamp(frame.start_ns, node.start, node.end)
        node.instants.append(
            _frame_instant(
                frame.name,
                time,
                frame.attributes,
                duration_us=_us(frame.duration_ns),
                span_id=frame.span_id,
            )
        )
        for event in frame.events:  # protocol errors seen while decoding this frame
            node.instants.append(self._event(event, node))

    # --- lanes ------------------------------------------------------------------------------

    def place(self) -> None:
        for group in self.groups:
            order = sorted(group.nodes, key=lambda n: (n.start, -n.end, n.depth, n.seq))
            for node in order:
                self._place(node)
        self._move_sends_to_recipients()

    @staticmethod
    def _ancestors(node: _Node) -> Iterator[_Node]:
        current = node.lane_parent
        while current is not None:
            yield current
            current = current.lane_parent

    def _fits(self, lane: _Lane, node: _Node, under: _Node | None) -> bool:
        """Pop what ended; then ``node`` fits if the open top is ``under`` (None: lane empty)."""
        ancestors = set(map(id, self._ancestors(node)))
        stack = lane.stack
        while stack and stack[-1].end <= node.start and id(stack[-1]) not in ancestors:
            stack.pop()
        if under is None:
            return not stack
        return (
            bool(stack)
            and stack[-1] is under
            and under.start <= node.start <= node.end <= under.end
        )

    @staticmethod
    def _background(node: _Node) -> bool:
        """The ASGI app (or any child spanning most of the connection) runs for the whole
        connection: on the main track it would leave no room for the stages, messages and
        deliveries that happen meanwhile, so it starts its own track."""
        main = node.group.main
        if main is None or node.lane_parent is not main or node.parent is not main:
            return False
        return node.span.name == vocab.ASGI_APP or 2 * (node.end - node.start) > (
            main.end - main.start
        )

    def _place(self, node: _Node) -> None:
        group = node.group
        preferred = node.lane_parent.lane if node.lane_parent is not None else group.lane(0)
        assert preferred is not None
        if not self._background(node) and self._fits(preferred, node, node.lane_parent):
            lane = preferred
        else:
            lane = next(
                (
                    candidate
                    for candidate in group.lanes
                    if candidate is not preferred and self._fits(candidate, node, None)
                ),
                None,
            ) or group.lane(len(group.lanes))
        lane.stack.append(node)
        node.lane = lane
        if group.main is not None and node.lane_parent is group.main and lane.number == 0:
            lane.top_slices.append((node.start, node.end))
        if node is group.main:
            lane.top_instants.extend(i.time for i in node.instants)

    def _move_sends_to_recipients(self) -> None:
        for group in self.groups:
            for lane in group.lanes:
                lane.top_slices.sort()
                lane.top_instants.sort()
        for group in self.groups:
            for node in group.nodes:
                if node.span.name != vocab.WS_MESSAGE_SEND or node.children:
                    continue
                parent = node.parent
                if parent is None or parent.span.name != vocab.WS_BROADCAST:
                    continue
                target = self.traces.recipient(node.span)
                if target is None:
                    continue
                main = self.node_of.get(target.root.key)
                if main is None or main.group is group or main.lane is None:
                    continue
                if self._free_on(main, node):
                    main_lane = main.lane
                    node.lane = main_lane
                    bisect.insort(main_lane.top_slices, (node.start, node.end))

    @staticmethod
    def _free_on(main: _Node, node: _Node) -> bool:
        """``node`` fits directly under connection ``main`` without touching its other slices."""
        if not (main.start <= node.start <= node.end <= main.end):
            return False
        lane = main.lane
        assert lane is not None
        i = bisect.bisect_left(lane.top_slices, (node.end, -1))
        if i and lane.top_slices[i - 1][1] > node.start:
            return False
        j = bisect.bisect_right(lane.top_instants, node.start)
        return not (j < len(lane.top_instants) and lane.top_instants[j] < node.end)


def _stack_lines(attributes: dict[str, Any]) -> list[str]:
    functions = list(attributes.get(vocab.STACK_FUNCTIONS) or [])
    files = list(attributes.get(vocab.STACK_FILES) or [])
    lines = list(attributes.get(vocab.STACK_LINES) or [])
    result = []
    for i, function in enumerate(functions):
        file = fmt.short_path(str(files[i])) if i < len(files) else "?"
        line = lines[i] if i < len(lines) else "?"
        result.append(f"{function}  {file}:{line}")
    return result


def _free_point(node: _Node, lane: _Lane, before: int | None = None) -> int:
    """A time strictly inside ``node`` (and before ``before``) and outside its children drawn on
    the same track, so a flow event there binds to ``node`` itself: Perfetto binds a flow to
    the innermost slice open at that time."""
    limit = node.end if before is None else min(node.end, before)
    occupied = sorted(
        [(c.start, c.end) for c in node.children if c.lane is lane]
        + [(i.time, i.time) for i in node.instants]
    )
    cursor = node.start
    for start, end in [*occupied, (limit, limit)]:
        start = min(start, limit)
        if start - cursor >= 2:
            return cursor + (start - cursor) // 2
        cursor = max(cursor, end)
        if cursor >= limit:
            break
    return node.start


def to_chrome_trace(traces: TraceSet) -> dict[str, Any]:
    """The whole trace set as a Chrome Trace Event JSON object (see the module doc)."""
    builder = _Builder(traces)
    builder.build()
    builder.place()
    nodes = [node for group in builder.groups for node in group.nodes]
    origin = min((n.start for n in nodes), default=0)
    meta = [_process_name(origin), *_lane_names(builder.groups)]
    timed = [event for node in nodes for event in _span_events(node, origin)]
    timed += _broadcast_flows(traces, nodes, origin)
    timed.sort(key=lambda e: (e["ts"], e["tid"], -e.get("dur", 0)))
    return {"traceEvents": meta + timed, "displayTimeUnit": "ms"}


def _process_name(origin: int) -> dict[str, Any]:
    """The one process, named with the wall-clock time its t=0 stands for."""
    stamp = datetime.fromtimestamp(origin / 1e9, tz=timezone.utc).isoformat(timespec="microseconds")
    return {
        "ph": "M",
        "pid": PID,
        "name": "process_name",
        "args": {"name": f"wstrace (t=0 at {stamp})"},
    }


def _lane_names(groups: list[_Group]) -> list[dict[str, Any]]:
    """A thread per lane, numbered in order (``tid`` is set on each lane here), named after
    its connection and sorted by group then lane."""
    events: list[dict[str, Any]] = []
    tid = 0
    for g_index, group in enumerate(groups):
        for lane in group.lanes:
            tid += 1
            lane.tid = tid
            name = group.label if lane.number == 0 else f"{group.label} ({lane.number + 1})"
            events.append(
                {"ph": "M", "pid": PID, "tid": tid, "name": "thread_name", "args": {"name": name}}
            )
            events.append(
                {
                    "ph": "M",
                    "pid": PID,
                    "tid": tid,
                    "name": "thread_sort_index",
                    "args": {"sort_index": g_index * 1000 + lane.number},
                }
            )
    return events


def _span_events(node: _Node, origin: int) -> list[dict[str, Any]]:
    """A span as a complete (``X``) event, then its instants (frames, stack, errors)."""
    assert node.lane is not None
    span = node.span
    status = f"ERROR {span.status.message}".strip() if span.status.is_error else None
    events = [
        {
            "name": span.name,
            "cat": _category(span.name),
            "ph": "X",
            "ts": _us(node.start - origin),
            "dur": _us(node.end - node.start),
            "pid": PID,
            "tid": node.lane.tid,
            "args": _args(
                span.attributes,
                trace_id=span.trace_id,
                span_id=span.span_id,
                status=status,
                source=fmt.code_location(span.attributes),
            ),
        }
    ]
    for instant in node.instants:
        events.append(
            {
                "name": instant.name,
                "cat": _category(instant.name),
                "ph": "i",
                "s": "t",
                "ts": _us(instant.time - origin),
                "pid": PID,
                "tid": node.lane.tid,
                "args": instant.args,
            }
        )
    return events


def _broadcast_flows(traces: TraceSet, nodes: list[_Node], origin: int) -> list[dict[str, Any]]:
    """An arrow from each ``ws.broadcast`` to each of its sends, on the recipient's lane."""
    events: list[dict[str, Any]] = []
    flow_id = 0
    for node in nodes:
        sends = [c for c in node.children if c.span.name == vocab.WS_MESSAGE_SEND]
        if node.span.name != vocab.WS_BROADCAST or node.lane is None or not sends:
            continue
        # Every arrow starts before the first send, so no flow ends before it begins (Perfetto
        # drops those); all of a broadcast's arrows share that starting point.
        first_send = min(send.start for send in sends)
        source_ts = _us(_free_point(node, node.lane, before=first_send) - origin)
        for send in sends:
            assert send.lane is not None
            flow_id += 1
            target = traces.recipient(send.span)
            common = {"name": "broadcast", "cat": FLOW_CATEGORY, "id": flow_id, "pid": PID}
            events.append({**common, "ph": "s", "tid": node.lane.tid, "ts": source_ts})
            events.append(
                {
                    **common,
                    "ph": "f",
                    "bp": "e",
                    "tid": send.lane.tid,
                    "ts": _us(_free_point(send, send.lane) - origin),
                    "args": {"recipient": target.label if target else None},
                }
            )
    return events


def write_chrome_trace(traces: TraceSet, path: str | os.PathLike[str]) -> Path:
    """Write :func:`to_chrome_trace` as strict JSON (``allow_nan=False``) to ``path``."""
    path = Path(path)
    data = to_chrome_trace(traces)
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path
