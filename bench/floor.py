"""What a traced message costs at the least: the span work alone, timed in this process.

    python -m bench.floor

In ``connection`` shape one echoed message of the benchmark makes five spans: the message,
its frame, the broadcast, the send and the send's frame.  Whatever the hooks do, the server
has to build those five spans for the SDK's processors and get them out of the process.
This times, best of several runs of thousands of iterations, with the real SDK and
wstrace's own code:

- **build** — the recorder making the five spans and the
  :class:`~tracer.export.pipeline.ExportPipeline` buffering them (``Recorder.start`` /
  ``Recorder.span`` / ``end``, as the recorder does after each message), with spans built in
  the server (an exporter in the server process, or another processor beside the pipeline);
- **pickle** — :class:`~tracer.export.offload.SubprocessExporter`'s per-span cost of handing
  those spans to its export process;
- **build as facts** and **pickle facts** — the same two where the server hands the pipeline
  the message's spans as one family fact and the export process builds them
  (:mod:`tracer.export.facts`): ``wstrace serve``'s set-up when the provider's ``SpanLimits``
  could cut a message's spans.  With the SDK's defaults a message goes as a template, the
  values of its spans (:mod:`tracer.export.message_facts`), which :mod:`bench.hooks` times
  with the hooks that record it (*message spans*);
- **encode** — OTLP/JSON encoding as the file exporter does it (what an exporter in the server
  process costs instead of pickling; ``python -m bench.encode`` times it on recorded spans).

Compare their sum with a quarter of the untraced server's CPU per message (the 1.25× bar).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tracer.export.pipeline import ExportPipeline

SPANS_PER_MESSAGE = 5


class _Discard(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _DiscardFacts(_Discard):
    """An exporter that takes facts, as :class:`~tracer.export.offload.SubprocessExporter`
    does; keeps the last batch (to time its pickling)."""

    rebuilds_spans = True
    last: Any = ()

    def export(self, spans: Any) -> SpanExportResult:
        self.last = spans
        return SpanExportResult.SUCCESS


def _message_emitter(provider: TracerProvider) -> Callable[[], None]:
    """The five spans of one echoed message, made the way the recorder makes them."""
    from tracer import vocab
    from tracer.recorder import Recorder

    recorder = Recorder(provider)
    root = recorder.start(vocab.CONNECTION, None, time.time_ns(), {vocab.CONNECTION_ID: 1})
    code = {
        vocab.CODE_FUNCTION_NAME: "uvicorn.protocols.websockets.websockets_sansio_impl.send",
        vocab.CODE_FILE_PATH: "/site-packages/uvicorn/protocols/websockets/sansio_impl.py",
        vocab.CODE_LINE_NUMBER: 432,
    }
    frame = {
        vocab.WS_FIN: True, vocab.WS_RSV: 0, vocab.WS_OPCODE: 1, vocab.WS_OPCODE_NAME: "text",
        vocab.WS_MASK: True, vocab.WS_PAYLOAD_LENGTH: 46, vocab.WS_HEADER_LENGTH: 6,
        vocab.FRAME_OFFSET: 1024,
    }

    def one() -> None:
        t = time.time_ns()
        message = recorder.start_family(  # as the message emitter makes it
            vocab.WS_MESSAGE_RECEIVE, root, t,
            {**code, vocab.WS_MESSAGE_TYPE: "text", vocab.WS_MESSAGE_SIZE: 46,
             vocab.MESSAGE_INDEX: 7, vocab.CONNECTION_ID: 1, vocab.WS_MESSAGE_FRAMES: 1,
             vocab.QUEUE_WAIT_NS: 0, vocab.HANDLER_NS: 180_000, vocab.DELIVERED_NS: 20_000},
            SpanKind.SERVER,
        )
        recorder.span(vocab.WS_FRAME_RECEIVE, message, t, t + 9_000, {**code, **frame})
        broadcast = recorder.start(
            vocab.WS_BROADCAST, message, t + 100_000,
            {vocab.BROADCAST_RECIPIENTS: 1, vocab.CONNECTION_ID: 1,
             "wstrace.broadcast.detected": "explicit"},
        )
        send = recorder.start(
            vocab.WS_MESSAGE_SEND, broadcast, t + 110_000,
            {**code, vocab.WS_MESSAGE_TYPE: "text", vocab.WS_MESSAGE_SIZE: 60,
             vocab.WS_MESSAGE_FRAMES: 1, vocab.CONNECTION_ID: 1},
        )
        recorder.span(vocab.WS_FRAME_SEND, send, t + 111_000, t + 130_000, {**code, **frame})
        send.end(end_time=t + 140_000)
        broadcast.end(end_time=t + 150_000)
        message.end(end_time=t + 200_000)

    return one


def _best(run: Callable[[], None], count: int, repeats: int = 5) -> float:
    """Best per-call CPU time of ``run`` in µs over ``repeats`` runs of ``count`` calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(count):
            run()
        best = min(best, (time.process_time() - started) / count * 1e6)
    return best


