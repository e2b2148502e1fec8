"""Real OpenTelemetry SDK pipelines for tests: spans kept in memory, open spans tracked."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer
from tracer._contain import errors


class OpenSpanTracker(SpanProcessor):
    """Remembers every span started and forgets it when it ends: what is left never ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open: dict[int, str] = {}
        self.started = 0

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        with self._lock:
            self.open[span.context.span_id] = span.name
            self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.open.pop(span.context.span_id, None)


@dataclass
class Traced:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    tracker: OpenSpanTracker
    instrumentor: Any = None
    spans_cache: list[ReadableSpan] = field(default_factory=list)

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]


def make_provider(
    sampler: Any = None,
) -> tuple[TracerProvider, InMemorySpanExporter, OpenSpanTracker]:
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    exporter = InMemorySpanExporter()
    tracker = OpenSpanTracker()
    provider.add_span_processor(tracker)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter, tracker


@contextlib.contextmanager
def traced(**options: Any) -> Iterator[Traced]:
    """Server hooks installed on a fresh provider for the duration of the block."""
    provider, exporter, tracker = make_provider()
    errors.reset()
    instrumentor = tracer.instrument(tracer_provider=provider, **options)
    try:
        yield Traced(provider, exporter, tracker, instrumentor)
    finally:
        tracer.uninstrument()


class Tree:
    """Parent/child index over finished spans, for structural assertions."""

    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.spans = spans
        self.by_id = {s.context.span_id: s for s in spans}
        self.children: dict[int | None, list[ReadableSpan]] = {}
        for span in spans:
            parent = span.parent.span_id if span.parent else None
            self.children.setdefault(parent, []).append(span)
        for kids in self.children.values():
            kids.sort(key=lambda s: (s.start_time, s.end_time))

    def kids(self, span: ReadableSpan, name: str | None = None) -> list[ReadableSpan]:
        found = self.children.get(span.context.span_id, [])
        return [s for s in found if name is None or s.name == name]

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        return self.by_id.get(span.parent.span_id) if span.parent else None

    def descendants(self, span: ReadableSpan) -> list[ReadableSpan]:
        out: list[ReadableSpan] = []
        stack = list(self.kids(span))
        while stack:
            child = stack.pop()
            out.append(child)
            stack.extend(self.kids(child))
        return out

    def connections(self) -> list[ReadableSpan]:
        return sorted(
            (s for s in self.spans if s.name == "ws.connection"), key=lambda s: s.start_time
        )
