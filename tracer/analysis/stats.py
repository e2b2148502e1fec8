"""Latency statistics across every connection in one or more trace files.

Percentiles use the **nearest-rank** method: the p-th percentile of n sorted values is the
value at rank ``ceil(p/100 * n)`` (1-based).  It is exact — always a latency that was really
measured, never an interpolation between two — and easy to check by hand.

Three families of numbers:

* per stage (span name): duration count, p50, p90, p99, max;
* fan-out per broadcast: from the first frame of the message that triggered it arriving to the
  end of the last recipient's frame write — the latency a bidder's rivals actually see;
* queue wait vs handler time of received messages (``wstrace.queue_wait_ns`` and
  ``wstrace.handler_ns``), kept apart because they call for different fixes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from tracer import vocab
from tracer.analysis import fmt
from tracer.analysis.escape import safe_markup
from tracer.export.records import SpanRecord
from tracer.export.traceset import TraceSet

PERCENTILE_METHOD = "nearest-rank"
PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of already sorted values (``p`` in (0, 100])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} outside (0, 100]")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(1, rank) - 1]


@dataclass(frozen=True)
class Summary:
    """count, p50, p90, p99, max of a set of nanosecond values (None when empty)."""

    count: int
    p50: int | None = None
    p90: int | None = None
    p99: int | None = None
    max: int | None = None

    @classmethod
    def of(cls, values: Iterable[int]) -> Summary:
        ordered = sorted(values)
        if not ordered:
            return cls(0)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            max=ordered[-1],
        )

    def to_json(self) -> dict[str, int | None]:
        return {
            "count": self.count,
            "p50_ns": self.p50,
            "p90_ns": self.p90,
            "p99_ns": self.p99,
            "max_ns": self.max,
        }


@dataclass
class Stats:
    """Everything ``wstrace stats`` reports."""

    stages: dict[str, Summary] = field(default_factory=dict)
    fanout: Summary = field(default_factory=lambda: Summary(0))
    queue_wait: Summary = field(default_factory=lambda: Summary(0))
    handler: Summary = field(default_factory=lambda: Summary(0))
    connections: int = 0
    spans: int = 0
    broadcasts_without_trigger: int = 0
    """Broadcasts not under a received message (e.g. from a timer): no fan-out latency."""
    incomplete_connections: int = 0
    incomplete_traces: int = 0
    lost_spans: int = 0
    """Spans the writer counted as dropped (its loss markers, added up)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "percentile_method": PERCENTILE_METHOD,
            "unit": "ns",
            "connections": self.connections,
            "spans": self.spans,
            "incomplete_connections": self.incomplete_connections,
            "incomplete_traces": self.incomplete_traces,
            "lost_spans": self.lost_spans,
            "stages": [{"name": name, **s.to_json()} for name, s in self.stages.items()],
            "fanout": {
                **self.fanout.to_json(),
                "broadcasts_without_trigger": self.broadcasts_without_trigger,
            },
            "queue_wait": self.queue_wait.to_json(),
            "handler": self.handler.to_json(),
        }


def _stage_order(durations: dict[str, list[int]], first_start: dict[str, int]) -> list[str]:
    """Stages in life-cycle order; app spans (middleware, route…) right after ``asgi.app``,
    in the order they first started — which is the middleware chain's order."""
    asgi = vocab.STAGE_SPAN_NAMES.index(vocab.ASGI_APP)

    def key(name: str) -> tuple[float, int]:
        if name in vocab.STAGE_SPAN_NAMES:
            return (vocab.STAGE_SPAN_NAMES.index(name), 0)
        return (asgi + 0.5, first_start[name])

    return sorted(durations, key=key)


def _int_attr(span: SpanRecord, key: str) -> int | None:
    value = span.attributes.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def first_frame_in(traces: TraceSet, message: SpanRecord) -> int:
    """When the message's first frame arrived: frame spans, else frame events, else its start."""
    times = [c.start_ns for c in traces.children(message) if c.name == vocab.WS_FRAME_RECEIVE]
    times += [e.time_ns for e in message.events if e.name == vocab.EVENT_FRAME_RECEIVE]
    return min(times, default=message.start_ns)


def last_frame_out(traces: TraceSet, send: SpanRecord) -> int:
    """When the send's last frame was written: frame spans' end, frame events, else its end."""
    times = [s.end_ns for s, _ in traces.walk(send) if s.name == vocab.WS_FRAME_SEND]
    times += [e.time_ns for e in send.events if e.name == vocab.EVENT_FRAME_SEND]
    return max(times, default=send.end_ns)


