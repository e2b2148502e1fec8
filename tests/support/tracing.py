"""Real OpenTelemetry SDK pipelines for tests: spans kept in memory, open spans tracked."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer
from tracer import vocab
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


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``condition`` until it holds: the server's threads finish on their own schedule.

    A client that has seen the bytes knows nothing about when the server's span ends, so a
    test waits for the fact it needs, with a bound, instead of sleeping and hoping.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def closed_connections(t: Traced, count: int) -> Callable[[], bool]:
    """A condition: at least ``count`` ``ws.connection`` spans have ended."""
    return lambda: len(t.named(vocab.CONNECTION)) >= count


def assert_all_ended(t: Traced) -> None:
    """Every span started was ended, and the tracer contained no error of its own."""
    assert t.tracker.open == {}, f"spans left open: {t.tracker.open}"
    assert errors.counts == {}, f"tracer errors: {errors.counts}"


def assert_nested(tree: Tree) -> None:
    """Children start and end inside their parent, in the parent's trace."""
    for span in tree.spans:
        parent = tree.parent(span)
        if parent is None:
            continue
        assert parent.start_time <= span.start_time, (span.name, parent.name)
        assert span.end_time <= parent.end_time, (span.name, parent.name)
        assert span.context.trace_id == parent.context.trace_id


class Gated:
    """Mixed into a real exporter: its first export waits until the test opens ``gate`` — an
    output that cannot keep up while the test fills the pipeline's buffer.  ``entered`` is set
    once the exporter is held there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def export(self, spans: Any) -> Any:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return super().export(spans)  # type: ignore[misc]


def echo_instrumented(
    provider: TracerProvider, app: Any, *, http: str, ws: str, path: str, messages: int
) -> None:
    """``messages`` texts echoed over one real connection to ``app`` (wrapped in
    ``TracingMiddleware``) on a real server, with the server hooks installed meanwhile."""
    import asyncio

    import websockets

    from tests.support.server import run_server

    tracer.instrument(tracer_provider=provider)
    try:
        wrapped = tracer.TracingMiddleware(app, tracer_provider=provider)
        with run_server(wrapped, http=http, ws=ws) as server:

            async def talk() -> None:
                async with websockets.connect(f"{server.ws_url}{path}") as client:
                    for n in range(messages):
                        await client.send(f"hello {n}")
                        assert await client.recv() == f"hello {n}"

            asyncio.run(talk())
    finally:
        tracer.uninstrument()
