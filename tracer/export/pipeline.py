"""The way finished spans travel to one exporter: a buffer bounded in bytes, one writer thread,
and an account of every span.

The SDK's ``BatchSpanProcessor`` keeps a queue of 2,048 spans, sized for a network collector: a
burst of connections ends tens of thousands of spans within a second and the queue drops most
of them, with one log line to show for it.  :class:`ExportPipeline` is the span processor for
wstrace's outputs instead:

- ``on_end`` (on the server's event loop) only appends the span to a buffer; it never blocks
  and never does I/O.  One thread takes spans from the buffer, oldest traces first, and calls
  the exporter; a slow exporter (a file behind a pipe, a collector) slows that thread only.
- The buffer is bounded in *bytes* (an estimate of what the spans will weigh in the file,
  :func:`estimate_bytes`), not in spans: ``max_bytes``, 64 MiB by default for the file.  While
  the exporter keeps up with the server, nothing is dropped, however large the burst.
- When a burst passes the cap, whole traces are dropped, newest first: spans of the traces
  that reached the buffer last are taken out of it, and every later span of a dropped trace is
  dropped too, so what is written holds no child whose parent was dropped where that can be
  avoided.  Each dropped trace gets a :data:`~tracer.vocab.LOSS_MARKER` span in the file
  saying how many of its spans were lost, and readers show that connection as incomplete.
- Every span is counted: written, dropped (by reason), failed (the exporter said so).
  :func:`stats` returns the counts of every pipeline in the process; a loss is logged as it
  happens, at most once every :data:`LOG_INTERVAL_S`.

Spans the exporter accepted are *written*.  For a
:class:`~tracer.export.offload.SubprocessExporter`, that is confirmed by its export process
(:meth:`~tracer.export.offload.SubprocessExporter.outcome`): spans it received but never
exported (it was stopped at the end of the drain time) are dropped with reason
``unconfirmed``.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from tracer import vocab
from tracer._contain import errors

logger = logging.getLogger("wstrace")

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 64 * MiB
"""What may wait for the file: at ~1 KiB a span, some 60,000 spans, a burst of a few thousand
connections."""
DEFAULT_COLLECTOR_MAX_BYTES = 16 * MiB
"""A collector that is down is not worth more of the server's memory than this."""
BATCH_SPANS = 512
"""Spans handed to the exporter per call."""
SCHEDULE_DELAY_S = 0.2
"""How long a span may wait for a batch to fill before it is exported anyway."""
LOG_INTERVAL_S = 10.0
"""At most one log line about losses per pipeline in this time."""
COLLECTOR_DRAIN_S = 3.0
"""At shutdown, how long the collector may take for what waits (then it is counted dropped)."""
INITIAL_SPAN_BYTES = 1024
"""The size a span is taken to have until some have been measured."""
SIZE_SAMPLES = 16
"""Spans of each exported batch whose size is measured."""
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


_pipelines: deque[ExportPipeline] = deque(maxlen=64)
"""The pipelines made in this process, the latest 64 (kept after shutdown: their final
counts are what an exit summary shows)."""


def stats(since: int = 0) -> list[ExportCounts]:
    """The counts of the export pipelines of this process (the latest 64), in creation order;
    ``since``: only those made after :func:`serial` returned it."""
    return [p.counts() for p in list(_pipelines) if p.serial > since]


def serial() -> int:
    """How many pipelines were made so far in this process (for :func:`stats`)."""
    return ExportPipeline._created


def estimate_bytes(span: ReadableSpan) -> int:
    """Roughly what ``span`` costs while it waits, in bytes: its fixed part, plus its
    attributes and events.  Cheap on purpose (it runs on the event loop for every span)."""
    size = 512 + _attributes_bytes(span._attributes)
    for event in span._events or ():
        size += 96 + _attributes_bytes(event.attributes)
    return size


def _attributes_bytes(attributes: Any) -> int:
    if not attributes:
        return 0
    size = 0
    for key, value in attributes.items():
        size += 48 + len(key)
        kind = type(value)
        if kind is str or kind is bytes:
            size += len(value)
        elif kind is tuple or kind is list:
            size += 16 * len(value) + sum(len(v) for v in value if type(v) is str)
    return size


