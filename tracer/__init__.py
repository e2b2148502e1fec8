"""wstrace: every stage of a WebSocket connection on uvicorn, as OpenTelemetry spans.

>>> import tracer
>>> tracer.instrument()          # hooks into uvicorn's HTTP and WebSocket protocols
>>> app = tracer.TracingMiddleware(app)   # the ASGI chain, accept, messages, broadcasts

The writing side (hooks, recorder, middleware) is imported on first use of these names, so
that ``import tracer.wire`` or reading a trace file never loads the OpenTelemetry SDK or
uvicorn.
"""

from __future__ import annotations

# Imported first, before any TracerProvider made after wstrace: the SDK's provider hooks fork()
# to refresh its resource through a thread pool, and when this module is imported after an
# app's provider (wstrace's own provider detects its resource with it), the app's hook runs in
# a forked process before this module's, and waits forever for a lock this module holds
# across fork(): every program the app starts, every process it forks, hangs.
import concurrent.futures.thread  # noqa: F401
from importlib import import_module
from typing import TYPE_CHECKING, Any

from tracer._version import __version__

if TYPE_CHECKING:
    from tracer.asgi import TracingMiddleware
    from tracer.instrumentor import WebSocketInstrumentor
    from tracer.recorder import broadcast

_LAZY = {
    "TracingMiddleware": "tracer.asgi",
    "broadcast": "tracer.recorder",  # no submodule of that name: it would shadow this
    "WebSocketInstrumentor": "tracer.instrumentor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'tracer' has no attribute {name!r}")


def instrument(*, tracer_provider: Any = None, **options: Any) -> WebSocketInstrumentor:
    """Install the server-level hooks (idempotent: a second call changes nothing).

    ``options`` are those of :class:`tracer.config.TracerConfig`: ``shape="connection"``,
    ``frames="spans"``, ``capture_payload=0``, ``max_messages_per_trace``, ``capture_headers``…
    """
    from tracer.instrumentor import WebSocketInstrumentor

    instrumentor = WebSocketInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider, skip_dep_check=True, **options)
    return instrumentor


def uninstrument() -> None:
    """Remove every hook and restore the originals; open connections' spans are ended."""
    from tracer.instrumentor import WebSocketInstrumentor

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
