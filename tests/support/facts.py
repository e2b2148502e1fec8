"""Helpers for the facts path: the same spans made on two providers, one whose processors take
facts and one that gets ``ReadableSpan``\\s, so the two ways can be compared."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tests.support.tracing import Gated
from tracer import vocab
from tracer.export import facts
from tracer.export.accounting import estimate_bytes
from tracer.export.offload import OTLP_FILE_FACTORY, SubprocessExporter
from tracer.export.pipeline import ExportPipeline
from tracer.recorder import Recorder

T0 = 1_700_000_000_000_000_000
"""Every span of :func:`make_spans` starts after this (ns): fixed times, same bytes."""


class CountingIds(IdGenerator):
    """Ids 1, 2, 3…: two providers given one each make the same ids for the same spans."""

    def __init__(self) -> None:
        self._span_ids = itertools.count(0x1000)
        self._trace_ids = itertools.count(0xABC0_0000_0000_0000_0000_0000)

    def generate_span_id(self) -> int:
        return next(self._span_ids)

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)


LIMITS = SpanLimits(
    max_span_attributes=6,
    max_events=2,
    max_links=2,
    max_event_attributes=2,
    max_link_attributes=1,
    max_attribute_length=24,
)
"""Tight enough that :func:`make_spans`' ``limited`` span goes over every one of them."""


NO_EVENTS_OR_LINKS = SpanLimits(max_events=0, max_links=0)
"""Every event and link dropped: the spans keep only the counts."""


def provider(limits: SpanLimits = LIMITS, sampler: Any = None) -> TracerProvider:
    """A provider like ``wstrace serve``'s, with deterministic ids and tight ``SpanLimits``
    (and ``sampler``, the SDK's default if ``None``)."""
    return TracerProvider(
        resource=Resource({"service.name": "facts-test", "deployment.environment": "test"}),
        id_generator=CountingIds(),
        span_limits=limits,
        sampler=sampler,
    )


def _context(context: Any) -> Any:
    if context is None:
        return None
    return (context.trace_id, context.span_id, context.is_remote, int(context.trace_flags),
            tuple(context.trace_state.items()))


def described(span: ReadableSpan) -> dict[str, Any]:
    """Every field of a span an exporter may read, as plain values (trace states in order)."""
    return {
        "name": span.name,
        "context": _context(span.context),
        "parent": _context(span.parent),
        "kind": span.kind,
        "status": (span.status.status_code, span.status.description),
        "times": (span.start_time, span.end_time),
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, e.timestamp, dict(e.attributes or {}), e.dropped_attributes)
                   for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(_context(link.context), dict(link.attributes or {}),
                   link.dropped_attributes) for link in span.links],
        "dropped_links": span.dropped_links,
        "resource": dict(span.resource.attributes),
        "scope": (span.instrumentation_scope.name, span.instrumentation_scope.version),
    }


def both_ways(
    make: Callable[[TracerProvider], int], limits: SpanLimits
) -> tuple[FactCollector, InMemorySpanExporter, int]:
    """The same spans made by ``make`` on two providers with ``limits``: one whose processor
    takes facts (the collector), one whose processor gets ``ReadableSpan``\\s (kept in the
    exporter); and how many spans each ended."""
    collector = FactCollector()
    by_facts = provider(limits)
    by_facts.add_span_processor(collector)
    ended = make(by_facts)
    memory = InMemorySpanExporter()
    by_spans = provider(limits)
    by_spans.add_span_processor(SimpleSpanProcessor(memory))
    assert make(by_spans) == ended
    return collector, memory, ended


class FactCollector(SpanProcessor):
    """Keeps the facts handed to it, as a pipeline in front of an export process would take
    them (``takes_facts``), and any ``ReadableSpan`` that still reaches it."""

    def __init__(self) -> None:
        self.facts: list[tuple[Any, ...]] = []
        self.spans: list[ReadableSpan] = []

    def takes_facts(self) -> bool:
        return True

    def on_fact(self, fact: tuple[Any, ...]) -> None:
        self.facts.append(fact)

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)

    def get_finished_spans(self) -> list[ReadableSpan]:
        """The spans the facts stand for (families expanded), as the export process builds
        them, then any that came as spans: an ``InMemorySpanExporter``'s answer."""
        rebuilt = [
            facts.rebuild(one, {one[facts.ORIGIN]: facts.origin_parts(one[facts.ORIGIN])})
            for fact in self.facts
            for one in facts.expand(fact)
        ]
        return [*rebuilt, *self.spans]


