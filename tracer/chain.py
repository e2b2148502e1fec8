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

Two kinds:

- :class:`Chain` — each layer is a span object made by the tracer it is given (the
  middleware alone, with any tracer);
- :class:`RecordedChain` — under the server hooks with the OpenTelemetry SDK, an open layer is
  only its span id and start time; the finished span is built when the layer returns.  An
  idle connection holds a dozen layers open, so that is what they weigh.  Where every span
  processor takes facts (``wstrace serve``), a layer that returns inside another is kept as a
  family member of the layer around it, and the outermost goes to the pipeline with all of
  them as one family fact (:mod:`tracer.export.facts`): one hand-over per connection, not one
  per layer.

Layers are entered and left in order by the chain's own task; a layer left out of order (an
app running inner apps concurrently) is marked left where it is, and dropped once every layer
inside it has left too, so the innermost stays right.  A layer's handle is its position in the
chain: a small int, which Python does not allocate, held by the layer's wrapper coroutine for as
long as the layer runs.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.trace import Status, StatusCode

from tracer import vocab
from tracer._contain import errors
from tracer.export import facts

LAYER_CODES: dict[int, Any] = {}
"""The code of every function whose calls are chain layers (middleware ``__call__`` methods, route
endpoints), by its id: a coroutine frame running one of them is a layer of a connection, alive
as long as the connection (see :func:`tracer.recorder.spans.capture_stack`).  By id, because
hashing a code object hashes its constants; kept here, the codes keep their ids."""

OpenLayer = Callable[[str, dict[str, Any], trace.Span], trace.Span]
"""``(name, attributes, parent) -> span``: how a :class:`Chain` starts its layers' spans."""


class Chain(trace.Span):
    """Stands for the innermost open layer of one connection's chain (or ``base`` outside
    every layer); everything done to it as a span is done to that layer."""

    __slots__ = ("_base", "_layers", "_open", "_tokens", "tracer")

    def __init__(self, base: trace.Span, open_layer: OpenLayer | None, tracer: Any) -> None:
        self._base = base
        self._layers: Any = []
        self._open = open_layer
        self._tokens: dict[Any, Any] | None = None
        self.tracer = tracer
        """The SDK tracer of the connection (for spans made while the chain runs)."""

    @property
    def innermost(self) -> trace.Span:
        """The span of the innermost layer running now: what a child started now nests under
        (a span that stays put: keep it as a parent for later)."""
        layers = self._layers
        return layers[-1] if layers else self._base

    def enter(self, name: str, attributes: dict[str, Any], outer: trace.Span | None) -> int:
        """A layer starts and becomes the innermost.  Its parent is the innermost layer, or
        ``outer`` when something inside the chain made its own span current since.  Returns
        the handle :meth:`leave` takes (the layer's position)."""
        assert self._open is not None
        span = self._open(name, attributes, outer if outer is not None else self.innermost)
        self._layers.append(span)
        return len(self._layers) - 1

    def leave(self, layer: int, name: str, attributes: dict[str, Any], error: str | None) -> None:
        """A layer returned (or raised ``error``): its span ends; it is no longer innermost."""
        span = self._layers[layer]
        self._remove(layer)
        if error is not None:
            span.set_attribute(vocab.ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    def returned(self, layer: int, spec: tuple[str, dict[str, Any]]) -> None:
        """The layer ``spec`` entered as ``layer`` returned (see :func:`tracer.asgi.run_layer`).
        Never raises: the tracer's failures are its own."""
        try:
            if self._tokens:  # (rare: see hold_token)
                token = self.release_token(layer)
                if token is not None:
                    otel_context.detach(token)
            self.leave(layer, spec[0], spec[1], None)
        except Exception as failure:
            errors.record("asgi.span", failure)

    def raised(self, layer: int, spec: tuple[str, dict[str, Any]]) -> None:
        """As :meth:`returned`, for a layer that raised the exception being handled now."""
        try:
            token = self.release_token(layer)
            if token is not None:
                otel_context.detach(token)
            exc = sys.exc_info()[1]
            error = None if exc is None or is_disconnect(exc) else type(exc).__name__
            self.leave(layer, spec[0], spec[1], error)
        except Exception as failure:
            errors.record("asgi.span", failure)

    def hold_token(self, layer: Any, token: Any) -> None:
        """Keep the context token of a layer that made the chain current again under a span
        of its own (rare: see :func:`tracer.asgi.run_layer`) until it leaves."""
        if self._tokens is None:
            self._tokens = {}
        self._tokens[layer] = token

    def release_token(self, layer: Any) -> Any:
        """The token :meth:`hold_token` kept for ``layer``, if any."""
        return self._tokens.pop(layer, None) if self._tokens else None

    def _remove(self, layer: int) -> None:
        """Layer ``layer`` left: dropped if innermost (with the layers below it that left out of
        order), else marked left, so that every open layer keeps its position."""
        layers = self._layers
        if layer == len(layers) - 1:
            layers.pop()
            while layers and layers[-1] is None:
                layers.pop()
        else:
            layers[layer] = None

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


class LayerRef(trace.NonRecordingSpan):
    """A layer of a :class:`RecordedChain` as a parent: its context, and recording (so that
    children are recorded)."""

    def is_recording(self) -> bool:
        return True


class _Written:
    """What code running in a layer did to it as the current span (rare: made on demand)."""

    __slots__ = ("attributes", "events", "name", "status")

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}
        self.events: list[sdk_trace.Event] = []
        self.name: str | None = None
        self.status: Status | None = None


