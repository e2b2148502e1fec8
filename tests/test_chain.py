"""The ASGI chain as one current span: every kind gives the same spans, in any leaving order.

Real OpenTelemetry SDK, in-memory exporter; the chain is driven the way ``run_layer`` drives
it (the server-level behaviour is covered end to end in ``test_asgi_trace.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.facts import FactCollector
from tracer import vocab
from tracer.chain import Chain, LayerRef, RecordedChain, innermost_span
from tracer.recorder import Recorder

pytestmark = pytest.mark.fast  # pure: no server, no subprocess


def make_chain(kind: str, limits: SpanLimits | None = None) -> tuple[Chain, Any, Any]:
    """A chain of ``kind`` under a connection's ``asgi.app``, and what its spans reach (as
    spans, or as facts that give the spans they stand for back)."""
    provider = TracerProvider(span_limits=limits)
    memory: Any = FactCollector() if kind == "recorded-as-facts" else InMemorySpanExporter()
    as_facts = kind == "recorded-as-facts"
    provider.add_span_processor(memory if as_facts else SimpleSpanProcessor(memory))
    recorder = Recorder(provider)
    base = recorder.start("asgi.app", recorder.start("ws.connection", None, 1), 2)
    if kind.startswith("recorded"):
        return RecordedChain(base, recorder.sdk, recorder.tracer), base, memory
    return Chain(base, recorder.start_layer, recorder.tracer), base, memory


KINDS = pytest.mark.parametrize("kind", ["recorded", "recorded-as-facts", "span-objects"])
"""The middleware alone with any tracer (span objects), the server hooks with the SDK (span
ids and start times), and the same on ``wstrace serve``'s set-up (layers as a family fact)."""


def by_name(memory: InMemorySpanExporter) -> dict[str, Any]:
    return {span.name: span for span in memory.get_finished_spans()}


@KINDS
def test_layers_nest_and_the_chain_answers_for_the_innermost(kind: str) -> None:
    chain, base, memory = make_chain(kind)
    assert chain.get_span_context() == base.get_span_context()
    outer = chain.enter("Outer", {"a": 1}, None)
    inner = chain.enter("Inner", {"b": 2}, None)
    innermost = innermost_span(chain)
    assert innermost.is_recording()
    assert chain.get_span_context() == innermost.get_span_context()
    chain.set_attribute("seen", "inner")
    chain.add_event("hello", {"k": "v"})
    chain.leave(inner, "Inner", {"b": 2}, None)
    chain.set_attribute("seen", "outer")
    chain.leave(outer, "Outer", {"a": 1}, "RuntimeError")
    assert chain.get_span_context() == base.get_span_context()
    spans = by_name(memory)
    assert spans["Inner"].parent == spans["Outer"].context
    assert spans["Outer"].parent == base.get_span_context()
    assert spans["Inner"].context == innermost.get_span_context()
    assert dict(spans["Inner"].attributes) == {"b": 2, "seen": "inner"}
    assert [e.name for e in spans["Inner"].events] == ["hello"]
    assert spans["Outer"].attributes["seen"] == "outer"
    assert spans["Outer"].attributes[vocab.ERROR_TYPE] == "RuntimeError"
    assert spans["Outer"].status.status_code.name == "ERROR"
    assert spans["Inner"].status.status_code.name == "UNSET"
    assert spans["Outer"].start_time <= spans["Inner"].start_time
    assert spans["Inner"].end_time <= spans["Outer"].end_time


@KINDS
def test_a_layer_leaving_out_of_order_keeps_the_innermost_right(kind: str) -> None:
    chain, base, memory = make_chain(kind)
    first = chain.enter("First", {}, None)
    first_context = chain.get_span_context()
    second = chain.enter("Second", {}, None)
    third = chain.enter("Third", {}, None)
    third_context = chain.get_span_context()
    chain.leave(second, "Second", {}, None)  # an app running inner apps side by side
    assert chain.get_span_context() == third_context
    fourth = chain.enter("Fourth", {}, None)  # under Third, the innermost
    chain.leave(fourth, "Fourth", {}, None)
    assert chain.get_span_context() == third_context
    chain.leave(third, "Third", {}, None)
    assert chain.get_span_context() == first_context  # Second left already
    chain.leave(first, "First", {}, None)
    spans = by_name(memory)
    assert spans["Fourth"].parent == spans["Third"].context
    assert spans["Third"].parent == spans["Second"].context
    assert spans["Second"].parent == spans["First"].context
    assert chain.get_span_context() == base.get_span_context()


