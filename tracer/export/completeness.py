"""Which traces in a file are not whole, and why: spans lost on the way to the file (the
writer's :data:`~tracer.vocab.LOSS_MARKER` spans say how many), a missing root, or spans
whose parent is not in the file.  A partial tree must never read as a whole one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from tracer import vocab
from tracer.export.records import SpanRecord


def is_loss_marker(span: SpanRecord) -> bool:
    return span.name == vocab.LOSS_MARKER


def lost_spans(markers: Iterable[SpanRecord]) -> dict[str, int]:
    """Trace id -> spans of it the writer dropped, added up over its markers."""
    lost: dict[str, int] = defaultdict(int)
    for marker in markers:
        count = marker.attributes.get(vocab.LOSS_SPANS)
        lost[marker.trace_id] += count if isinstance(count, int) and count > 0 else 1
    return dict(lost)


def incomplete_traces(
    traces: Mapping[str, list[SpanRecord]],
    present: Mapping[tuple[str, str], SpanRecord],
    lost: Mapping[str, int],
) -> dict[str, str]:
    """Trace id -> why it is incomplete, for every trace that is."""
    reasons: dict[str, str] = {}
    for trace_id, spans in traces.items():
        why = []
        if lost.get(trace_id):
            why.append(f"{lost[trace_id]} spans lost")
        orphans = [
            s
            for s in spans
            if s.parent_span_id and not s.parent_is_remote and s.parent_key not in present
        ]
        has_root = any(not s.parent_span_id or s.parent_is_remote for s in spans)
        if not has_root:
            why.append("root missing")
        if orphans:
            why.append(f"{len(orphans)} spans without their parent")
        if why:
            reasons[trace_id] = ", ".join(why)
    for trace_id, count in lost.items():
        if trace_id not in traces:
            reasons[trace_id] = f"{count} spans lost (the whole trace)"
    return reasons
