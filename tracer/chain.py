"""The ASGI chain of one traced connection, as a single current span.

A WebSocket connection stays inside every layer of the app's middleware stack for its whole
life (each layer's ``__call__`` awaits the next until the endpoint returns), so each layer's
span is open that long too.  Making each layer's span current in its own OpenTelemetry context
would cost a context, a context-variable token and their copies per layer and connection —
most of what an idle traced connection weighs.  Instead one :class:`Chain` is made current for
the whole chain, and answers for whichever layer is innermost at the moment it is asked: what
starts a span while a layer runs (FastAPI's native telemetry, another instrumentation,
``ws.accept``) nests under that layer, as it would with one context per layer.  When such a
span is made current in turn, the next layer nests under it and makes the chain current again
(one context for that layer only).

Layers are entered and left in order by the chain's own task; a layer left out of order (an
app running inner apps concurrently) is removed where it is, so the innermost stays right.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace

OpenLayer = Callable[[str, dict[str, Any], trace.Span], trace.Span]
"""``(name, attributes, parent) -> span``: how a chain starts its layers' spans."""


class Chain(trace.Span):
    """Stands for the innermost open layer of one connection's chain (or ``base`` outside
    every layer); everything done to it as a span is done to that layer."""

    __slots__ = ("_base", "_layers", "_open", "tracer")

    def __init__(self, base: trace.Span, open_layer: OpenLayer, tracer: Any) -> None:
        self._base = base
        self._layers: list[trace.Span] = []
        self._open = open_layer
        self.tracer = tracer
        """The SDK tracer of the connection (for spans made while the chain runs)."""

    @property
    def innermost(self) -> trace.Span:
        """The span of the innermost layer running now: what a child started now nests under."""
        layers = self._layers
        return layers[-1] if layers else self._base

    def enter(self, name: str, attributes: dict[str, Any], parent: trace.Span) -> trace.Span:
        """A layer starts: its span, child of ``parent`` (the innermost, unless something
        made its own span current since), becomes the innermost."""
        span = self._open(name, attributes, parent)
        self._layers.append(span)
        return span

    def leave(self, span: trace.Span) -> None:
        """A layer returned (or raised): it is no longer the innermost."""
        layers = self._layers
        if layers and layers[-1] is span:
            layers.pop()
        elif span in layers:
            layers.remove(span)

    # --- trace.Span: the innermost layer answers ----------------------------------------------

    def get_span_context(self) -> trace.SpanContext:
        return self.innermost.get_span_context()

    def is_recording(self) -> bool:
        return self.innermost.is_recording()

    def set_attribute(self, key: str, value: Any) -> None:
        self.innermost.set_attribute(key, value)

    def set_attributes(self, attributes: Any) -> None:
        self.innermost.set_attributes(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self.innermost.add_event(name, attributes, timestamp)

    def update_name(self, name: str) -> None:
        self.innermost.update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.innermost.set_status(status, description)

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self.innermost.record_exception(exception, *args, **kwargs)

    def end(self, end_time: int | None = None) -> None:
        """Nothing to end: each layer's span ends when its layer returns."""


def innermost_span(span: trace.Span) -> trace.Span:
    """``span`` itself, or the layer a :class:`Chain` stands for right now (a span to keep as
    a parent for later must not move with the chain)."""
    return span.innermost if isinstance(span, Chain) else span