@KINDS
def test_siblings_and_what_left_inside_them_nest_under_the_layer_they_ran_in(kind: str) -> None:
    """A route runs its dependencies, then its endpoint, at the same depth; what leaves
    inside each (plainly, or raising) waits for it, and each waits for the route."""
    chain, base, memory = make_chain(kind)
    outer = chain.enter("Outer", {"o": 1}, None)
    route = chain.enter("Route", {"r": 1}, None)
    deps = chain.enter("Deps", {}, None)
    chain.leave(chain.enter("DepsInner", {}, None), "DepsInner", {}, None)
    chain.leave(deps, "Deps", {}, None)
    endpoint = chain.enter("Endpoint", {}, None)
    chain.leave(chain.enter("Plain", {}, None), "Plain", {}, None)
    chain.leave(chain.enter("Raising", {}, None), "Raising", {}, "ValueError")
    chain.leave(endpoint, "Endpoint", {}, None)
    chain.leave(route, "Route", {"r": 1}, None)
    chain.leave(outer, "Outer", {"o": 1}, None)
    spans = by_name(memory)
    assert len(memory.get_finished_spans()) == 7
    parents = {name: span.parent.span_id for name, span in spans.items()}
    ids = {name: span.context.span_id for name, span in spans.items()}
    assert parents == {
        "Outer": base.get_span_context().span_id,
        "Route": ids["Outer"],
        "Deps": ids["Route"],
        "DepsInner": ids["Deps"],
        "Endpoint": ids["Route"],
        "Plain": ids["Endpoint"],
        "Raising": ids["Endpoint"],
    }
    assert spans["Raising"].attributes[vocab.ERROR_TYPE] == "ValueError"
    assert spans["Raising"].status.status_code.name == "ERROR"
    assert spans["Plain"].status.status_code.name == "UNSET"
    assert dict(spans["Route"].attributes) == {"r": 1}
    assert spans["Deps"].end_time <= spans["Endpoint"].start_time
    assert chain.get_span_context() == base.get_span_context()


def test_layers_waiting_as_family_members_keep_the_span_limits() -> None:
    limits = SpanLimits(max_span_attributes=1, max_attribute_length=3)
    chain, _, memory = make_chain("recorded-as-facts", limits)
    attributes = {"code.function": "__call__", vocab.MIDDLEWARE_LAYER: "Layer"}
    handles = [chain.enter("Layer", attributes, None) for _ in range(4)]
    for handle in reversed(handles):
        chain.leave(handle, "Layer", attributes, None)
    spans = memory.get_finished_spans()
    assert len(spans) == 4
    for span in spans:
        assert len(span.attributes) == 1 and span.dropped_attributes == 1
        assert all(len(value) <= 3 for value in span.attributes.values())


@KINDS
def test_a_foreign_span_in_between_becomes_the_parent(kind: str) -> None:
    chain, _, memory = make_chain(kind)
    outer = chain.enter("Outer", {}, None)
    # FastAPI's telemetry starts its span inside a layer and makes it current.
    foreign = chain.tracer.start_span("WS /x", context=trace.set_span_in_context(chain))
    inner = chain.enter("Inner", {}, foreign)
    chain.leave(inner, "Inner", {}, None)
    foreign.end()
    chain.leave(outer, "Outer", {}, None)
    spans = by_name(memory)
    assert spans["WS /x"].parent == spans["Outer"].context
    assert spans["Inner"].parent == spans["WS /x"].context


def test_a_recorded_layer_kept_as_a_parent_stays_put() -> None:
    chain, _, _ = make_chain("recorded")
    chain.enter("Layer", {}, None)
    kept = innermost_span(chain)
    layer = kept.get_span_context().span_id
    assert isinstance(kept, LayerRef) and kept.is_recording()
    chain.enter("Deeper", {}, None)
    assert kept.get_span_context().span_id == layer
    assert chain.get_span_context().span_id != layer


def test_the_app_span_shares_its_code_attributes_until_written_or_ended() -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    recorder = Recorder(provider)
    connection = recorder.start("ws.connection", None, 1)
    code = {"code.function.name": "run_asgi"}
    quiet = recorder.start_app(connection, 2, code, "/quiet")
    written = recorder.start_app(connection, 3, code, "/written")
    assert dict(quiet.attributes) == {**code, vocab.URL_PATH: "/quiet"}
    written.set_attribute("app.annotated", True)
    written.set_status(trace.Status(trace.StatusCode.ERROR, "boom"))
    quiet.end(end_time=4)
    written.end(end_time=5)
    assert code == {"code.function.name": "run_asgi"}  # shared, never written to
    spans = {span.attributes[vocab.URL_PATH]: span for span in memory.get_finished_spans()}
    assert list(spans["/quiet"].attributes) == [*code, vocab.URL_PATH]
    assert list(spans["/written"].attributes) == [*code, vocab.URL_PATH, "app.annotated"]
    assert spans["/written"].status.status_code.name == "ERROR"
    assert spans["/quiet"].parent == connection.get_span_context()