def _pickle_cost(items: list[Any], count: int) -> float:
    """µs per message for pickling ``items`` (spans, facts or families) in the export
    process's chunks."""
    from tracer.export.facts import span_count
    from tracer.export.offload import SPANS_PER_MESSAGE as CHUNK
    from tracer.export.offload import _dumps

    def pickle_batch() -> None:
        for first in range(0, len(items), CHUNK):
            _dumps(("spans", items[first : first + CHUNK], False, None))

    spans = sum(span_count(item) for item in items)
    return _best(pickle_batch, max(1, count // 500)) / spans * SPANS_PER_MESSAGE


def _facts_floor(count: int) -> tuple[float, float]:
    """(build, pickle) µs per message on the facts path."""
    exporter = _DiscardFacts()
    provider = TracerProvider()
    provider.add_span_processor(ExportPipeline(exporter, name="file", batch_spans=512))
    emit = _message_emitter(provider)
    build = _best(emit, count)
    for _ in range(103):
        emit()
    provider.force_flush()
    facts = list(exporter.last)[-128:]
    provider.shutdown()
    assert facts and all(type(f) is tuple for f in facts), "the facts path did not apply"
    return build, _pickle_cost(facts, count)


def measure(count: int = 5000) -> dict[str, float]:
    """µs per message for building, pickling and encoding its five spans."""
    from tracer.export.otlp_json import spans_to_otlp_bytes

    provider = TracerProvider()
    provider.add_span_processor(ExportPipeline(_Discard(), name="file"))  # spans built here
    build = _best(_message_emitter(provider), count)
    provider.shutdown()
    build_facts, pickle_facts = _facts_floor(count)

    memory = InMemorySpanExporter()
    kept = TracerProvider()
    kept.add_span_processor(SimpleSpanProcessor(memory))
    emit = _message_emitter(kept)
    for _ in range(103):
        emit()
    spans: list[ReadableSpan] = list(memory.get_finished_spans())[-512:]

    def encode_batch() -> None:
        for first in range(0, len(spans), 64):
            spans_to_otlp_bytes(spans[first : first + 64])

    pickle = _pickle_cost(spans, count)  # type: ignore[arg-type]
    encode = _best(encode_batch, max(1, count // 2000), 3) / len(spans) * SPANS_PER_MESSAGE
    return {
        "build_us": build,
        "pickle_us": pickle,
        "build_facts_us": build_facts,
        "pickle_facts_us": pickle_facts,
        "encode_us": encode,
    }


def main() -> None:
    figures = measure()
    print(
        f"per message of {SPANS_PER_MESSAGE} spans: build {figures['build_us']:.1f} µs, "
        f"pickle for the export process {figures['pickle_us']:.1f} µs "
        f"(or encode OTLP/JSON in-process {figures['encode_us']:.1f} µs); "
        f"as one family fact: build {figures['build_facts_us']:.1f} µs, "
        f"pickle {figures['pickle_facts_us']:.1f} µs"
    )


if __name__ == "__main__":
    main()
