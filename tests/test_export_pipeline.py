"""ExportPipeline: a buffer bounded in bytes, whole newest traces dropped past the cap, every
span counted, and readers that show what was lost as incomplete."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.support.server import free_port
from tests.support.tracing import Gated
from tracer import vocab
from tracer.analysis.stats import compute_stats
from tracer.export.offload import OTLP_HTTP_FACTORY, SubprocessExporter
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.pipeline import DropReason, ExportPipeline, estimate_bytes, stats
from tracer.export.reader import load

PAD = "x" * 10_000


class GatedFile(Gated, OTLPJsonFileExporter):
    """The real file exporter, held at its first export until the test opens the gate."""


def _span(tracer: trace.Tracer, name: str, parent: trace.Span | None = None) -> trace.Span:
    context = trace.set_span_in_context(parent) if parent is not None else None
    return tracer.start_span(name, context=context, attributes={"pad": PAD})


def test_past_the_cap_whole_newest_traces_are_dropped_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "out.otlp.jsonl"
    exporter = GatedFile(path)
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    probe = _span(tracer, "probe")
    probe.end()
    size = estimate_bytes(probe)  # type: ignore[arg-type]
    pipeline = ExportPipeline(exporter, max_bytes=int(size * 6.5), batch_spans=1, span_bytes=size)
    provider.add_span_processor(pipeline)

    roots = {name: _span(tracer, name) for name in "WABCD"}
    _span(tracer, "w1", roots["W"]).end()
    assert exporter.entered.wait(10)  # w1 is being exported: the file is stuck
    for name in ("a1", "a2", "b1", "c1", "c2"):  # with w1: six spans, just under the cap
        _span(tracer, name, roots[name[0].upper()]).end()
    roots["A"].end()  # an older trace needs room: the newest (C) is evicted
    _span(tracer, "c3", roots["C"]).end()  # C is being dropped: so is the rest of it
    _span(tracer, "d1", roots["D"]).end()  # fits again
    roots["W"].end()  # no room, and W has nothing waiting: W's root goes
    _span(tracer, "d2", roots["D"]).end()  # no room: D, the newest, goes whole
    exporter.gate.set()
    roots["B"].end()
    provider.shutdown()

    counts = pipeline.counts()
    assert counts.written == 6
    assert counts.dropped == {
        DropReason.EVICTED: 2,
        DropReason.TRACE_DROPPED: 2,
        DropReason.BUFFER_FULL: 2,
    }
    assert counts.failed == 0 and counts.pending == 0
    assert counts.incomplete_traces == 3
    assert any(c.target == str(path) and c.written == 6 for c in stats())

    traces = load([path])
    assert sorted(s.name for s in traces.spans) == ["A", "B", "a1", "a2", "b1", "w1"]
    trace_of = {s.name: s.trace_id for s in traces.spans}
    ids = {name: format(span.get_span_context().trace_id, "032x") for name, span in roots.items()}
    assert traces.lost_spans == {ids["W"]: 1, ids["C"]: 3, ids["D"]: 2}
    assert set(traces.incomplete) == {ids["W"], ids["C"], ids["D"]}
    assert "root missing" in traces.incomplete[trace_of["w1"]]
    assert "whole trace" in traces.incomplete[ids["C"]]
    assert trace_of["a1"] not in traces.incomplete and trace_of["b1"] not in traces.incomplete
    figures = compute_stats(traces).to_json()
    assert figures["incomplete_traces"] == 3 and figures["lost_spans"] == 6
    assert vocab.LOSS_MARKER not in {s.name for s in traces.spans}  # markers are not stages


def test_a_burst_below_the_cap_reaches_the_file_through_the_export_process(
    tmp_path: Path,
) -> None:
    exporter = SubprocessExporter.otlp_file(tmp_path / "burst.otlp.jsonl")
    pipeline = ExportPipeline(exporter)
    provider = TracerProvider()
    provider.add_span_processor(pipeline)
    tracer = provider.get_tracer("test")
    for _ in range(200):  # 200 traces of 25 spans, ended as fast as Python can
        root = tracer.start_span("root")
        for n in range(24):
            _span(tracer, f"child {n}", root).end()
        root.end()
    provider.shutdown()

    counts = pipeline.counts()
    assert (counts.written, counts.dropped_total, counts.failed) == (5000, 0, 0)
    traces = load([exporter.path])
    assert len(traces.spans) == 5000 and not traces.incomplete


def test_a_collector_that_is_down_costs_only_its_own_copy(tmp_path: Path) -> None:
    closed = free_port()
    collector = ExportPipeline(
        SubprocessExporter(OTLP_HTTP_FACTORY, endpoint=f"http://127.0.0.1:{closed}/v1/traces"),
        name="collector",
        drain_timeout_s=1.0,
        mark_loss=False,
    )
    file = ExportPipeline(OTLPJsonFileExporter(tmp_path / "f.otlp.jsonl"))
    provider = TracerProvider()
    provider.add_span_processor(collector)
    provider.add_span_processor(file)
    tracer = provider.get_tracer("test")
    for _ in range(300):
        with tracer.start_as_current_span("root"):
            _span(tracer, "child", trace.get_current_span()).end()
    provider.shutdown()

    lost = collector.counts()
    assert lost.written == 0
    assert lost.dropped_total + lost.failed == 600  # each one counted, whatever the reason
    kept = file.counts()
    assert (kept.written, kept.dropped_total, kept.failed) == (600, 0, 0)
    assert len(load([tmp_path / "f.otlp.jsonl"]).spans) == 600


def test_losses_are_logged_while_running_at_most_once_an_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = GatedFile(tmp_path / "slow.otlp.jsonl")
    pipeline = ExportPipeline(exporter, max_bytes=1000, span_bytes=1000, batch_spans=1)
    provider = TracerProvider()
    provider.add_span_processor(pipeline)
    tracer = provider.get_tracer("test")
    caplog.set_level(logging.WARNING, logger="wstrace")

    def losses() -> list[str]:
        return [r.getMessage() for r in caplog.records if "spans written" in r.getMessage()]

    _span(tracer, "held").end()
    assert exporter.entered.wait(10)  # the only span the cap allows is being exported
    _span(tracer, "dropped 1").end()
    deadline = time.monotonic() + 10
    while not losses():  # the writer thread reports it
        assert time.monotonic() < deadline, "no log line about the loss"
        time.sleep(0.01)
    _span(tracer, "dropped 2").end()
    pipeline._log_loss()  # within the interval: no second line
    assert len(losses()) == 1 and "1 dropped (1 buffer_full)" in losses()[0]
    exporter.gate.set()
    provider.shutdown()
    assert "2 dropped (2 buffer_full)" in losses()[-1]  # the last word, at shutdown


class BatchSizes:
    """An exporter that keeps the size of every batch it is handed."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.sizes.append(len(spans))
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def test_the_writer_exports_full_batches_and_the_rest_on_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tracer.export import pipeline as pipeline_module

    # No schedule within the test: only a full batch or the flush may start an export.
    monkeypatch.setattr(pipeline_module, "SCHEDULE_DELAY_S", 60.0)
    exporter = BatchSizes()
    pipeline = ExportPipeline(exporter, batch_spans=50)  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(pipeline)
    tracer = provider.get_tracer("test")
    for n in range(120):  # 120 traces of one span
        tracer.start_span(f"root {n}").end()
    assert pipeline.force_flush(10_000)
    assert exporter.sizes == [50, 50, 20]
    provider.shutdown()
    counts = pipeline.counts()
    assert (counts.written, counts.dropped_total, counts.failed) == (120, 0, 0)


