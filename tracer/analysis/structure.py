"""The shape of a trace file without its timings: names, nesting and counts.

Two runs of the same scenario on the same versions give the same structure, whatever the
machine's speed; a change in what the tracer records (a stage missing, a span moved, frames
counted differently) changes it.  The committed sample traces are checked this way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tracer.export.traceset import TraceSet

Shape = tuple[str, tuple[Any, ...]]


def span_shape(traces: TraceSet, span: Any) -> Shape:
    """``(name, sorted child shapes)``: order-free, so concurrent siblings compare equal."""
    children = tuple(sorted(span_shape(traces, child) for child in traces.children(span)))
    return span.name, children


def structure(traces: TraceSet) -> list[Shape]:
    """One shape per connection, in connection order, message-shape traces folded in."""
    shapes = []
    for conn in traces.connections:
        linked = tuple(sorted(span_shape(traces, root) for root in conn.linked_roots))
        name, children = span_shape(traces, conn.root)
        shapes.append((name, tuple(sorted(children + linked))))
    return shapes


def name_counts(shape: Shape) -> Counter[str]:
    """How many spans of each name a shape holds: a readable summary for diffs."""
    counts: Counter[str] = Counter([shape[0]])
    for child in shape[1]:
        counts.update(name_counts(child))
    return counts
