"""Outputs: the OTLP JSON Lines exporter, the pipeline in front of it, and its reader.

- :mod:`tracer.export.otlp_file` — ``OTLPJsonFileExporter``, a ``SpanExporter`` writing
  ``traces/*.otlp.jsonl``.
- :mod:`tracer.export.offload` — ``SubprocessExporter``: any exporter, run in a child process
  so the traced server does not pay for encoding.
- :mod:`tracer.export.pipeline` — ``ExportPipeline``: the span processor for an output, bounded
  in bytes, every span counted (``stats()``); which spans are built where.
- :mod:`tracer.export.facts` — a finished span as a plain tuple, built into a span again in the
  export process.
- :mod:`tracer.export.reader` — ``load(paths) -> TraceSet``, ``TraceFileError``.
- :mod:`tracer.export.traceset` — ``TraceSet`` and ``Connection``: spans grouped for reading.

Names are imported lazily so that reading a trace file never imports the OpenTelemetry SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "OTLPJsonFileExporter": "tracer.export.otlp_file",
    "SubprocessExporter": "tracer.export.offload",
    "ExportPipeline": "tracer.export.pipeline",
    "collector_pipeline": "tracer.export.pipeline",
    "stats": "tracer.export.pipeline",
    "load": "tracer.export.reader",
    "read_spans": "tracer.export.reader",
    "TraceFileError": "tracer.export.reader",
    "TraceSet": "tracer.export.traceset",
    "Connection": "tracer.export.traceset",
    "SpanRecord": "tracer.export.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tracer.export' has no attribute {name!r}")
