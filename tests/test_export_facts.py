"""Spans built where they are exported: on ``wstrace serve``'s set-up the server hands each of
wstrace's spans to the pipeline as a fact and the export process builds it; the file is the
same, byte for byte, as when the server builds the spans itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import websockets
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer
from tests.support import facts as support
from tests.support.apps import echo_app
from tests.support.server import IMPL_PAIRS, run_server
from tests.support.tracing import echo_instrumented
from tracer import vocab
from tracer.demo import make_provider
from tracer.export import facts
from tracer.export.accounting import ExportCounts
from tracer.export.offload import OTLP_FILE_FACTORY, SubprocessExporter, _dumps, _loads
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.otlp_json import items_to_otlp_bytes, spans_to_otlp_bytes, spans_to_otlp_line
from tracer.export.pipeline import DropReason, ExportPipeline, serial, stats
from tracer.export.reader import load
from tracer.recorder import Recorder


def spans_in(path: Path) -> dict[str, dict[str, Any]]:
    """Every span of an OTLP/JSON Lines file by span id."""
    found: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    found[span["spanId"]] = span
    return found


def chain_layers(spans: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans of the ASGI chain's layers: under ``asgi.app``, through layers only (not
    ``ws.accept``, the greeting's sends and what is under them)."""

    def in_chain(span: dict[str, Any]) -> bool:
        parent = spans[span["parentSpanId"]]
        return parent["name"] == vocab.ASGI_APP or (
            not parent["name"].startswith("ws.") and "parentSpanId" in parent and in_chain(parent)
        )

    return [s for s in spans.values() if "parentSpanId" in s and not s["name"].startswith("ws.")
            and s["name"] != vocab.ASGI_APP and in_chain(s)]  # fmt: skip


def assert_whole_tree(spans: dict[str, dict[str, Any]]) -> None:
    """One trace, one root, every parent in the file."""
    assert len({s["traceId"] for s in spans.values()}) == 1
    roots = [s for s in spans.values() if "parentSpanId" not in s]
    assert [r["name"] for r in roots] == [vocab.CONNECTION]
    orphans = [s["name"] for s in spans.values() if s.get("parentSpanId", roots[0]["spanId"])
               not in spans]
    assert orphans == []


# --- The same spans both ways -------------------------------------------------------------------


@pytest.mark.fast
@pytest.mark.parametrize("limits", [support.LIMITS, support.NO_EVENTS_OR_LINKS])
def test_facts_rebuilt_after_the_pipe_are_the_spans_built_here(limits: Any) -> None:
    collector, memory, ended = support.both_ways(support.make_spans, limits)

    assert collector.spans == [] and len(collector.facts) == ended
    # Across the pipe as the export process gets them: the chunk and the origins pickled.
    numbers = {fact[facts.ORIGIN] for fact in collector.facts}
    origins = {number: facts.origin_parts(number) for number in numbers}
    message = _loads(_dumps(("spans", collector.facts, True, origins)))
    rebuilt = [facts.rebuild(fact, message[3]) for fact in message[1]]
    built = list(memory.get_finished_spans())
    assert len(built) == ended
    # Field for field (what any exporter may read), then byte for byte in the file's format.
    assert [support.described(s) for s in rebuilt] == [support.described(s) for s in built]
    assert spans_to_otlp_line(rebuilt) == spans_to_otlp_line(built)
    # And the export process's file exporter, which writes the facts without rebuilding them.
    assert items_to_otlp_bytes(message[1], message[3]) == spans_to_otlp_bytes(built)
    if limits is support.NO_EVENTS_OR_LINKS:  # empty lists that still count what they lost
        limited = next(s for s in rebuilt if s.name == "limited")
        assert (limited.events, limited.links) == ((), ())
        assert (limited.dropped_events, limited.dropped_links) == (4, 3)
        return

    line = json.loads(spans_to_otlp_line(rebuilt))
    (resource_spans,) = line["resourceSpans"]
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"]["name"] == vocab.INSTRUMENTATION_NAME
    by_name = {s["name"]: s for s in scope_spans["spans"]}
    limited = by_name["limited"]
    assert limited["droppedAttributesCount"] == 4 and limited["droppedEventsCount"] == 2
    assert limited["droppedLinksCount"] == 1
    assert limited["events"][0]["droppedAttributesCount"] == 1
    assert limited["links"][0]["droppedAttributesCount"] == 1
    continued = by_name["continued"]
    assert continued["traceState"] == "vendor=v1,other=x"
    assert continued["parentSpanId"] == format(0xBEEF, "016x")
    assert continued["flags"] & 0x200  # the parent is remote
    assert by_name[vocab.WS_MESSAGE_SEND]["status"] == {"code": 2, "message": "peer went away"}
    assert by_name[vocab.WS_MESSAGE_SEND]["links"][0]["attributes"]
    assert {s["kind"] for s in by_name.values()} == {1, 2, 3, 4, 5}


