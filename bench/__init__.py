"""The overhead benchmark: what tracing costs the server, against the untraced server and peers.

``make bench`` (``python -m bench``) serves the auction app (:mod:`demo_app.app`) under each
variant of :mod:`bench.variants` — untraced; wstrace in ``connection`` shape with frames as
spans, in ``message`` shape at 1% sampling, with frames off; ``opentelemetry-instrumentation-asgi``;
FastAPI's native telemetry — each in its own server process (:mod:`bench.server`), loaded by a
load generator in another process (:mod:`bench.load`), over interleaved rounds
(:mod:`bench.runner`), and prints medians, ratios to untraced and the performance bar
(:mod:`bench.report`).  ``--profile DIR`` attaches py-spy and lists the hot spots of wstrace's
own code (:mod:`bench.profile`).  wstrace's spans go through the
:class:`~tracer.export.pipeline.ExportPipeline` that ``wstrace serve`` uses; the peers' through
the SDK's ``BatchSpanProcessor``.
"""
