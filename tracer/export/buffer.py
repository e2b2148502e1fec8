"""What waits for the exporter: spans grouped by trace, bounded, dropped a whole trace at a time.

:class:`TraceBuffer` is the bookkeeping of :class:`~tracer.export.pipeline.ExportPipeline`'s
buffer, apart from its threads: which spans wait (by trace, in the order the traces arrived),
how many spans are held (waiting or being exported), and what to drop when more would not fit.
It takes no lock; the pipeline calls it under its own.

The bound is in spans, worked out from a bound in bytes and the spans' average size
(:meth:`TraceBuffer.resize`).  A *family* fact (:func:`~tracer.export.facts.family`) is one
item that stands for several spans: everything here counts spans, not items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracer.export.accounting import DropReason, Ledger
from tracer.export.facts import span_count


class TraceBuffer:
    """Spans waiting for export, by trace; every span dropped goes to ``ledger``."""

    def __init__(self, ledger: Ledger, max_bytes: int, span_bytes: int) -> None:
        self.ledger = ledger
        self.max_bytes = max_bytes
        self.pending: dict[int, list[Any]] = {}
        """Trace id -> its waiting items; in the order the traces arrived."""
        self.waiting = 0
        """Spans in ``pending``."""
        self.held = 0
        """Spans waiting or being exported."""
        self.in_flight = 0
        """Spans taken by :meth:`take_batch` and not yet settled by :meth:`settle_batch`."""
        self.peak = 0
        self.peak_bytes = 0
        self.span_bytes = span_bytes
        self.budget = max(1, max_bytes // span_bytes)
        """Spans that fit under ``max_bytes`` at the average size measured so far."""

    def resize(self, span_bytes: int) -> None:
        """The spans' average size is now ``span_bytes``: as many fit as that allows."""
        self.span_bytes = span_bytes
        self.budget = max(1, self.max_bytes // span_bytes)

    def hold(self, item: Any, trace_id: int, spans: int) -> bool:
        """Put ``item`` (``spans`` spans of ``trace_id``) in the buffer, or count it dropped
        (False): its trace is being dropped already, or it does not fit even once the
        traces that arrived after its own are dropped."""
        ledger = self.ledger
        if ledger.dropping and ledger.drop_more(trace_id, spans):
            return False
        if self.held + spans > self.budget and not self._make_room(trace_id, spans):
            self.drop_trace(trace_id, item, DropReason.BUFFER_FULL, spans)
            return False
        waiting = self.pending.get(trace_id)
        if waiting is None:
            self.pending[trace_id] = [item]
        else:
            waiting.append(item)
        self.waiting += spans
        self.held += spans
        if self.held > self.peak:
            self.peak = self.held
            self.peak_bytes = max(self.peak_bytes, self.held * self.span_bytes)
        return True

    def take_batch(self, max_spans: int) -> list[Any]:
        """Up to ``max_spans`` spans (or just past it), whole traces in the order they
        arrived; they stay held (in flight) until :meth:`settle_batch`."""
        batch: list[Any] = []
        taken = 0
        while self.pending and taken < max_spans:
            items = self.pending.pop(next(iter(self.pending)))
            batch.extend(items)
            taken += spans_in(items)
        self.waiting -= taken
        self.in_flight = taken
        return batch

    def settle_batch(self) -> int:
        """The batch taken last is exported (or failed): how many spans it held."""
        spans, self.in_flight = self.in_flight, 0
        self.held -= spans
        return spans

    def drop_trace(self, trace_id: int, item: Any, reason: str, spans: int) -> None:
        """Count ``spans`` of ``trace_id`` as dropped (``item`` one of them), with its spans
        still waiting, and every later one of it too."""
        _, waiting = self._remove(trace_id)
        self.ledger.drop_trace(trace_id, item, reason, spans, waiting)

    def drop_all(self, reason: str) -> None:
        """Drop everything still waiting (the drain time is up)."""
        for trace_id in list(self.pending):
            items, count = self._remove(trace_id)
            self.ledger.drop_trace(trace_id, items[0], reason, count, 0)

    def _remove(self, trace_id: int) -> tuple[list[Any], int]:
        """Take ``trace_id``'s waiting items out: (them, how many spans they stand for)."""
        items = self.pending.pop(trace_id, None) or []
        count = spans_in(items)
        self.waiting -= count
        self.held -= count
        return items, count

    def _make_room(self, trace_id: int, spans: int) -> bool:
        """Drop the traces that arrived after ``trace_id``'s, newest first, until ``spans``
        more fit.  False: even so they would not (``trace_id`` is the newest)."""
        if trace_id not in self.pending:
            return False
        victims = []
        freed = 0
        for other in reversed(self.pending):
            if other == trace_id:
                break
            victims.append(other)
            freed += spans_in(self.pending[other])
            if self.held - freed + spans <= self.budget:
                break
        if self.held - freed + spans > self.budget:
            return False
        for other in victims:
            items, count = self._remove(other)
            self.ledger.drop_trace(other, items[0], DropReason.EVICTED, count, 0)
        return True


def spans_in(items: Sequence[Any]) -> int:
    """How many spans a list of the buffer's items stands for (families count theirs)."""
    return sum(map(span_count, items))