@pytest.mark.fast
def test_a_processor_beside_the_pipeline_keeps_spans_built_in_the_server() -> None:
    collector = support.FactCollector()
    memory = InMemorySpanExporter()
    tp = support.provider()
    tp.add_span_processor(collector)
    support.make_spans(tp)
    assert len(collector.facts) == 7 and collector.spans == []
    tp.add_span_processor(SimpleSpanProcessor(memory))  # a processor that must see spans
    ended = support.make_spans(tp)
    assert len(collector.facts) == 7  # none more: the processors changed, so did the path
    assert len(collector.spans) == ended == len(memory.get_finished_spans())


def test_the_file_written_through_the_export_process_is_the_in_process_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracer.export import pipeline as pipeline_module

    # One batch per pipeline (the flush at shutdown): both files get the same lines.
    monkeypatch.setattr(pipeline_module, "SCHEDULE_DELAY_S", 60.0)
    by_facts, by_spans = support.provider(), support.provider()
    child = SubprocessExporter.otlp_file(tmp_path / "facts.otlp.jsonl")
    through_child = ExportPipeline(child)
    in_process = ExportPipeline(OTLPJsonFileExporter(tmp_path / "spans.otlp.jsonl"))
    by_facts.add_span_processor(through_child)
    by_spans.add_span_processor(in_process)
    ended = support.make_spans(by_facts)
    support.make_spans(by_spans)
    by_facts.shutdown()
    by_spans.shutdown()

    assert through_child.counts().as_facts == ended == through_child.counts().written
    assert in_process.counts().as_facts == 0 and in_process.counts().written == ended
    written = (tmp_path / "facts.otlp.jsonl").read_bytes()
    assert written == (tmp_path / "spans.otlp.jsonl").read_bytes()
    assert len(spans_in(tmp_path / "facts.otlp.jsonl")) == ended


def _opaque() -> Any:
    class Opaque:  # local: pickle cannot name it
        def __str__(self) -> str:
            return "opaque <value>"

    return Opaque()


