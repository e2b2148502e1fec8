"""The account of an export pipeline: what every span became, and the marks it leaves in
the file for traces that lost spans.

- :class:`ExportCounts`: spans written, failed, dropped by :class:`DropReason`; one line of it
  for people (:meth:`ExportCounts.summary`).
- :class:`Ledger`: the counts being kept, and the traces being dropped (so that the rest of
  such a trace is dropped too, and the file gets one :func:`loss_marker` span for it).
- :func:`estimate_bytes`: what a span (or its fact) weighs while it waits, for the byte cap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tracer import vocab
from tracer.export import message_facts
from tracer.export.facts import MEMBERS, SPANS, Fact, Field, is_template, origin_parts

MiB = 1024 * 1024
MAX_DROPPED_TRACES = 65_536
"""Trace ids remembered as being dropped (16 bytes and a small record each)."""


class DropReason:
    """Why a span did not reach the exporter (the keys of :attr:`ExportCounts.dropped`)."""

    BUFFER_FULL = "buffer_full"
    """The buffer was at its cap: the span's trace (the newest) was dropped."""
    EVICTED = "evicted"
    """Waiting in the buffer when an older trace needed the room."""
    TRACE_DROPPED = "trace_dropped"
    """Its trace was being dropped already: writing it would leave an orphan."""
    DRAIN_TIMEOUT = "drain_timeout"
    """Still waiting when the drain time at shutdown was over."""
    UNCONFIRMED = "unconfirmed"
    """Handed to an export process that was stopped before it exported them."""
    AFTER_SHUTDOWN = "after_shutdown"
    """Ended after the pipeline was shut down."""


@dataclass
class ExportCounts:
    """One pipeline's account: every span it was given is in exactly one of these."""

    name: str
    target: str
    written: int = 0
    failed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    """In the buffer or being exported right now."""
    incomplete_traces: int = 0
    """Traces that lost at least one span here."""
    buffered_bytes: int = 0
    peak_bytes: int = 0
    max_bytes: int = 0
    as_facts: int = 0
    """Of the spans given, how many came as facts (built in the export process) rather than
    as ``ReadableSpan``\\s (:mod:`tracer.export.facts`)."""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def lost(self) -> int:
        return self.dropped_total + self.failed

    def summary(self) -> str:
        """One line for a person: ``file traces/x.otlp.jsonl: 120 spans written, 0 dropped…``."""
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items()) if n)
        dropped = f"{self.dropped_total} dropped" + (f" ({reasons})" if reasons else "")
        line = f"{self.name} {self.target}: {self.written} spans written, {dropped}, "
        line += f"{self.failed} failed"
        if self.incomplete_traces:
            line += f"; {self.incomplete_traces} traces incomplete"
        if self.pending:
            line += f"; {self.pending} pending"
        return line + f"; buffer peak {self.peak_bytes / MiB:.1f} of {self.max_bytes / MiB:g} MiB"


def estimate_bytes(span: ReadableSpan | Fact) -> int:
    """Roughly what ``span`` (or a span's :mod:`~tracer.export.facts` fact) costs while it
    waits, in bytes: its fixed part, plus its attributes and events.  Cheap on purpose (it
    runs on the event loop), and the same figure for a span and its fact."""
    if type(span) is tuple:
        return _fact_bytes(span)
    size = 512 + _attributes_bytes(span._attributes)
    for event in span._events or ():
        size += 96 + _attributes_bytes(event.attributes)
    return size


def _fact_bytes(fact: Fact) -> int:
    """A fact's estimate; a family's is that of all its spans (a template's, of the spans it
    stands for)."""
    if is_template(fact):
        return _template_bytes(fact)
    size = _one_fact_bytes(fact[Field.ATTRIBUTES], fact[Field.EVENTS])
    if len(fact) > SPANS:
        size += _members_bytes(fact[MEMBERS])
    return size


def _template_bytes(template: Fact) -> int:
    """A template's estimate, worked out from its values: the same as that of the family it
    stands for (:func:`~tracer.export.message_facts.build`), without building the family's
    dicts and tuples on the event loop."""
    head = message_facts.message_fact(template, _laid_out_bytes)
    size = 512 + head[Field.ATTRIBUTES] + _events_bytes(template[Field.EVENTS])
    for _, (_, _, _, _, _, _, code, layout, values) in message_facts.spans_below(template):
        size += 512 + _laid_out_bytes(code, layout, values)
    return size


def _laid_out_bytes(code: Any, layout: message_facts.Layout, values: tuple[Any, ...]) -> int:
    """:func:`_attributes_bytes` of ``laid_out(code, layout, values)``, without the dict."""
    size = _attributes_bytes(code)
    for key, value in zip(layout, values, strict=True):
        if value is not None:
            size += 48 + len(key)
            kind = type(value)  # most are numbers and short text: no call for those
            if kind is str:
                size += len(value)
            elif kind is not int and kind is not bool:
                size += _value_bytes(value)
    return size


def _members_bytes(members: tuple[Any, ...]) -> int:
    return sum(_one_fact_bytes(m[6], m[7]) + _members_bytes(m[10]) for m in members)


