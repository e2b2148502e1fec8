"""SubprocessExporter: spans encoded in a child process come out exactly as encoded in-process."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from enum import IntEnum
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.golden import synthetic
from tests.support.apps import echo_app
from tests.support.tracing import echo_instrumented
from tracer.export import message_facts
from tracer.export.offload import SubprocessExporter, _dumps, _loads
from tracer.export.otlp_json import spans_to_otlp_line


def spans_of(lines: str) -> dict[str, dict[str, Any]]:
    """Every span of OTLP/JSON lines by span id, with its resource and scope attached."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines.splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    found[span["spanId"]] = {
                        **span, "resource": rs["resource"], "scope": ss.get("scope")
                    }
    return found


def synthetic_spans() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    synthetic.small(memory)
    # One more with limits exceeded: dropped counts must travel too.
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2, max_events=1))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("limits").start_as_current_span("limited") as span:
        span.set_attributes({"a": 1, "b": 2, "c": 3})
        span.add_event("first")
        span.add_event("second")
    # A remote parent from another trace system, and a link, both with a trace state.
    state = trace.TraceState([("vendor", "v=1"), ("other", "x")])
    remote = trace.SpanContext(0xABC, 0xDEF, True, trace.TraceFlags(1), state)
    link = trace.Link(trace.SpanContext(0x123, 0x456, True, trace.TraceFlags(0), state), {"k": 1})
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    provider.get_tracer("remote").start_span("child", context=parent, links=[link]).end()
    return list(memory.get_finished_spans())


def test_one_batch_is_byte_for_byte_the_in_process_line(tmp_path: Path) -> None:
    spans = synthetic_spans()
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.path is not None
    written = exporter.path.read_text(encoding="utf-8")
    assert written == spans_to_otlp_line(spans)
    limited = next(s for s in spans_of(written).values() if s["name"] == "limited")
    assert limited["droppedAttributesCount"] == 1 and limited["droppedEventsCount"] == 1