@pytest.mark.parametrize("in_family", [False, True], ids=["a span's own fact", "in a family"])
def test_a_value_pickle_cannot_carry_travels_as_text(tmp_path: Path, in_family: bool) -> None:
    collector = support.FactCollector()
    tp = support.provider()
    tp.add_span_processor(collector)
    recorder = Recorder(tp)
    # The odd values sit on a root (its own fact) or on a send deep in a message's family.
    root = recorder.start("odd", None, support.T0, {"fine": 7})
    odd = root
    if in_family:
        message = recorder.start_family(vocab.WS_MESSAGE_RECEIVE, root, support.T0 + 1)
        odd = recorder.start(vocab.WS_MESSAGE_SEND, message, support.T0 + 2, {"fine": 7})
    odd.set_attribute("weird", _opaque())
    odd.add_event("e", {"also": _opaque()}, support.T0 + 3)
    if in_family:
        odd.end(support.T0 + 4)
        message.end(support.T0 + 5)
    root.end(support.T0 + 6)
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export(collector.facts).name == "SUCCESS"
    exporter.shutdown()
    assert exporter.outcome() == ((3, 0, 3) if in_family else (1, 0, 1))
    spans = {s["name"]: s for s in spans_in(tmp_path / "out.otlp.jsonl").values()}
    written = spans[vocab.WS_MESSAGE_SEND if in_family else "odd"]
    values = {a["key"]: a["value"] for a in written["attributes"]}
    assert values == {"fine": {"intValue": "7"}, "weird": {"stringValue": "opaque <value>"}}
    assert written["events"][0]["attributes"] == [
        {"key": "also", "value": {"stringValue": "opaque <value>"}}
    ]
    if in_family:
        assert written["parentSpanId"] == spans[vocab.WS_MESSAGE_RECEIVE]["spanId"]


# --- A real server on wstrace serve's set-up -----------------------------------------------------


