"""A span exporter that writes OTLP/JSON Lines files, the format every wstrace command reads.

Each line a complete ``{"resourceSpans": [...]}`` object (an export batch takes one line per
:data:`SPANS_PER_LINE` spans), as the
OpenTelemetry file exporter specification describes, so the files load unchanged into the
Collector's ``otlpjsonfile`` receiver, Jaeger's JSON upload and ``otel-tui``.  Use it with any
span processor::

    provider.add_span_processor(BatchSpanProcessor(OTLPJsonFileExporter()))
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracer.export.facts import SPANS, Fact, check, expand, is_template
from tracer.export.otlp_json import (
    Written,
    items_to_otlp_bytes,
    spans_to_otlp_bytes,
    written_template,
)

logger = logging.getLogger(__name__)

DEFAULT_DIRECTORY = "traces"
SUFFIX = ".otlp.jsonl"


def default_file_name(prefix: str = "wstrace", pid: int | None = None) -> str:
    """``wstrace-20250101T120000Z-4242.otlp.jsonl``: sortable by time, unique per process."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{prefix}-{stamp}-{os.getpid() if pid is None else pid}{SUFFIX}"


SPANS_PER_LINE = 64
"""Spans per line.  Encoding is Python work that holds the GIL: a batch of hundreds of spans
in one go would stall the traced server's event loop for milliseconds, so a batch is
written as several lines (each a complete ``{"resourceSpans": ...}`` object) and the GIL is
handed back between them."""


def _lines(items: Sequence[Any]) -> Iterator[list[Any]]:
    """``items`` in lines of at most :data:`SPANS_PER_LINE` spans, spans :class:`Written`
    already counted as many as they are (more than that go on a line of their own)."""
    line: list[Any] = []
    spans = 0
    for item in items:
        count = len(item.spans) if item.__class__ is Written else 1
        if line and spans + count > SPANS_PER_LINE:
            yield line
            line, spans = [], 0
        line.append(item)
        spans += count
    if line:
        yield line


class OTLPJsonFileExporter(SpanExporter):
    """Append each export batch as OTLP/JSON lines to a file.

    ``path`` names the file explicitly (appended to if it exists).  Without it a new file named
    with a UTC timestamp and the process id is created under ``directory`` on the first export —
    and again after a ``fork()``, so uvicorn workers never interleave writes in one file.
    Every line is written with a single unbuffered append and is on disk (in the OS cache) when
    ``export`` returns, so a crash loses at most the line in flight.  Thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
        prefix: str = "wstrace",
    ) -> None:
        self._explicit = path is not None
        self._directory = Path(directory)
        self._prefix = prefix
        self._path = Path(path) if path is not None else self._directory / default_file_name(prefix)
        self._file: BinaryIO | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._shutdown = False

    @property
    def path(self) -> Path:
        """The file written (or about to be written) by this process."""
        return self._path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._export_lines(spans, spans_to_otlp_bytes)

    def export_facts(
        self, items: Sequence[ReadableSpan | Fact], origins: Mapping[int, tuple[Any, Any]]
    ) -> SpanExportResult:
        """:meth:`export` for spans of which some are given as their facts
        (:mod:`tracer.export.facts`, families expanded), the resource and scope of each fact's
        origin in ``origins``: the export process of ``wstrace serve`` writes the lines of the
        spans its server sent as facts without building their ``ReadableSpan``\\s."""
        return self._export_lines(items, lambda chunk: items_to_otlp_bytes(chunk, origins))

    @staticmethod
    def expand_fact(item: Fact, origins: Mapping[int, Any]) -> list[Any]:
        """What :meth:`export_facts` takes for a family fact: its spans' facts
        (:func:`~tracer.export.facts.expand`), or, for a message template, its spans written
        already (:func:`~tracer.export.otlp_json.written_template`; raises if it could not
        be written)."""
        if is_template(item):
            check(item[:SPANS], origins)
            return [written_template(item)]
        return expand(item)

    def _export_lines(
        self, spans: Sequence[Any], encode: Callable[[Sequence[Any]], bytes]
    ) -> SpanExportResult:
        if self._shutdown:
            logger.warning("OTLPJsonFileExporter: export after shutdown ignored")
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        for line in _lines(spans):
            try:
                data = encode(line)
            except Exception:
                logger.exception("OTLPJsonFileExporter: could not encode %d spans", len(spans))
                return SpanExportResult.FAILURE
            with self._lock:
                try:
                    self._write(data)
                except OSError:
                    logger.exception("OTLPJsonFileExporter: could not write %s", self._path)
                    return SpanExportResult.FAILURE
            if threading.active_count() > 1:  # in a server: let its event loop have the GIL
                time.sleep(0)
        return SpanExportResult.SUCCESS

    def _write(self, data: bytes) -> None:
        if os.getpid() != self._pid:
            self._after_fork()
        if self._file is None:
            self._file = self._open()
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written or 0 :]

    def _after_fork(self) -> None:
        """A child process must not share the parent's file handle or, by default, its file."""
        self._pid = os.getpid()
        self._file = None
        if not self._explicit:
            self._path = self._directory / default_file_name(self._prefix)

    def _open(self) -> BinaryIO:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._explicit:
            return open(self._path, "ab", buffering=0)  # kept open across exports
        base = str(self._path)[: -len(SUFFIX)]
        for attempt in range(1000):
            candidate = Path(base + (f"-{attempt}" if attempt else "") + SUFFIX)
            try:
                handle = open(candidate, "xb", buffering=0)  # noqa: SIM115 - kept open
            except FileExistsError:
                continue
            self._path = candidate
            return handle
        raise FileExistsError(f"no free file name like {self._path}")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Lines are written unbuffered, so there is nothing to flush."""
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._shutdown = True
            if self._file is not None:
                self._file.close()
                self._file = None
