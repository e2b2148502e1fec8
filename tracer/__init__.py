"""wstrace: every stage of a WebSocket connection on uvicorn, as OpenTelemetry spans.

>>> import tracer
>>> tracer.instrument()          # hooks into uvicorn's HTTP and WebSocket protocols
>>> app = tracer.TracingMiddleware(app)   # the ASGI chain, accept, messages, broadcasts
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from tracer.asgi import TracingMiddleware
from tracer.broadcast import broadcast
from tracer.instrumentor import WebSocketInstrumentor


def instrument(*, tracer_provider: Any = None, **options: Any) -> WebSocketInstrumentor:
    """Install the server-level hooks (idempotent: a second call changes nothing).

    ``options`` are those of :class:`tracer.config.TracerConfig`: ``shape="connection"``,
    ``frames="spans"``, ``capture_payload=0``, ``max_messages_per_trace``, ``capture_headers``…
    """
    instrumentor = WebSocketInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider, skip_dep_check=True, **options)
    return instrumentor


def uninstrument() -> None:
    """Remove every hook and restore the originals; open connections' spans are ended."""
    instrumentor = WebSocketInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


__all__ = [
    "TracingMiddleware",
    "WebSocketInstrumentor",
    "__version__",
    "broadcast",
    "instrument",
    "uninstrument",
]
