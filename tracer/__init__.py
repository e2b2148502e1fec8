"""wstrace: every stage of a WebSocket connection on uvicorn, as OpenTelemetry spans.

>>> import tracer
>>> tracer.instrument()          # hooks into uvicorn's HTTP and WebSocket protocols
>>> app = tracer.TracingMiddleware(app)   # the ASGI chain, accept, messages, broadcasts

The writing side (hooks, recorder, middleware) is imported on first use of these names, so
that ``import tracer.wire`` or reading a trace file never loads the OpenTelemetry SDK or
uvicorn.
"""

from __future__ import annotations

# Imported before an app can make a TracerProvider, so that this module's after-fork hook runs
# before the provider's.  A provider hooks fork() to refresh its resource through a thread
# pool; were this module first imported after an app made one (wstrace's own provider imports
# it, detecting its resource), the app's hook would run first in a forked process and wait
# forever for the lock this module holds across fork(): every process the app forks would hang.
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