class ReadableSpansMade:
    """Counts ``ReadableSpan``\\s of wstrace's scope constructed in this (the server's) process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = ReadableSpan.__init__

        def counting(span: ReadableSpan, *args: Any, **kwargs: Any) -> None:
            original(span, *args, **kwargs)
            scope = span.instrumentation_scope
            if scope is not None and scope.name == vocab.INSTRUMENTATION_NAME:
                self.count += 1

        monkeypatch.setattr(ReadableSpan, "__init__", counting)


def serve_and_talk(
    provider: TracerProvider, app: Any, http: str, ws: str, path: str, since: int
) -> ExportCounts:
    """Three messages echoed over one real connection; the file pipeline's final counts
    (``since``: :func:`~tracer.export.pipeline.serial` before the provider was made)."""
    echo_instrumented(provider, app, http=http, ws=ws, path=path, messages=3)
    provider.shutdown()
    (counts,) = stats(since)
    return counts


@pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS)
def test_a_connection_on_the_serve_set_up_travels_as_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: str, ws: str
) -> None:
    made = ReadableSpansMade(monkeypatch)
    families: list[tuple[Any, ...]] = []
    on_fact, on_facts = ExportPipeline.on_fact, ExportPipeline.on_facts

    def noting_families(pipeline: ExportPipeline, fact: Any) -> None:
        if facts.span_count(fact) > 1:
            families.append(fact)
        on_fact(pipeline, fact)

    def noting_each(pipeline: ExportPipeline, given: Any) -> None:  # a batch of messages
        families.extend(fact for fact in given if facts.span_count(fact) > 1)
        on_facts(pipeline, given)

    monkeypatch.setattr(ExportPipeline, "on_fact", noting_families)
    monkeypatch.setattr(ExportPipeline, "on_facts", noting_each)
    since = serial()
    provider, exporter = make_provider(tmp_path, service="facts")
    counts = serve_and_talk(provider, echo_app(), http, ws, "/echo", since)
    assert counts.written > 20 and counts.dropped_total == 0 and counts.failed == 0
    assert counts.as_facts == counts.written
    assert made.count == 0  # no ReadableSpan of wstrace's was built in the server
    assert exporter.path is not None
    spans = spans_in(exporter.path)
    assert len(spans) == counts.written
    assert_whole_tree(spans)
    # The handshake went as one family (itself, its checks and its answer), each echoed
    # message as one (itself, its frame, its send and the send's frame), the ASGI chain as
    # another (every layer, from the outermost in), and the close with its two close frames.
    (handshake,) = [s for s in spans.values() if s["name"] == vocab.WS_HANDSHAKE]
    under_handshake = [s for s in spans.values() if s.get("parentSpanId") == handshake["spanId"]]
    assert {s["name"] for s in under_handshake} == {
        vocab.WS_HANDSHAKE_VALIDATE, vocab.WS_HANDSHAKE_RESPONSE
    }
    # (In the order they went: the messages go a few at a time, see recorder.emit.batches.)
    by_root: dict[str, list[int]] = {}
    for fact in families:
        by_root.setdefault(fact[facts.Field.NAME], []).append(facts.span_count(fact))
    (chain_root,) = set(by_root) - {vocab.WS_HANDSHAKE, vocab.WS_MESSAGE_RECEIVE, vocab.WS_CLOSE}
    assert by_root == {
        vocab.WS_HANDSHAKE: [1 + len(under_handshake)], vocab.WS_MESSAGE_RECEIVE: [4, 4, 4],
        chain_root: [len(chain_layers(spans))], vocab.WS_CLOSE: [3],
    }  # fmt: skip
    assert f"{families[0][facts.Field.SPAN_ID]:016x}" == handshake["spanId"]
    assert {
        f"{fact[facts.Field.SPAN_ID]:016x}"
        for fact in families
        if fact[facts.Field.NAME] == chain_root
    } == {
        layer["spanId"] for layer in chain_layers(spans)
        if spans[layer["parentSpanId"]]["name"] == vocab.ASGI_APP
    }  # fmt: skip
    names = [s["name"] for s in spans.values()]
    assert names.count(vocab.WS_MESSAGE_RECEIVE) == 3 and names.count(vocab.WS_FRAME_SEND) >= 3


@pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS)
def test_a_flush_mid_connection_writes_every_message_over_so_far(
    tmp_path: Path, http: str, ws: str
) -> None:
    """On ``wstrace serve``'s set-up the server holds messages back for a batch; a flush from
    another thread, the connection still open, writes every message handled by then."""
    provider, exporter = make_provider(tmp_path, service="flush")
    tracer.instrument(tracer_provider=provider)
    try:
        wrapped = tracer.TracingMiddleware(echo_app(), tracer_provider=provider)
        with run_server(wrapped, http=http, ws=ws) as server:

            async def talk() -> dict[str, dict[str, Any]]:
                async with websockets.connect(f"{server.ws_url}/echo") as client:
                    for n in range(3):
                        await client.send(f"hello {n}")
                        assert await client.recv() == f"hello {n}"
                    # The third was answered: the app had asked for it, so the first two
                    # are over (the third may be, too).
                    assert provider.force_flush(10_000)
                    assert exporter.path is not None
                    return spans_in(Path(exporter.path))

            spans = asyncio.run(talk())
    finally:
        tracer.uninstrument()
        provider.shutdown()
    indexes = sorted(
        int(attribute["value"]["intValue"])
        for span in spans.values()
        if span["name"] == vocab.WS_MESSAGE_RECEIVE
        for attribute in span["attributes"]
        if attribute["key"] == vocab.MESSAGE_INDEX
    )
    assert indexes[:2] == [1, 2] and indexes in ([1, 2], [1, 2, 3])
    assert vocab.WS_CLOSE not in {span["name"] for span in spans.values()}  # still open then


def test_export_in_process_builds_the_spans_in_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = ReadableSpansMade(monkeypatch)
    since = serial()
    provider, exporter = make_provider(tmp_path, service="facts", offload=False)
    counts = serve_and_talk(provider, echo_app(), "h11", "websockets-sansio", "/echo", since)
    assert counts.written > 20 and counts.as_facts == 0
    assert made.count == counts.written
    assert_whole_tree(spans_in(Path(exporter.path)))


class SpanAround:
    """ASGI middleware of the app's that makes its own span current around the rest of the
    chain: the layers inside it (spans of wstrace's) nest under an SDK span."""

    def __init__(self, app: Any, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with self.tracer.start_as_current_span("app.middleware"):
            await self.app(scope, receive, send)


def app_with_its_own_spans(provider: TracerProvider) -> FastAPI:
    """Echo, each reply inside a span the app makes through the SDK itself, the whole
    connection inside one its middleware makes."""
    app = FastAPI()
    own = provider.get_tracer("the.app")
    app.add_middleware(SpanAround, tracer=own)

    @app.websocket("/work")
    async def work(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                with own.start_as_current_span("app.work"):
                    await websocket.send_text(text)
        except WebSocketDisconnect:
            return

    return app


def test_app_spans_and_facts_share_one_trace_and_its_parentage(tmp_path: Path) -> None:
    since = serial()
    provider, exporter = make_provider(tmp_path, service="facts")
    app = app_with_its_own_spans(provider)
    counts = serve_and_talk(provider, app, "httptools", "websockets-sansio", "/work", since)
    assert counts.written - counts.as_facts == 4  # the app's spans, as ReadableSpans
    assert counts.as_facts > 20 and counts.dropped_total == 0
    assert exporter.path is not None
    spans = spans_in(exporter.path)
    assert_whole_tree(spans)
    mine = {"app.work", "app.middleware"}
    app_spans = [s for s in spans.values() if s["name"] in mine]
    assert sorted(s["name"] for s in app_spans) == ["app.middleware"] + ["app.work"] * 3
    for span in app_spans:
        assert spans[span["parentSpanId"]]["name"] not in mine  # a span sent as a fact
    # And the other way round: a layer of wstrace's under the app's own span.
    (around,) = (s for s in app_spans if s["name"] == "app.middleware")
    inside = [s["name"] for s in spans.values() if s.get("parentSpanId") == around["spanId"]]
    assert len(inside) == 1 and inside[0] not in mine


# --- Losses on the facts path ----------------------------------------------------------------


def test_past_the_cap_facts_drop_whole_newest_traces_and_mark_them(tmp_path: Path) -> None:
    capped = support.CappedFile(tmp_path, "WABC")
    path, exporter, tp, pipeline = capped.path, capped.exporter, capped.tp, capped.pipeline
    recorder, pad, roots = capped.recorder, capped.pad, capped.roots

    def leaf(name: str) -> None:
        recorder.span(name, roots[name[0].upper()], support.T0 + 1, support.T0 + 2, pad)

    leaf("w1")
    assert exporter.entered.wait(10)  # w1 is being exported: the output is stuck
    for name in ("a1", "b1", "c1"):  # three spans fit, w1 among them: c1 does not
        leaf(name)
    leaf("c2")  # the newest trace (C) was dropped: the rest of it goes too
    exporter.gate.set()
    assert pipeline.force_flush(30_000)  # room again for the roots
    for root in roots.values():
        root.end(support.T0 + 10)
    tp.shutdown()

    counts = pipeline.counts()
    assert counts.dropped == {DropReason.BUFFER_FULL: 1, DropReason.TRACE_DROPPED: 2}
    assert counts.written == 6 and counts.failed == 0 and counts.pending == 0
    assert counts.as_facts == 9  # every span, written or dropped, came as a fact
    traces = load([path])
    assert sorted(s.name for s in traces.spans) == ["A", "B", "W", "a1", "b1", "w1"]
    lost_trace = format(roots["C"].get_span_context().trace_id, "032x")
    assert traces.lost_spans == {lost_trace: 3}
    assert set(traces.incomplete) == {lost_trace}


# --- Who takes facts, and what a bad one costs --------------------------------------------------


class _Filtering(ExportPipeline):
    """A user's pipeline that reads the spans it is given."""

    def on_end(self, span: ReadableSpan) -> None:
        if span.name != "noise":
            super().on_end(span)


class _Enriching(SubprocessExporter):
    """A user's export process front that reads what it is given."""

    def export(self, spans: Any) -> Any:
        return super().export(list(spans))


@pytest.mark.fast
def test_only_wstrace_s_own_pipeline_and_export_process_take_facts(tmp_path: Path) -> None:
    plain = SubprocessExporter.otlp_file(tmp_path / "a.otlp.jsonl")
    enriching = _Enriching(OTLP_FILE_FACTORY, path=str(tmp_path / "b.otlp.jsonl"))
    pipelines = [
        ExportPipeline(plain, name="file"),
        _Filtering(plain, name="file"),
        ExportPipeline(enriching, name="file"),
        ExportPipeline(support.GatedExportProcess(OTLP_FILE_FACTORY, path=str(tmp_path / "c")),
                       name="file"),
    ]
    try:
        assert [p.takes_facts() for p in pipelines] == [True, False, False, True]
    finally:
        for pipeline in pipelines:
            pipeline.shutdown()


def test_a_fact_the_export_process_cannot_build_is_counted_failed_not_fatal(
    tmp_path: Path,
) -> None:
    collector = support.FactCollector()
    tp = support.provider()
    tp.add_span_processor(collector)
    support.make_spans(tp)
    good = collector.facts
    broken = list(good[0])
    broken[facts.Field.KIND] = 99  # no such SpanKind: the export process cannot build it
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export([tuple(broken), *good]).name == "SUCCESS"  # handed over
    assert exporter.export(good).name == "SUCCESS"  # and the export process lives on
    exporter.shutdown()
    exported, failed, sent = exporter.outcome()
    assert (exported, failed, sent) == (2 * len(good), 1, 2 * len(good) + 1)
    assert len(spans_in(tmp_path / "out.otlp.jsonl")) == len(good)  # the same ids, twice


# --- Families: a message and the spans under it as one fact ---------------------------------


@pytest.mark.fast
@pytest.mark.parametrize("limits", [support.LIMITS, support.NO_EVENTS_OR_LINKS])
def test_a_family_expanded_after_the_pipe_is_the_spans_built_here(limits: Any) -> None:
    collector, memory, ended = support.both_ways(support.make_family, limits)

    family, connection = collector.facts  # the message with everything under it, one fact
    assert collector.spans == [] and facts.span_count(family) == ended - 1
    numbers = {family[facts.ORIGIN]}
    message = _loads(
        _dumps(("spans", [family, connection], True, {n: facts.origin_parts(n) for n in numbers}))
    )
    # Members' ids were made in the server as they were made, by the counter the other
    # provider's spans took theirs from: they match one for one.
    expanded = [*facts.expand(message[1][0]), message[1][1]]
    rebuilt = [facts.rebuild(fact, message[3]) for fact in expanded]
    built = list(memory.get_finished_spans())
    assert [support.described(s) for s in rebuilt] == [support.described(s) for s in built]
    assert spans_to_otlp_line(rebuilt) == spans_to_otlp_line(built)
    assert items_to_otlp_bytes(expanded, message[3]) == spans_to_otlp_bytes(built)
    limited = next(s for s in rebuilt if s.name == "limited")
    assert limited.dropped_events + limited.dropped_links > 0  # SpanLimits held for members


@pytest.mark.fast
@pytest.mark.parametrize("limits", [support.LIMITS, support.NO_EVENTS_OR_LINKS])
def test_a_chain_goes_as_one_family_and_is_the_spans_built_here(limits: Any) -> None:
    collector, memory, ended = support.both_ways(support.make_chain, limits)

    # The outermost layer with every layer inside it is one fact; the layer under the app's
    # own span goes alone, its parent being no layer of the chain.
    assert collector.spans == []
    by_name = {fact[facts.Field.NAME]: fact for fact in collector.facts}
    assert sorted(by_name) == sorted(["Outer", "UnderAppsOwn", vocab.ASGI_APP, vocab.CONNECTION])
    assert facts.span_count(by_name["Outer"]) == 4  # Outer, solve_dependencies, Middle, Inner
    assert sum(facts.span_count(fact) for fact in collector.facts) == ended
    numbers = {fact[facts.ORIGIN] for fact in collector.facts}
    message = _loads(_dumps(
        ("spans", collector.facts, True, {n: facts.origin_parts(n) for n in numbers})
    ))  # fmt: skip
    expanded = [one for fact in message[1] for one in facts.expand(fact)]
    rebuilt = {s.context.span_id: s for s in (facts.rebuild(f, message[3]) for f in expanded)}
    built = {s.context.span_id: s for s in memory.get_finished_spans()}
    assert len(built) == ended
    assert {i: support.described(s) for i, s in rebuilt.items()} == {
        i: support.described(s) for i, s in built.items()
    }
    spans = {s.name: s for s in built.values()}
    assert spans["Inner"].parent.span_id == spans["Middle renamed"].context.span_id
    assert spans["UnderAppsOwn"].parent.span_id == 0x999
    assert spans["Inner"].status.status_code is trace.StatusCode.ERROR
    if limits is support.LIMITS:
        assert spans["Middle renamed"].dropped_attributes and spans["Middle renamed"].dropped_events


@pytest.mark.fast
@pytest.mark.parametrize("switch", [False, True], ids=["from-the-start", "before-it-ends"])
def test_a_member_handed_on_after_all_keeps_its_limits_and_counts(switch: bool) -> None:
    """A member is cut to the SpanLimits when it is made; handed on as a span after all, to a
    processor that writes to it in on_start, it loses no count and stays within them."""
    stamping = support.Stamping()
    tp = support.provider()
    tp.add_span_processor(support.FactCollector())
    if not switch:
        tp.add_span_processor(stamping)  # spans needed from the start: no family at all
    recorder = Recorder(tp)
    root = recorder.start(vocab.CONNECTION, None, support.T0, {vocab.CONNECTION_ID: 1})
    message = recorder.start_family(vocab.WS_MESSAGE_RECEIVE, root, support.T0 + 10, {})
    limited = recorder.start("limited", message, support.T0 + 31, None, None)
    support.over_every_limit(limited)
    limited.end(support.T0 + 40)
    if switch:
        tp.add_span_processor(stamping)
    message.end(support.T0 + 50)

    span = {s.name: s for s in stamping.memory.get_finished_spans()}["limited"]
    assert span.attributes["stamped"] == 1
    assert support.limit_counts(span) == (6, 5, 2, 2, 2, 1)


@pytest.mark.fast
def test_a_chain_goes_out_layer_by_layer_when_a_processor_needs_spans_before_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = support.FactCollector()
    memory = InMemorySpanExporter()
    tp = support.provider()
    tp.add_span_processor(collector)

    from tracer import chain as chain_module

    leave = chain_module.RecordedChain.leave

    def leaving(chain: Any, layer: int, name: str, *args: Any) -> None:
        if name == "Middle":  # the layers inside it went as members: spans needed now
            tp.add_span_processor(SimpleSpanProcessor(memory))
        leave(chain, layer, name, *args)

    monkeypatch.setattr(chain_module.RecordedChain, "leave", leaving)
    ended = support.make_chain(tp)

    spans = {s.name: s for s in [*collector.spans, *memory.get_finished_spans()]}
    assert set(spans) >= {"Inner", "Middle renamed", "Outer", "solve_dependencies"}
    for child, parent in [("Inner", "Middle renamed"), ("Middle renamed", "Outer"),
                          ("solve_dependencies", "Outer")]:  # fmt: skip
        assert spans[child].parent.span_id == spans[parent].context.span_id
    # Before the change: the layer under the app's own span, as a fact; after it, every
    # span reached both processors as a span, the members held until then included.
    assert [fact[facts.Field.NAME] for fact in collector.facts] == ["UnderAppsOwn"]
    assert len(memory.get_finished_spans()) == ended - 1


@pytest.mark.fast
def test_a_family_goes_out_span_by_span_when_a_processor_needs_spans_before_it_ends() -> None:
    collector = support.FactCollector()
    memory = InMemorySpanExporter()
    tp = support.provider()
    tp.add_span_processor(collector)
    recorder = Recorder(tp)
    root = recorder.start(vocab.CONNECTION, None, support.T0)
    message = recorder.start_family(vocab.WS_MESSAGE_RECEIVE, root, support.T0 + 1, {"m": 1})
    send = recorder.start(vocab.WS_MESSAGE_SEND, message, support.T0 + 2, {"s": 1})
    recorder.span(vocab.WS_FRAME_SEND, send, support.T0 + 3, support.T0 + 4, {"f": 1})
    send.end(support.T0 + 5)
    tp.add_span_processor(SimpleSpanProcessor(memory))  # spans needed from now on
    message.end(support.T0 + 6)
    root.end(support.T0 + 7)

    spans = {s.name: s for s in memory.get_finished_spans()}
    assert list(spans) == [vocab.WS_FRAME_SEND, vocab.WS_MESSAGE_SEND, vocab.WS_MESSAGE_RECEIVE,
                           vocab.CONNECTION]
    for child, parent in [(vocab.WS_FRAME_SEND, vocab.WS_MESSAGE_SEND),
                          (vocab.WS_MESSAGE_SEND, vocab.WS_MESSAGE_RECEIVE),
                          (vocab.WS_MESSAGE_RECEIVE, vocab.CONNECTION)]:
        assert spans[child].parent.span_id == spans[parent].context.span_id
        assert spans[child].context.trace_id == spans[vocab.CONNECTION].context.trace_id
    assert len({s.context.span_id for s in spans.values()}) == 4
    assert collector.facts == []  # nothing went out before the processors changed


def test_a_family_is_counted_span_by_span_when_written_and_when_dropped(tmp_path: Path) -> None:
    capped = support.CappedFile(tmp_path, "WFG")
    path, exporter, tp, pipeline = capped.path, capped.exporter, capped.tp, capped.pipeline
    recorder, pad, roots = capped.recorder, capped.pad, capped.roots

    def family(name: str, members: int) -> None:
        top = recorder.start_family(name, roots[name[0].upper()], support.T0 + 1, pad)
        for n in range(members):
            recorder.span(f"{name}.{n}", top, support.T0 + 1, support.T0 + 2, pad)
        top.end(support.T0 + 3)

    recorder.span("w1", roots["W"], support.T0 + 1, support.T0 + 2, pad)
    assert exporter.entered.wait(10)  # w1 is being exported: the output is stuck
    family("f1", 3)  # four spans with w1's three of room: the whole family is dropped
    family("g1", 1)  # two spans: they fit
    exporter.gate.set()
    assert pipeline.force_flush(30_000)
    for root in roots.values():
        root.end(support.T0 + 10)
    tp.shutdown()

    counts = pipeline.counts()
    assert counts.dropped == {DropReason.BUFFER_FULL: 4, DropReason.TRACE_DROPPED: 1}
    assert counts.written == 5 and counts.failed == 0 and counts.pending == 0
    assert counts.as_facts == 10
    traces = load([path])
    assert sorted(s.name for s in traces.spans) == ["G", "W", "g1", "g1.0", "w1"]
    lost_trace = format(roots["F"].get_span_context().trace_id, "032x")
    assert traces.lost_spans == {lost_trace: 5}


def test_a_family_the_export_process_cannot_build_counts_all_its_spans_failed(
    tmp_path: Path,
) -> None:
    collector = support.FactCollector()
    tp = support.provider()
    tp.add_span_processor(collector)
    ended = support.make_family(tp)
    family, connection = collector.facts
    first = list(family[facts.MEMBERS][0])
    first[4] = 99  # no such SpanKind, deep in the family
    broken = (*family[: facts.MEMBERS], (tuple(first), *family[facts.MEMBERS][1:]))
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export([broken, connection]).name == "SUCCESS"
    assert exporter.export([family]).name == "SUCCESS"
    exporter.shutdown()
    assert exporter.outcome() == (1 + ended - 1, ended - 1, 1 + 2 * (ended - 1))
    assert len(spans_in(tmp_path / "out.otlp.jsonl")) == ended