def _one_fact_bytes(attributes: Any, events: Any) -> int:
    size = 512 + _attributes_bytes(attributes[0] if type(attributes) is tuple else attributes)
    return size + _events_bytes(events)


def _events_bytes(events: Any) -> int:
    size = 0
    for _, _, event_attributes in events:
        if type(event_attributes) is tuple:
            event_attributes = event_attributes[0]
        size += 96 + _attributes_bytes(event_attributes)
    return size


def _attributes_bytes(attributes: Any) -> int:
    if not attributes:
        return 0
    size = 0
    for key, value in attributes.items():
        size += 48 + len(key) + _value_bytes(value)
    return size


def _value_bytes(value: Any) -> int:
    """An attribute value's weight past its key's: its text, or its items'."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value)
    if kind is tuple or kind is list:
        return 16 * len(value) + sum(len(v) for v in value if type(v) is str)
    return 0


class DroppedTrace:
    """A trace being dropped: how many of its spans so far, and how many the file was told of."""

    __slots__ = ("count", "first_ns", "last_ns", "marked", "reason", "resource", "scope")

    def __init__(self, reason: str, span: ReadableSpan | Fact) -> None:
        self.reason = reason
        self.count = 0
        self.marked = 0
        self.first_ns = self.last_ns = time.time_ns()
        if type(span) is tuple:
            self.resource, self.scope = origin_parts(span[Field.ORIGIN])
        else:
            self.resource = span.resource
            self.scope = span.instrumentation_scope


class Ledger:
    """One pipeline's counts and the traces it is dropping.  Not thread-safe: the pipeline
    calls it under its own lock."""

    def __init__(self, name: str, target: str, max_bytes: int) -> None:
        self.counts = ExportCounts(name, target, max_bytes=max_bytes)
        self.dropping: dict[int, DroppedTrace] = {}
        self.markers_passed = 0
        """Loss markers given to the exporter (they are not spans of the account)."""

    def drop(self, reason: str, spans: int) -> None:
        dropped = self.counts.dropped
        dropped[reason] = dropped.get(reason, 0) + spans

    def drop_more(self, trace_id: int, spans: int = 1) -> bool:
        """Count ``spans`` more spans of ``trace_id`` dropped if the trace is being dropped."""
        dropping = self.dropping.get(trace_id)
        if dropping is None:
            return False
        dropping.count += spans
        dropping.last_ns = time.time_ns()
        self.drop(DropReason.TRACE_DROPPED, spans)
        return True

    def drop_trace(
        self, trace_id: int, span: ReadableSpan | Fact, reason: str, spans: int, waiting: int
    ) -> None:
        """Count ``spans`` of ``trace_id`` dropped for ``reason``, and the ``waiting`` ones
        that go with them; every later span of it will be dropped too."""
        if waiting:
            self.drop(DropReason.TRACE_DROPPED, waiting)
        dropping = self.dropping.get(trace_id)
        if dropping is None:
            if len(self.dropping) >= MAX_DROPPED_TRACES:
                self.dropping.pop(next(iter(self.dropping)))
            dropping = self.dropping[trace_id] = DroppedTrace(reason, span)
            self.counts.incomplete_traces += 1
        dropping.count += spans + waiting
        dropping.last_ns = time.time_ns()
        self.drop(reason, spans)

    def take_markers(self) -> list[ReadableSpan]:
        """A :func:`loss_marker` for each trace that lost spans since the last ones."""
        markers = []
        for trace_id, dropping in self.dropping.items():
            if dropping.count > dropping.marked:
                markers.append(loss_marker(trace_id, dropping, dropping.count - dropping.marked))
                dropping.marked = dropping.count
        self.markers_passed += len(markers)
        return markers

    def settle(self, exported: int, failed: int, sent: int) -> None:
        """What an export process confirmed (it may have been stopped before the end): spans
        it received but did not export are dropped as ``unconfirmed``."""
        counts = self.counts
        passed = counts.written + counts.failed + self.markers_passed  # given to export()
        unconfirmed = max(0, sent - exported - failed)
        counts.written = max(0, exported - self.markers_passed)
        counts.failed = failed + max(0, passed - sent)  # never reached the process
        if unconfirmed:
            self.drop(DropReason.UNCONFIRMED, unconfirmed)


def loss_marker(trace_id: int, dropping: DroppedTrace, lost: int) -> ReadableSpan:
    """A span in ``trace_id`` that stands for ``lost`` spans of it that were not written."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    context = trace.SpanContext(
        trace_id,
        RandomIdGenerator().generate_span_id(),
        False,
        trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return ReadableSpan(
        name=vocab.LOSS_MARKER,
        context=context,
        parent=None,
        resource=dropping.resource,
        attributes={vocab.LOSS_SPANS: lost, vocab.LOSS_REASON: dropping.reason},
        kind=SpanKind.INTERNAL,
        start_time=dropping.first_ns,
        end_time=max(dropping.last_ns, dropping.first_ns),
        instrumentation_scope=dropping.scope,
    )