def test_a_traced_connection_through_a_batch_processor(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    exporter = SubprocessExporter.otlp_file(directory=tmp_path)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    echo_instrumented(
        provider, echo_app(), http="httptools", ws="websockets-sansio", path="/echo", messages=5
    )
    provider.shutdown()
    assert exporter.path is not None
    child = spans_of(exporter.path.read_text(encoding="utf-8"))
    here = spans_of(spans_to_otlp_line(memory.get_finished_spans()))
    assert len(child) > 20
    assert {s["name"] for s in child.values()} >= {
        "ws.connection", "ws.message.receive", "ws.frame.receive", "ws.message.send"
    }
    assert child == here


class Level(IntEnum):
    HIGH = 3


def _fact(value: Any, template: bool = False) -> tuple[Any, ...]:
    """A fact shaped as a plain one or as a message template, with ``value`` in it."""
    fact = (0, "s", 1 << 100, 2, None, 1, None, 10, 20, 0, None, {"k": value}, (), (), None)
    return (*fact, 2, ((), ()), message_facts.TEMPLATE_MESSAGE) if template else fact


@pytest.mark.fast
def test_message_templates_go_by_marshal_and_anything_else_by_pickle() -> None:
    """Each comes back as it went: marshal only for wstrace's own values."""
    plain = ("spans", [_fact(v, template=True) for v in ("v", 1.5, b"x", ("a", 2))], True, None)
    enum = ("spans", [_fact(Level.HIGH, template=True)], False, None)  # not exactly an int
    buffer = ("spans", [_fact(bytearray(b"x"))], False, None)  # marshal would make it bytes
    spans = ("spans", synthetic_spans(), True, None)
    for message, encoding in [
        (plain, b"m"), (enum, b"p"), (buffer, b"p"), (spans, b"p"), (("flush", 3), b"p"),
    ]:  # fmt: skip
        payload = _dumps(message)
        assert payload[:1] == encoding
        back = _loads(payload)
        if message is spans:
            assert spans_to_otlp_line(back[1]) == spans_to_otlp_line(spans[1])
        else:
            assert back == message
    assert type(_loads(_dumps(enum))[1][0][11]["k"]) is Level
    assert type(_loads(_dumps(buffer))[1][0][11]["k"]) is bytearray


def test_a_value_pickle_cannot_carry_travels_as_text(tmp_path: Path) -> None:
    class Opaque:  # local: pickle cannot name it
        def __str__(self) -> str:
            return "opaque <value>"

    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("t").start_span("plain").end()
    (span,) = memory.get_finished_spans()
    odd = ReadableSpan(
        name="odd",
        context=span.context,
        resource=span.resource,
        attributes={"weird": Opaque(), "fine": 7},  # type: ignore[dict-item]
        start_time=1,
        end_time=2,
    )
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export([odd]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.path is not None
    (written,) = spans_of(exporter.path.read_text(encoding="utf-8")).values()
    values = {a["key"]: a["value"] for a in written["attributes"]}
    assert values == {"weird": {"stringValue": "opaque <value>"}, "fine": {"intValue": "7"}}


def test_force_flush_returns_when_the_file_has_everything(tmp_path: Path) -> None:
    spans = synthetic_spans()
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    for _ in range(20):
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush(timeout_millis=30_000)
    assert exporter.path is not None
    assert len(spans_of(exporter.path.read_text(encoding="utf-8"))) == len(spans)
    lines = exporter.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 20
    exporter.shutdown()


def test_a_flush_with_nothing_sent_since_the_last_asks_the_process_nothing(
    tmp_path: Path,
) -> None:
    """A pipeline's flush flushes its exporter; a second flush straight after (the SDK's
    ``force_flush`` on the exporter too) has nothing to wait for."""
    spans = synthetic_spans()
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.force_flush(timeout_millis=30_000)
    assert exporter.child_pid is not None
    child = psutil.Process(exporter.child_pid)
    child.suspend()  # from now on, a flush that asks it anything goes unanswered
    try:
        assert exporter.force_flush(timeout_millis=5_000)  # nothing sent since: not asked
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # into the pipe
        assert not exporter.force_flush(timeout_millis=200)  # asked, and no answer
    finally:
        child.resume()
    assert exporter.force_flush(timeout_millis=30_000)
    assert exporter.path is not None
    assert len(exporter.path.read_text(encoding="utf-8").splitlines()) == 2
    exporter.shutdown()


def test_ctrl_c_to_the_process_group_loses_nothing(tmp_path: Path) -> None:
    spans = synthetic_spans()
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    exporter.export(spans)
    assert exporter.force_flush()
    assert exporter.child_pid is not None
    os.kill(exporter.child_pid, signal.SIGINT)  # what a terminal's Ctrl-C does to it
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.path is not None
    assert len(exporter.path.read_text(encoding="utf-8").splitlines()) == 2


def test_a_dead_export_process_fails_exports_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spans = synthetic_spans()
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.child_pid is not None
    child = psutil.Process(exporter.child_pid)
    os.kill(exporter.child_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="tracer.export.offload"):
        results = [exporter.export(spans) for _ in range(5)]
    assert results == [SpanExportResult.FAILURE] * 5
    failures = [r for r in caplog.records if "export process failed" in r.getMessage()]
    assert len(failures) == 1
    assert exporter.force_flush() is False
    exporter.shutdown()


def test_no_process_until_the_first_span(tmp_path: Path) -> None:
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export([]) is SpanExportResult.SUCCESS
    assert exporter.child_pid is None
    assert exporter.force_flush() is True
    exporter.shutdown()
    assert not (tmp_path / "out.otlp.jsonl").exists()


def test_a_batch_larger_than_a_chunk_is_exported_as_one(tmp_path: Path) -> None:
    from tracer.export.offload import SPANS_PER_MESSAGE
    from tracer.export.otlp_file import SPANS_PER_LINE

    def lines_for(count: int) -> int:
        return -(-count // SPANS_PER_LINE)

    spans = synthetic_spans()
    size = 2 * SPANS_PER_MESSAGE + 1
    batch = (spans * (size // len(spans) + 1))[:size]
    chunks = [SPANS_PER_MESSAGE, SPANS_PER_MESSAGE, 1]
    # Exported chunk by chunk, the file would have more lines than exported as one.
    assert sum(lines_for(c) for c in chunks) > lines_for(size)
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.path is not None
    lines = exporter.path.read_text(encoding="utf-8").splitlines()
    # One export of the three chunks in the child: lines of at most SPANS_PER_LINE.
    assert len(lines) == lines_for(size)
    assert sum(len(spans_of(line)) for line in lines) > 0
    assert lines[0] == spans_to_otlp_line(batch[:SPANS_PER_LINE]).rstrip("\n")


def test_a_server_with_a_thousand_connections_open_can_still_flush(tmp_path: Path) -> None:
    """Descriptors past 1023 (the sockets of a burst of connections, the open-files limit
    raised as servers do) are out of ``select()``'s reach: waiting for the export process must
    not depend on it, or the first flush would fail and every span after it be dropped."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the open-files limit ({hard}) stays below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    held: list[int] = []
    exporter = SubprocessExporter.otlp_file(tmp_path / "t.otlp.jsonl")
    try:
        while not held or held[-1] < 1100:  # what the connections of a burst hold
            held.append(os.dup(0))
        spans = synthetic_spans()
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.force_flush()
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # not failed since
    finally:
        for fd in held:
            os.close(fd)
        exporter.shutdown()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert exporter.outcome() == (2 * len(spans), 0, 2 * len(spans))
