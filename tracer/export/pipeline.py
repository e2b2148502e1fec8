"""The way finished spans travel to one exporter: a buffer bounded in bytes, one writer thread,
and an account of every span.

The SDK's ``BatchSpanProcessor`` keeps a queue of 2,048 spans, sized for a network collector: a
burst of connections ends tens of thousands of spans within a second and the queue drops most
of them, with one log line to show for it.  :class:`ExportPipeline` is the span processor for
wstrace's outputs instead:

- ``on_end`` (on the server's event loop) only appends the span to a buffer; it never blocks
  and never does I/O.  One thread takes spans from the buffer, oldest traces first, and calls
  the exporter; a slow exporter (a file behind a pipe, a collector) slows that thread only.
  It waits for a batch of :data:`BATCH_SPANS` (or :data:`SCHEDULE_DELAY_S`, a flush, the
  shutdown), as the SDK's processor does: every export wakes the thread and takes the GIL
  from the event loop, so few large exports cost the server less than many small ones.
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

Two ways in, one buffer:

- ``on_end`` takes a ``ReadableSpan``, as any span processor does: spans the app or another
  instrumentation makes through the SDK, and every span of wstrace's when export runs in the
  server process.
- ``on_fact`` takes a span's :mod:`~tracer.export.facts` fact: a plain tuple that an export
  process turns into the ``ReadableSpan`` (see "Where spans are built" below); ``on_facts``
  takes a list of them, under one hold of the lock (a connection's batch of messages).

Both wait in the same buffer, under the same cap (a fact weighs what its span would), are
dropped and counted the same way and can share a batch; :attr:`ExportCounts.as_facts` says
how many came as facts.

Where spans are built
---------------------
wstrace builds its own spans in one place, :meth:`tracer.recorder.spans.SdkParts.emit`, and
that place decides, per provider (worked out again whenever the provider's list of span
processors changes):

- **In the export process** when *every* span processor of the provider is an
  ``ExportPipeline`` whose exporter rebuilds spans from facts (:meth:`takes_facts`: the
  :class:`~tracer.export.offload.SubprocessExporter`; not a subclass of either that reads
  the spans it is given) — the set-up of ``wstrace serve`` and ``wstrace demo``.  The server
  makes the ids (so ``traceparent`` and the app's own spans join the same trace), samples,
  applies the provider's ``SpanLimits`` and hands each pipeline a fact; no ``ReadableSpan``
  of wstrace's is made in the server (but the rare loss marker).  A received message (and the
  handshake, and the close) goes with the spans under it as one *family* fact
  (:mod:`tracer.recorder.family`), and so does a connection's ASGI chain, from its outermost
  layer in (:mod:`tracer.chain`); the pipeline counts, holds and drops it span by span all the
  same.  A received message goes further still when the ``SpanLimits`` cannot cut anything
  in its family (the SDK's defaults) and no sampler needs asking (it is under its connection,
  or in a trace of its own sampled as its connection was): as a *template*, the values its
  spans' attributes are made of, with the spans' ids (:mod:`tracer.export.message_facts`),
  and the export process lays the attributes out.  Spans the app makes through the SDK are
  built and arrive as usual, and share the batches.  Handled messages are held back in the
  server for a few milliseconds and emitted a batch at a time
  (:mod:`tracer.recorder.emit.batches`); ``force_flush``, from any thread, has them handed
  over first (:func:`before_flush`).
- **In the server process**, as the OpenTelemetry SDK does, in every other case: a processor
  of the user's (a ``BatchSpanProcessor``, the pytest plugin's collector, anything that acts
  in ``on_start``), ``wstrace serve --export-in-process``, an exporter running in the server.
  Processors see ``ReadableSpan``\\s, as they would from the SDK's tracer, and a message's as
  soon as it is over.

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
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracer._contain import errors
from tracer.export.accounting import (
    DropReason,
    ExportCounts,
    Ledger,
    MiB,
    estimate_bytes,
)
from tracer.export.buffer import TraceBuffer
from tracer.export.facts import FLAGS, SAMPLED, SPANS, TRACE_ID, Fact
from tracer.export.forks import remake_after_fork

logger = logging.getLogger("wstrace")

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
SIZE_SAMPLE_MASK = 31
"""One span in 32 (the first included) is measured as it arrives."""
FACT_SAMPLE_MASK = 255
"""One fact in 256 (the first included): most are a server's message templates, alike in
weight, and weighing one from its values (the family it stands for) takes ten microseconds."""

_before_flush: list[Callable[[float], bool]] = []
"""What :meth:`ExportPipeline.force_flush` runs first (see :func:`before_flush`)."""


def before_flush(hook: Callable[[float], bool]) -> None:
    """Have every pipeline's ``force_flush`` call ``hook(timeout_s)`` before it waits: spans
    the server still holds back on purpose (the recorder's batched messages) are handed over
    first, so a flush from any thread covers everything that has happened."""
    if hook not in _before_flush:
        _before_flush.append(hook)


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


class ExportPipeline(SpanProcessor):
    """A span processor that hands spans to ``exporter`` from a buffer bounded in bytes.

    ``name`` and ``target`` say which output this is in counts and logs (``"file"`` and the
    file's path, ``"collector"`` and its endpoint).  ``drain_timeout_s`` bounds how long
    :meth:`shutdown` waits for the buffer to empty (``None``: until it is empty — the file).
    ``mark_loss`` writes a :data:`~tracer.vocab.LOSS_MARKER` span for each trace that lost
    spans.

    The bytes held are the spans held times their average size (:func:`estimate_bytes`,
    measured on one span in 32 as they arrive, starting from ``span_bytes``): ``on_end`` runs
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
        self._stopping = False
        self._start(span_bytes)
        self._start_worker()
        _pipelines.append(self)
        remake_after_fork(self._remake_after_fork)

    def _start(self, span_bytes: int) -> None:
        """An empty buffer, its account, its locks and its writer thread (not yet started)."""
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._ledger = Ledger(self.name, self.target, self.max_bytes)
        self._buffer = TraceBuffer(self._ledger, self.max_bytes, span_bytes)
        self._arrived = 0
        self._facts = 0
        self._batch_ready = self._ready_at()
        """Spans waiting that wake the writer before :data:`SCHEDULE_DELAY_S` is up."""
        self._flushes_asked = 0
        self._flushes_done = 0
        self._last_log = 0.0
        self._logged_loss = 0
        self._worker = threading.Thread(
            target=self._run, name=f"wstrace-export-{self.name}", daemon=True
        )
        self._worker_started = False

    def _start_worker(self) -> None:
        """Start the writer thread, once (under ``_mutex`` once other threads can see us)."""
        if not self._worker_started:
            self._worker_started = True
            self._worker.start()

    def _remake_after_fork(self) -> None:
        """In a process forked from this one (see :mod:`tracer.export.forks`): what waits is
        the parent's to write, and its account the parent's; this process starts with an empty
        buffer and a fresh account.  Its writer thread starts with its first span or flush, not
        here: ``subprocess`` runs this too, between ``fork()`` and ``exec()``."""
        self._start(self._buffer.span_bytes)

    # --- SpanProcessor ------------------------------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        self._arrived += 1
        if self._arrived & SIZE_SAMPLE_MASK == 1:
            self._measure(span)
        if not self._hold(span, context.trace_id):
            # Lost: say so now (rate-limited), the writer may be stuck on a slow output.
            self._log_loss()

    def on_fact(self, fact: Fact) -> None:
        """``on_end`` for a span given as its fact (:meth:`takes_facts` said yes), or for a
        family of spans given as one (:func:`~tracer.export.facts.family`): each of its spans
        is counted, held and dropped as if it had come alone."""
        if not fact[FLAGS] & SAMPLED:
            return
        spans = fact[SPANS] if len(fact) > SPANS else 1
        self._arrived += 1
        if self._arrived & FACT_SAMPLE_MASK == 1:
            self._measure(fact, spans)
        if not self._hold(fact, fact[TRACE_ID], spans):
            self._log_loss()

    def on_facts(self, facts: Sequence[Fact]) -> None:
        """:meth:`on_fact` for each of ``facts`` (a connection's messages emitted together),
        held under one hold of the lock."""
        held = []
        for fact in facts:
            if fact[FLAGS] & SAMPLED:
                self._arrived += 1
                if self._arrived & FACT_SAMPLE_MASK == 1:
                    self._measure(fact, fact[SPANS] if len(fact) > SPANS else 1)
                held.append(fact)
        if held and not self._hold_facts(held):
            self._log_loss()

    def takes_facts(self) -> bool:
        """Whether spans may come as facts (:meth:`on_fact`): the exporter builds them from
        facts itself, in its export process.  Not for a subclass that reads the spans it is
        given (its own ``on_end``)."""
        if type(self).on_end is not ExportPipeline.on_end:
            return False
        return bool(getattr(self.exporter, "rebuilds_spans", False))

    def _hold(self, span: ReadableSpan | Fact, trace_id: int, spans: int = 0) -> bool:
        """Put ``span`` in the buffer, or count it dropped (False).  ``spans``: how many spans
        a fact stands for (0: a ``ReadableSpan``, one)."""
        with self._mutex:
            if spans:
                self._facts += spans
            else:
                spans = 1
            if self._stopping:
                self._ledger.drop(DropReason.AFTER_SHUTDOWN, spans)
                return False
            if not self._worker_started:  # only after a fork; tested here, on every span's path
                self._start_worker()
            buffer = self._buffer
            before = buffer.waiting
            if not buffer.hold(span, trace_id, spans):
                return False
            if before < self._batch_ready <= buffer.waiting:
                self._cond.notify()
        return True

    def _hold_facts(self, facts: list[Fact]) -> bool:
        """:meth:`_hold` for each of ``facts`` (its checks, made once for them all); False if
        any was dropped."""
        kept = True
        counts = [fact[SPANS] if len(fact) > SPANS else 1 for fact in facts]
        with self._mutex:
            self._facts += sum(counts)
            if self._stopping:
                for spans in counts:
                    self._ledger.drop(DropReason.AFTER_SHUTDOWN, spans)
                return False
            if not self._worker_started:  # only after a fork
                self._start_worker()
            buffer = self._buffer
            before = buffer.waiting
            for fact, spans in zip(facts, counts, strict=True):
                if not buffer.hold(fact, fact[TRACE_ID], spans):
                    kept = False
            if before < self._batch_ready <= buffer.waiting:
                self._cond.notify()
        return kept

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every span given so far has been handed to the exporter (what the
        server held back first: :func:`before_flush`)."""
        deadline = time.monotonic() + timeout_millis / 1000
        for hook in _before_flush:
            errors.call("export.before_flush", hook, max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._start_worker()
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
            self._start_worker()  # it writes what waits and settles the account, then ends
            self._stopping = True
            self._cond.notify_all()
        drain = self.drain_timeout_s
        deadline = time.monotonic() + drain if drain is not None else None
        self._worker.join(drain)
        with self._mutex:
            self._buffer.drop_all(DropReason.DRAIN_TIMEOUT)
            alive = self._worker.is_alive()
            markers = self._ledger.take_markers() if self.mark_loss and not alive else []
        if markers:  # the worker is done: the exporter is free for the last markers
            self._export_markers(markers)
        shutdown = self.exporter.shutdown
        if deadline is not None and "timeout_millis" in inspect.signature(shutdown).parameters:
            remaining = max(0.1, deadline - time.monotonic())  # the drain time is shared
            shutdown(timeout_millis=int(remaining * 1000))  # type: ignore[call-arg]
        else:
            shutdown()
        self._worker.join(1.0)  # an export that was stuck fails at once now
        self._settle_with_exporter()
        self._log_loss(force=True)

    # --- Reading the account ------------------------------------------------------------------

    def counts(self) -> ExportCounts:
        with self._mutex:
            c = self._ledger.counts
            buffer = self._buffer
            snapshot = ExportCounts(
                c.name,
                c.target,
                written=c.written,
                failed=c.failed,
                dropped=dict(c.dropped),
                pending=buffer.waiting + buffer.in_flight,
                incomplete_traces=c.incomplete_traces,
                buffered_bytes=buffer.held * buffer.span_bytes,
                peak_bytes=buffer.peak_bytes,
                max_bytes=c.max_bytes,
                as_facts=self._facts,
            )
        return snapshot

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
            self._await_batch()
            batch = self._buffer.take_batch(self.batch_spans)
            flush_ticket = self._flushes_asked
            stopping = self._stopping
            pending = self._buffer.pending
            markers = self._ledger.take_markers() if self.mark_loss and not pending else []
        if batch:
            self._export(batch)
        if markers:
            self._export_markers(markers)
        self._log_loss()
        if not batch:
            with self._cond:
                if not self._buffer.pending:
                    self._flushes_done = flush_ticket
                    self._cond.notify_all()
                    if stopping:
                        return True
        return False

    def _await_batch(self) -> None:
        """Wait (holding the condition) until a batch is ready, :data:`SCHEDULE_DELAY_S` has
        passed, or a flush or the shutdown asks for everything.

        Exporting each span as soon as it arrives would cost the server a wake-up, a hand-off
        of the GIL and a pipe write per handful of spans; a full batch costs them once per
        ``batch_spans``.  Half the byte budget is ready too, so a small buffer never fills
        while the writer waits."""
        deadline = None
        while (
            self._buffer.waiting < self._batch_ready
            and not self._stopping
            and self._flushes_done == self._flushes_asked
        ):
            now = time.monotonic()
            if deadline is None:
                deadline = now + SCHEDULE_DELAY_S
            elif now >= deadline:
                return
            self._cond.wait(deadline - now)

    def _ready_at(self) -> int:
        """Spans that make a batch ready: ``batch_spans``, or half the budget if less."""
        return max(1, min(self.batch_spans, self._buffer.budget // 2))

    def _export(self, batch: list[ReadableSpan | Fact]) -> None:
        try:
            result = self.exporter.export(batch)  # type: ignore[arg-type]  # facts: takes_facts
        except Exception:
            logger.exception("wstrace: the %s exporter raised", self.name)
            result = SpanExportResult.FAILURE
        with self._mutex:
            counts = self._ledger.counts
            spans = self._buffer.settle_batch()
            if result is SpanExportResult.SUCCESS:
                counts.written += spans
            else:
                counts.failed += spans

    def _measure(self, span: ReadableSpan | Fact, spans: int = 1) -> None:
        """A moving average of the spans' size: the budget follows their real weight."""
        measured = max(1, estimate_bytes(span) // spans)
        with self._mutex:
            buffer = self._buffer
            average = buffer.span_bytes
            buffer.resize(measured if self._arrived == 1 else max(1, (7 * average + measured) // 8))
            self._batch_ready = self._ready_at()
            if buffer.waiting >= self._batch_ready:
                self._cond.notify()  # heavier spans: the batch waiting may be ready already

    def _export_markers(self, markers: list[ReadableSpan]) -> None:
        """Loss markers to the file: readers add them up and show the trace as incomplete."""
        for first in range(0, len(markers), self.batch_spans):
            try:
                self.exporter.export(markers[first : first + self.batch_spans])
            except Exception:
                logger.exception("wstrace: the %s exporter raised on loss markers", self.name)

    def _settle_with_exporter(self) -> None:
        """An export process confirms what it wrote: what it never did is dropped."""
        outcome = getattr(self.exporter, "outcome", None)
        if outcome is not None:
            exported, failed, sent = outcome()
            with self._mutex:
                self._ledger.settle(exported, failed, sent)

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