def fanout_latencies(traces: TraceSet) -> tuple[list[int], int]:
    """Per broadcast: first frame in → last recipient's frame out; and the untriggered count."""
    latencies: list[int] = []
    untriggered = 0
    for span in traces.spans:
        if span.name != vocab.WS_BROADCAST:
            continue
        trigger = next(
            (a for a in traces.ancestors(span) if a.name == vocab.WS_MESSAGE_RECEIVE), None
        )
        sends = [c for c in traces.children(span) if c.name == vocab.WS_MESSAGE_SEND]
        if trigger is None:
            untriggered += 1
            continue
        if not sends:
            continue
        start = first_frame_in(traces, trigger)
        end = max(last_frame_out(traces, send) for send in sends)
        latencies.append(max(0, end - start))
    return latencies, untriggered


def compute_stats(traces: TraceSet) -> Stats:
    """All the numbers ``wstrace stats`` shows, from a loaded trace set."""
    durations: dict[str, list[int]] = defaultdict(list)
    first_start: dict[str, int] = {}
    queue: list[int] = []
    handler: list[int] = []
    for span in traces.spans:  # sorted by start time
        durations[span.name].append(span.duration_ns)
        first_start.setdefault(span.name, span.start_ns)
        if span.name == vocab.WS_MESSAGE_RECEIVE:
            wait = _int_attr(span, vocab.QUEUE_WAIT_NS)
            work = _int_attr(span, vocab.HANDLER_NS)
            if wait is not None:
                queue.append(wait)
            if work is not None:
                handler.append(work)
    fanout, untriggered = fanout_latencies(traces)
    return Stats(
        stages={name: Summary.of(durations[name]) for name in _stage_order(durations, first_start)},
        fanout=Summary.of(fanout),
        queue_wait=Summary.of(queue),
        handler=Summary.of(handler),
        connections=len(traces.connections),
        spans=len(traces.spans),
        broadcasts_without_trigger=untriggered,
        incomplete_connections=len(traces.incomplete_connections),
        incomplete_traces=len(traces.incomplete),
        lost_spans=sum(traces.lost_spans.values()),
    )


def _table(title: str, first: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", show_edge=False)
    table.add_column(first)
    table.add_column("count", justify="right")
    for p in PERCENTILES:
        table.add_column(f"p{p} ms", justify="right")
    table.add_column("max ms", justify="right")
    return table


def _row(table: Table, label: str, summary: Summary, style: str | None = None) -> None:
    table.add_row(
        label,
        str(summary.count),
        *(fmt.ms(v) for v in (summary.p50, summary.p90, summary.p99, summary.max)),
        style=style,
    )


def stats_renderable(stats: Stats) -> RenderableType:
    """The stats as Rich tables (milliseconds, 3 decimals)."""
    stages = _table(
        f"stage latency over {stats.connections} connections, {stats.spans} spans "
        f"({PERCENTILE_METHOD} percentiles)",
        "stage (span name)",
    )
    for name, summary in stats.stages.items():
        style = None if name in vocab.STAGE_SPAN_NAMES else "dim"
        _row(stages, safe_markup(name), summary, style)
    derived = _table("messages", "measure")
    _row(derived, "fan-out per broadcast", stats.fanout)
    _row(derived, "queue wait", stats.queue_wait)
    _row(derived, "handler", stats.handler)
    parts: list[RenderableType] = [stages, "", derived]
    parts.append(
        "[dim]fan-out: the triggering message's first frame in → the last recipient's frame "
        f"out. queue wait / handler: {vocab.QUEUE_WAIT_NS} / {vocab.HANDLER_NS} of each "
        "received message.[/dim]"
    )
    if stats.incomplete_traces:
        parts.append(
            f"[bold red]incomplete:[/bold red] {stats.incomplete_connections} of "
            f"{stats.connections} connections and {stats.incomplete_traces} traces are not "
            f"whole ({stats.lost_spans} spans lost before the file, or spans without their "
            "root or parent): their stages are counted as far as they were written"
        )
    if stats.broadcasts_without_trigger:
        parts.append(
            f"[dim]{stats.broadcasts_without_trigger} broadcasts not triggered by a received "
            f"message are left out of the fan-out row[/dim]"
        )
    return Group(*parts)


__all__ = [
    "PERCENTILE_METHOD",
    "Stats",
    "Summary",
    "compute_stats",
    "fanout_latencies",
    "percentile",
    "stats_renderable",
]