class _Dropped:
    """A trace being dropped: how many of its spans so far, and how many the file was told of."""

    __slots__ = ("count", "first_ns", "last_ns", "marked", "reason", "resource", "scope")

    def __init__(self, reason: str, span: ReadableSpan) -> None:
        self.reason = reason
        self.count = 0
        self.marked = 0
        self.first_ns = self.last_ns = time.time_ns()
        self.resource = span.resource
        self.scope = span.instrumentation_scope


class ExportPipeline(SpanProcessor):
    """A span processor that hands spans to ``exporter`` from a buffer bounded in bytes.

    ``name`` and ``target`` say which output this is in counts and logs (``"file"`` and the
    file's path, ``"collector"`` and its endpoint).  ``drain_timeout_s`` bounds how long
    :meth:`shutdown` waits for the buffer to empty (``None``: until it is empty — the file).
    ``mark_loss`` writes a :data:`~tracer.vocab.LOSS_MARKER` span for each trace that lost
    spans.

    The bytes held are the spans held times their average size (:func:`estimate_bytes`,
    measured on a sample of the spans exported, starting from ``span_bytes``): ``on_end`` runs
    on the event loop for every span, and must not walk each one's attributes.
    """

    _created = 0

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        name: str = "file",
        target: str = "",
        max_bytes: int = DEFAULT_MAX_BYTES,
        drain_timeout_s: float | None = None,
        mark_loss: bool = True,
        batch_spans: int = BATCH_SPANS,
        span_bytes: int = INITIAL_SPAN_BYTES,
    ) -> None:
        if max_bytes <= 0 or span_bytes <= 0:
            raise ValueError("max_bytes and span_bytes must be positive")
        self.exporter = exporter
        self.name = name
        self.target = target or str(getattr(exporter, "path", "") or type(exporter).__name__)
        self.max_bytes = max_bytes
        self.drain_timeout_s = drain_timeout_s
        self.mark_loss = mark_loss
        self.batch_spans = batch_spans
        ExportPipeline._created += 1
        self.serial = ExportPipeline._created
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._pending: dict[int, list[ReadableSpan]] = {}
        """Trace id -> its waiting spans; in the order traces arrived."""
        self._pending_spans = 0
        self._held = 0  # spans waiting or being exported
        self._peak = 0
        self._span_bytes = span_bytes
        self._budget = max(1, max_bytes // span_bytes)
        """Spans that fit under ``max_bytes`` at the average size measured so far."""
        self._in_flight = 0
        self._dropping: dict[int, _Dropped] = {}
        self._counts = ExportCounts(name, self.target, max_bytes=max_bytes)
        self._stopping = False
        self._flushes_asked = 0
        self._flushes_done = 0
        self._last_log = 0.0
        self._markers_passed = 0
        self._logged_loss = 0
        self._worker = threading.Thread(
            target=self._run, name=f"wstrace-export-{name}", daemon=True
        )
        self._worker.start()
        _pipelines.append(self)

    # --- SpanProcessor ------------------------------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if not self._hold(span, context.trace_id):
            # Lost: say so now (rate-limited), the writer may be stuck on a slow output.
            self._log_loss()

    def _hold(self, span: ReadableSpan, trace_id: int) -> bool:
        """Put ``span`` in the buffer, or count it dropped (False)."""
        with self._mutex:
            if self._stopping:
                self._count_drop(DropReason.AFTER_SHUTDOWN, 1)
                return False
            if self._dropping:
                dropping = self._dropping.get(trace_id)
                if dropping is not None:
                    dropping.count += 1
                    dropping.last_ns = time.time_ns()
                    self._count_drop(DropReason.TRACE_DROPPED, 1)
                    return False
            if self._held >= self._budget and not self._make_room(trace_id):
                self._drop_trace(trace_id, span, DropReason.BUFFER_FULL, 1)
                return False
            waiting = self._pending.get(trace_id)
            if waiting is None:
                self._pending[trace_id] = [span]
            else:
                waiting.append(span)
            self._pending_spans += 1
            self._held += 1
            if self._held > self._peak:
                self._peak = self._held
            if self._pending_spans == self.batch_spans:
                self._cond.notify()
        return True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every span given so far has been handed to the exporter."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._flushes_asked += 1
            ticket = self._flushes_asked
            self._cond.notify_all()
            while self._flushes_done < ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._worker.is_alive():
                    return False
                self._cond.wait(remaining)
        return bool(self.exporter.force_flush(max(1, int((deadline - time.monotonic()) * 1000))))

    def shutdown(self) -> None:
        """Export what waits (for at most ``drain_timeout_s``), count the rest, shut the
        exporter down."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        self._worker.join(self.drain_timeout_s)
        with self._mutex:
            left = self._pending
            self._pending = {}
            self._pending_spans = 0
            for trace_id, spans in left.items():
                self._held -= len(spans)
                self._drop_trace(trace_id, spans[0], DropReason.DRAIN_TIMEOUT, len(spans))
            markers = self._take_markers() if not self._worker.is_alive() else []
        if markers:  # the worker is done: the exporter is free for the last markers
            self._export_markers(markers)
        drain = self.drain_timeout_s
        shutdown = self.exporter.shutdown
        if drain is not None and "timeout_millis" in inspect.signature(shutdown).parameters:
            shutdown(timeout_millis=int(drain * 1000))  # type: ignore[call-arg]
        else:
            shutdown()
        self._worker.join(1.0)  # an export that was stuck fails at once now
        self._settle_with_exporter()
        self._log_loss(force=True)

    # --- Reading the account ------------------------------------------------------------------

    def counts(self) -> ExportCounts:
        with self._mutex:
            c = self._counts
            snapshot = ExportCounts(
                c.name,
                c.target,
                written=c.written,
                failed=c.failed,
                dropped=dict(c.dropped),
                pending=self._pending_spans + self._in_flight,
                incomplete_traces=c.incomplete_traces,
                buffered_bytes=self._held * self._span_bytes,
                peak_bytes=self._peak * self._span_bytes,
                max_bytes=c.max_bytes,
            )
        return snapshot

    # --- Dropping whole traces ----------------------------------------------------------------

    def _make_room(self, trace_id: int) -> bool:
        """Drop the traces that reached the buffer after ``trace_id``'s, newest first, until
        one more span fits.  False: even so it would not (``trace_id`` is the newest)."""
        if trace_id not in self._pending:
            return False
        victims = []
        freed = 0
        for other in reversed(self._pending):
            if other == trace_id:
                break
            victims.append(other)
            freed += len(self._pending[other])
            if self._held - freed < self._budget:
                break
        if self._held - freed >= self._budget:
            return False
        for other in victims:
            spans = self._pending.pop(other)
            self._pending_spans -= len(spans)
            self._held -= len(spans)
            self._drop_trace(other, spans[0], DropReason.EVICTED, len(spans))
        return True

    def _drop_trace(self, trace_id: int, span: ReadableSpan, reason: str, spans: int) -> None:
        """Count ``spans`` of ``trace_id`` as dropped, and every later one of it too."""
        waiting = self._pending.pop(trace_id, None)
        if waiting:  # the trace's spans still in the buffer go with it
            self._pending_spans -= len(waiting)
            self._held -= len(waiting)
            self._count_drop(DropReason.TRACE_DROPPED, len(waiting))
        dropping = self._dropping.get(trace_id)
        if dropping is None:
            if len(self._dropping) >= MAX_DROPPED_TRACES:
                self._dropping.pop(next(iter(self._dropping)))
            dropping = self._dropping[trace_id] = _Dropped(reason, span)
            self._counts.incomplete_traces += 1
        dropping.count += spans + len(waiting or ())
        dropping.last_ns = time.time_ns()
        self._count_drop(reason, spans)

    def _count_drop(self, reason: str, spans: int) -> None:
        dropped = self._counts.dropped
        dropped[reason] = dropped.get(reason, 0) + spans

    # --- The writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception as exc:  # never let the writer die: spans would pile up
                errors.record("export.pipeline", exc)
                time.sleep(SCHEDULE_DELAY_S)

    def _step(self) -> bool:
        """One round of the writer: export a batch (and loss markers); True when done."""
        with self._cond:
            idle = self._flushes_done == self._flushes_asked
            if not self._pending and not self._stopping and idle:
                self._cond.wait(SCHEDULE_DELAY_S)
            batch = self._take_batch()
            flush_ticket = self._flushes_asked
            stopping = self._stopping
            markers = self._take_markers() if not self._pending else []
        if batch:
            self._export(batch)
        if markers:
            self._export_markers(markers)
        self._log_loss()
        if not batch:
            with self._cond:
                if not self._pending:
                    self._flushes_done = flush_ticket
                    self._cond.notify_all()
                    if stopping:
                        return True
        return False

    def _take_batch(self) -> list[ReadableSpan]:
        """Up to ``batch_spans`` spans, whole traces in the order they arrived."""
        batch: list[ReadableSpan] = []
        while self._pending and len(batch) < self.batch_spans:
            trace_id = next(iter(self._pending))
            batch.extend(self._pending.pop(trace_id))
        self._pending_spans -= len(batch)
        self._in_flight = len(batch)
        return batch

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(batch)
        except Exception:
            logger.exception("wstrace: the %s exporter raised", self.name)
            result = SpanExportResult.FAILURE
        sample = batch[:: max(1, len(batch) // SIZE_SAMPLES)]
        measured = sum(estimate_bytes(span) for span in sample) // len(sample)
        with self._mutex:
            if result is SpanExportResult.SUCCESS:
                self._counts.written += len(batch)
            else:
                self._counts.failed += len(batch)
            self._in_flight = 0
            self._held -= len(batch)
            # A moving average: the budget follows the spans' real weight.
            self._span_bytes = max(1, (3 * self._span_bytes + measured) // 4)
            self._budget = max(1, self.max_bytes // self._span_bytes)

    def _take_markers(self) -> list[tuple[int, _Dropped, int]]:
        if not self.mark_loss:
            return []
        markers = []
        for trace_id, dropping in self._dropping.items():
            if dropping.count > dropping.marked:
                markers.append((trace_id, dropping, dropping.count - dropping.marked))
                dropping.marked = dropping.count
        return markers

    def _export_markers(self, markers: Iterable[tuple[int, _Dropped, int]]) -> None:
        """One :data:`~tracer.vocab.LOSS_MARKER` span per trace that lost spans since the last
        ones: readers add these up and show the trace as incomplete."""
        spans = [loss_marker(trace_id, dropping, lost) for trace_id, dropping, lost in markers]
        self._markers_passed += len(spans)
        for first in range(0, len(spans), self.batch_spans):
            try:
                self.exporter.export(spans[first : first + self.batch_spans])
            except Exception:
                logger.exception("wstrace: the %s exporter raised on loss markers", self.name)

    def _settle_with_exporter(self) -> None:
        """An export process confirms what it wrote: what it never did is dropped."""
        outcome = getattr(self.exporter, "outcome", None)
        if outcome is None:
            return
        exported, failed, sent = outcome()
        with self._mutex:
            counts = self._counts
            passed = counts.written + counts.failed + self._markers_passed  # given to export()
            unconfirmed = max(0, sent - exported - failed)
            counts.written = max(0, exported - self._markers_passed)
            counts.failed = failed + max(0, passed - sent)  # never reached the process
            if unconfirmed:
                self._count_drop(DropReason.UNCONFIRMED, unconfirmed)

    def _log_loss(self, force: bool = False) -> None:
        """A warning when spans were lost since the last one, at most every LOG_INTERVAL_S."""
        now = time.monotonic()
        if not force and now - self._last_log < LOG_INTERVAL_S:
            return
        counts = self.counts()
        if counts.lost == self._logged_loss:
            return
        self._last_log = now
        self._logged_loss = counts.lost
        logger.warning("wstrace export: %s", counts.summary())


def loss_marker(trace_id: int, dropping: _Dropped, lost: int) -> ReadableSpan:
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


def collector_pipeline(exporter: SpanExporter, endpoint: str | None = None) -> ExportPipeline:
    """The pipeline for an OTLP collector: its own buffer (:data:`DEFAULT_COLLECTOR_MAX_BYTES`),
    :data:`COLLECTOR_DRAIN_S` at shutdown, no loss markers (they could not reach a collector
    that is down, and the file has its own)."""
    import os

    endpoint = endpoint or (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or "collector"
    )
    return ExportPipeline(
        exporter,
        name="collector",
        target=endpoint,
        max_bytes=DEFAULT_COLLECTOR_MAX_BYTES,
        drain_timeout_s=COLLECTOR_DRAIN_S,
        mark_loss=False,
    )