_BASE = 0
"""In :class:`RecordedChain`, the parent of a layer with no open layer below it: the chain's
base (0 is no valid span id)."""


_LEFT = 0
"""In :class:`RecordedChain`'s start times: a layer that left while a layer inside it runs."""


class RecordedChain(Chain):
    """A chain whose open layers are span ids and start times, finished into
    ``ReadableSpan``\\s for the SDK's processors when they return.

    ``sdk`` is the recorder's :class:`~tracer.recorder.spans.SdkParts`; ``base`` must be
    recording (the connection's ``asgi.app`` under the server hooks, its ``ws.connection``
    when the middleware records it alone).
    """

    __slots__ = ("_context", "_families", "_foreign", "_left", "_sdk", "_top", "_written")

    def __init__(self, base: trace.Span, sdk: Any, tracer: Any) -> None:
        super().__init__(base, None, tracer)
        self._sdk = sdk
        self._context = base.get_span_context()
        # Two machine words per open layer in one array — its span id and its start time
        # (_LEFT once it left out of order), outermost first — rather than list slots and int
        # objects: an idle connection holds its whole chain open.  A layer's parent is the
        # layer below it (still there: only the innermost are dropped), the base for the
        # outermost, or the span in _foreign.
        self._layers = array("Q")
        self._foreign: dict[int, trace.SpanContext] | None = None
        """Layer -> the span made current inside the chain that it nests under (rare)."""
        self._top: trace.SpanContext | None = None  # the last context built
        self._written: dict[int, _Written] | None = None
        self._families = sdk.families()
        """Whether a layer that returns inside another may wait for it, as a family member
        (checked once: if a processor needs spans by the time the family goes, ``emit`` hands
        each member on as a span of its own)."""
        self._left: list[tuple[Any, ...]] = []
        """The layers that left inside a running layer and wait for it, in the order they left:
        ``(position, span_id, name, start, end, attributes)``, or ``(position, member)`` for a
        layer with more to it (events, a status).  Positions say who nests under whom: what
        left at position ``p + 1`` since the last layer at ``p`` left belongs to the next one
        at ``p`` to leave (see :meth:`_members_of`)."""

    def _layer_context(self, span_id: int, keep: bool = True) -> trace.SpanContext:
        top = self._top
        if top is not None and top.span_id == span_id:
            return top
        base = self._context
        context = trace.SpanContext(
            base.trace_id, span_id, False, base.trace_flags, base.trace_state
        )
        if keep:
            self._top = context
        return context

    @property
    def innermost(self) -> trace.Span:
        layers = self._layers
        if not layers:
            return self._base
        # Not kept: asked for while the chain runs (the accept's parent…), it would stay for
        # an idle connection's life; leaving layers keep their parents' (see leave).
        return LayerRef(self._layer_context(layers[-2], keep=False))

    def enter(self, name: str, attributes: dict[str, Any], outer: trace.Span | None) -> int:
        # A layer leaving kept its parent's context for when that one leaves too; a layer
        # entering means the parent runs on (solve_dependencies, then the endpoint): let it go.
        self._top = None
        span_id = self._sdk.new_span_id()
        layers = self._layers
        if outer is not None:
            if self._foreign is None:
                self._foreign = {}
            self._foreign[span_id] = outer.get_span_context()
        layers.append(span_id)
        layers.append(time_ns())
        return len(layers) // 2 - 1

    def leave(self, layer: int, name: str, attributes: dict[str, Any], error: str | None) -> None:
        end = time_ns()
        at = 2 * layer
        layers = self._layers
        span_id, start = layers[at], layers[at + 1]
        if (
            at
            and at == len(layers) - 2
            and error is None
            and layers[at - 1] != _LEFT
            and self._families
            and not self._written
            and not self._foreign
        ):
            # Most layers: the innermost returns, in order, inside a layer that runs on, and
            # nothing was written to it.  It waits for that layer as it is, made a family
            # member only when the family goes (one pass, at the outermost layer's leave).
            del layers[at:]
            self._left.append((layer, span_id, name, start, end, attributes))
            return
        parent_id = layers[at - 2] if at else _BASE
        parent_runs = parent_id != _BASE and layers[at - 1] != _LEFT
        self._remove(layer)
        foreign = self._foreign.pop(span_id, None) if self._foreign else None
        events: Any = ()
        status: Status | None = None
        if self._written or error is not None:
            name, attributes, events, status = self._as_written(span_id, name, attributes, error)
        members = self._members_of(layer)
        sdk = self._sdk
        if foreign is None and parent_runs and self._families:
            # Inside another layer of the chain, which leaves later: it goes with that one.
            member = sdk.member(span_id, name, start, end, attributes, events, status, members)
            self._left.append((layer, member))
            return
        context = self._layer_context(span_id)
        if foreign is not None:
            parent = foreign
        elif parent_id == _BASE:
            parent = self._context
        else:  # the layer below it, which leaves next: its context is built now, kept for then
            parent = self._layer_context(parent_id)
        sdk.emit(name, context, parent, start, end, attributes, events=events, status=status,
                 members=members)  # fmt: skip

    def _members_of(self, layer: int) -> tuple[Any, ...]:
        """The family members of the layer at position ``layer``, leaving now: the layers that
        left inside it and wait (the end of :attr:`_left` past its position), nested."""
        left = self._left
        if not left or left[-1][0] <= layer:
            return ()
        first = len(left) - 1
        while first and left[first - 1][0] > layer:
            first -= 1
        waiting = left[first:]
        del left[first:]
        sdk = self._sdk
        below: dict[int, list[tuple[Any, ...]]] = {}  # position -> members made, not yet placed
        for entry in waiting:
            position = entry[0]
            inner = below.pop(position + 1, None)
            if len(entry) == 2:  # made when it left (its own members placed then)
                made = entry[1]
            else:
                _, span_id, name, start, end, attributes = entry
                members = tuple(inner) if inner else ()
                if sdk.fits_limits(attributes):  # a layer's few attributes, as a rule
                    made = facts.plain_member(span_id, name, start, end, None, attributes, members)
                else:
                    made = sdk.member(span_id, name, start, end, attributes, (), None, members)
            found = below.get(position)
            if found is None:
                below[position] = [made]
            else:
                found.append(made)
        return tuple(below.get(layer + 1, ()))

    def _as_written(
        self, span_id: int, name: str, attributes: dict[str, Any], error: str | None
    ) -> tuple[str, dict[str, Any], Any, Status | None]:
        """A leaving layer's name, attributes, events and status: its own, with what code
        running in it wrote to it (:class:`_Written`) and the error it raised."""
        written = self._written.pop(span_id, None) if self._written else None
        status: Status | None = None
        events: Any = ()
        if written is not None:
            attributes = {**attributes, **written.attributes}
            events = written.events
            name = written.name or name
            status = written.status
        if error is not None:
            attributes = {**attributes, vocab.ERROR_TYPE: error}
            status = Status(StatusCode.ERROR, error)
        return name, attributes, events, status

    def _remove(self, layer: int) -> None:
        layers = self._layers
        at = 2 * layer
        if at == len(layers) - 2:
            del layers[at:]
            while layers and layers[-1] == _LEFT:
                del layers[-2:]
        else:
            layers[at + 1] = _LEFT

    # --- trace.Span: written to the innermost layer -------------------------------------------

    def _innermost_written(self) -> _Written | None:
        if not self._layers:
            return None
        if self._written is None:
            self._written = {}
        span_id = self._layers[-2]
        written = self._written.get(span_id)
        if written is None:
            written = self._written[span_id] = _Written()
        return written

    def is_recording(self) -> bool:
        return bool(self._layers) or self._base.is_recording()

    def set_attribute(self, key: str, value: Any) -> None:
        written = self._innermost_written()
        if written is None:
            self._base.set_attribute(key, value)
        else:
            written.attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        for key, value in dict(attributes).items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        written = self._innermost_written()
        if written is None:
            self._base.add_event(name, attributes, timestamp)
        else:
            written.events.append(sdk_trace.Event(name, attributes, timestamp or time_ns()))

    def update_name(self, name: str) -> None:
        written = self._innermost_written()
        if written is None:
            self._base.update_name(name)
        else:
            written.name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        written = self._innermost_written()
        if written is None:
            self._base.set_status(status, description)
        else:
            written.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self.add_event("exception", {"exception.type": type(exception).__name__})


def is_disconnect(exc: BaseException) -> bool:
    """A client going away is how WebSocket handlers end, not a failure of the layer."""
    return type(exc).__name__ in ("WebSocketDisconnect", "ClientDisconnected", "CancelledError")


def innermost_span(span: trace.Span) -> trace.Span:
    """``span`` itself, or the layer a :class:`Chain` stands for right now (a span to keep as
    a parent for later must not move with the chain)."""
    return span.innermost if isinstance(span, Chain) else span