class Stamping(SimpleSpanProcessor):
    """A processor that writes to every span in ``on_start`` (as ``BaggageSpanProcessor``
    does) and keeps the finished spans in ``memory``."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        super().__init__(self.memory)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        span.set_attribute("stamped", 1)


def limit_counts(span: ReadableSpan) -> tuple[int, ...]:
    """How many attributes, events and links ``span`` kept, and how many of each it lost."""
    return (len(span.attributes or {}), span.dropped_attributes, len(span.events),
            span.dropped_events, len(span.links), span.dropped_links)  # fmt: skip


class GatedExportProcess(Gated, SubprocessExporter):
    """The real export process, held at its first export until the test opens the gate."""

    rebuilds_spans = True  # its export only waits, then hands everything on: facts too


class CappedFile:
    """A file written by a :class:`GatedExportProcess` behind a pipeline with room for three
    and a half spans padded to 10 KB, and one padded root span per letter of ``names``."""

    def __init__(self, tmp_path: Path, names: str) -> None:
        self.path = tmp_path / "out.otlp.jsonl"
        self.exporter = GatedExportProcess(OTLP_FILE_FACTORY, path=str(self.path))
        self.exporter.path = self.path
        self.tp = TracerProvider()  # no SpanLimits: the pad is what the byte cap weighs
        self.recorder = Recorder(self.tp)
        self.pad = {"pad": "x" * 10_000}
        self.roots = {name: self.recorder.start(name, None, T0, self.pad) for name in names}
        probe = facts.make(0, "probe", self.roots[names[0]].get_span_context(), None, 0, 0,
                           self.pad, (), (), SpanKind.INTERNAL, None)  # fmt: skip
        span_bytes = estimate_bytes(probe)
        self.pipeline = ExportPipeline(self.exporter, max_bytes=int(span_bytes * 3.5),
                                       batch_spans=1, span_bytes=span_bytes)  # fmt: skip
        self.tp.add_span_processor(self.pipeline)


def over_every_limit(span: Any) -> None:
    """Give ``span`` more attributes, longer values, more events and links, and more of their
    attributes than :data:`LIMITS` lets it keep."""
    span.set_attributes({f"a{n}": n for n in range(9)})
    span.set_attribute("long", "y" * 100)
    for n in range(4):
        span.add_event(f"e{n}", {"p": 1, "q": 2, "r": "z" * 50}, T0 + 32 + n)
    for n in range(3):
        span.add_link(
            trace.SpanContext(0x777, 0x100 + n, False, trace.TraceFlags(1)), {"u": 1, "v": 2}
        )


def make_spans(tp: TracerProvider) -> int:
    """A connection-like trace through wstrace's span-building paths (roots, open spans ended
    later, finished leaves, a remote parent with a trace state), with every kind, events,
    links with attributes, error statuses and a span over every ``SpanLimits``; returns how
    many spans were ended."""
    recorder = Recorder(tp)
    sdk = recorder.sdk
    assert sdk is not None
    state = trace.TraceState([("vendor", "v1"), ("other", "x")])
    elsewhere = trace.SpanContext(0x123, 0x456, True, trace.TraceFlags(1), state)
    root = recorder.start(
        vocab.CONNECTION, None, T0, {vocab.CONNECTION_ID: 1, "flag": True}, kind=SpanKind.SERVER
    )
    message = recorder.start(
        vocab.WS_MESSAGE_RECEIVE, root, T0 + 10, {"size": 46, "ratio": 0.5}, None,
        SpanKind.CONSUMER,
    )
    message.add_event("queued", {"depth": 2}, T0 + 11)
    message.add_link(elsewhere, {"why": "client traceparent"})
    recorder.span(vocab.WS_FRAME_RECEIVE, message, T0 + 12, T0 + 13, {"fin": True})
    recorder.span("failed.leaf", message, T0 + 14, T0 + 15, {"x": 1}, error="ValueError")
    send = recorder.start(
        vocab.WS_MESSAGE_SEND, message, T0 + 20, None, [Link(elsewhere, {"k": 1})],
        SpanKind.PRODUCER,
    )
    send.set_attribute("stack", ("a", "b", "c"))
    send.set_status(Status(StatusCode.ERROR, "peer went away"))
    send.end(T0 + 30)
    limited = recorder.start("limited", root, T0 + 31, None, None, SpanKind.CLIENT)
    over_every_limit(limited)
    limited.end(T0 + 40)
    message.set_status(Status(StatusCode.OK))
    message.end(T0 + 50)
    # A span under a parent of another process (a remote parent), carrying its trace state.
    remote_parent = trace.SpanContext(0xFEED, 0xBEEF, True, trace.TraceFlags(1), state)
    own = trace.SpanContext(0xFEED, sdk.new_span_id(), False, trace.TraceFlags(1), state)
    sdk.emit("continued", own, remote_parent, T0 + 60, T0 + 70, {"remote": "yes"})
    root.set_attribute(vocab.END_REASON, "closed")
    root.end(T0 + 100)
    return 7


def make_family(tp: TracerProvider) -> int:
    """A connection with one received message whose frames, sends and broadcast are made
    under it, as the message emitters make them (a family where every processor takes facts,
    separate spans otherwise): events on members, links, error statuses, a member over every
    ``SpanLimits``; returns how many spans were ended."""
    recorder = Recorder(tp)
    elsewhere = trace.SpanContext(0x321, 0x654, False, trace.TraceFlags(1))
    root = recorder.start(
        vocab.CONNECTION, None, T0, {vocab.CONNECTION_ID: 1}, kind=SpanKind.SERVER
    )
    message = recorder.start_family(
        vocab.WS_MESSAGE_RECEIVE, root, T0 + 10, {vocab.WS_MESSAGE_SIZE: 46}, SpanKind.SERVER
    )
    recorder.span(vocab.WS_FRAME_RECEIVE, message, T0 + 11, T0 + 12, {vocab.WS_FIN: True})
    recorder.span("failed.leaf", message, T0 + 13, T0 + 14, {"x": 1}, error="ValueError")
    broadcast = recorder.start(vocab.WS_BROADCAST, message, T0 + 20, {"recipients": 2})
    for n in range(2):
        send = recorder.start(
            vocab.WS_MESSAGE_SEND, broadcast, T0 + 21 + n, {"n": n}, [Link(elsewhere, {"k": n})]
        )
        send.add_event(vocab.WS_FRAME_SEND, {vocab.WS_FIN: True}, T0 + 22 + n)
        if n:
            send.set_status(Status(StatusCode.ERROR, "peer went away"))
        send.end(T0 + 25 + n)
    broadcast.end(T0 + 30)
    limited = recorder.start("limited", message, T0 + 31, None, None, SpanKind.CLIENT)
    over_every_limit(limited)
    limited.end(T0 + 40)
    message.add_event("handled", {"ns": 5}, T0 + 45)
    message.end(T0 + 50)
    root.end(T0 + 100)
    return 8


def make_chain(tp: TracerProvider) -> int:
    """A connection whose ASGI chain returns as the chain wrappers drive it, on a clock that
    ticks the same for every provider: a layer that leaves before its sibling enters, one
    that code running in it writes to (attributes and events over every ``SpanLimits``, a
    new name, a status), one that raised, and one under a span of the app's own; returns
    how many spans were ended."""
    from tracer import chain as chain_module

    recorder = Recorder(tp)
    root = recorder.start(vocab.CONNECTION, None, T0, {vocab.CONNECTION_ID: 1},
                          kind=SpanKind.SERVER)  # fmt: skip
    app = recorder.start(vocab.ASGI_APP, root, T0 + 1, {"app": 1})
    apps_own = trace.NonRecordingSpan(
        trace.SpanContext(0xABC, 0x999, False, trace.TraceFlags(1))
    )
    clock = itertools.count(T0 + 10, 5)
    with patch.object(chain_module, "time_ns", lambda: next(clock)):
        chain = chain_module.RecordedChain(app, recorder.sdk, recorder.tracer)
        outer = chain.enter("Outer", {vocab.MIDDLEWARE_LAYER: "Outer"}, None)
        chain.leave(chain.enter("solve_dependencies", {"deps": 1}, None), "solve_dependencies",
                    {"deps": 1}, None)  # fmt: skip
        middle = chain.enter("Middle", {f"m{n}": n for n in range(7)}, None)
        chain.set_attribute("written", "w" * 40)
        for n in range(3):
            chain.add_event(f"noted{n}", {"p": 1, "q": 2, "r": 3}, T0 + 12 + n)
        chain.update_name("Middle renamed")
        chain.set_status(Status(StatusCode.OK))
        under_app = chain.enter("UnderAppsOwn", {"own": 1}, apps_own)
        chain.leave(under_app, "UnderAppsOwn", {"own": 1}, None)
        inner = chain.enter("Inner", {"inner": 1}, None)
        chain.leave(inner, "Inner", {"inner": 1}, "ValueError")
        chain.leave(middle, "Middle", {f"m{n}": n for n in range(7)}, None)
        chain.leave(outer, "Outer", {vocab.MIDDLEWARE_LAYER: "Outer"}, None)
    app.end(T0 + 200)
    root.end(T0 + 300)
    return 7