class _Keeping:
    """An exporter that builds spans from facts itself (as the export process does) and keeps
    what it is given, in order."""

    rebuilds_spans = True

    def __init__(self) -> None:
        self.items: list[object] = []

    def export(self, items: Sequence[object]) -> SpanExportResult:
        self.items.extend(items)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _facts_of_three_traces() -> list[tuple[object, ...]]:
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    from tracer.export import facts

    number = facts.origin(TracerProvider().resource, None)
    made = []
    for n, (trace_id, flags) in enumerate([(1, 1), (1, 1), (2, 0), (3, 1), (1, 1), (3, 1)]):
        context = SpanContext(trace_id, 100 + n, False, TraceFlags(flags))
        made.append(facts.make(number, f"s{n}", context, None, n, n + 1, {"n": n}, (), (),
                               SpanKind.INTERNAL, None))  # fmt: skip
    return made


def test_facts_handed_over_together_are_held_as_one_by_one() -> None:
    """``on_facts`` (a connection's batch of messages) is ``on_fact`` for each: the same
    facts exported in the same order, unsampled ones left out, the same counts; and after
    the shutdown, each counted as dropped."""
    given = _facts_of_three_traces()
    outcomes = []
    for together in (False, True):
        exporter = _Keeping()
        pipeline = ExportPipeline(exporter, name="file")  # type: ignore[arg-type]
        if together:
            pipeline.on_facts(given)
        else:
            for fact in given:
                pipeline.on_fact(fact)
        assert pipeline.force_flush(10_000)
        held = pipeline.counts()
        pipeline.shutdown()
        if together:
            pipeline.on_facts(given)
        else:
            for fact in given:
                pipeline.on_fact(fact)
        late = pipeline.counts()
        outcomes.append((exporter.items, held.written, late.dropped_total))
    assert outcomes[0] == outcomes[1]
    items, written, dropped_late = outcomes[1]
    assert [item[1] for item in items] == ["s0", "s1", "s4", "s3", "s5"]  # type: ignore[index]
    assert written == 5 and dropped_late == 5
