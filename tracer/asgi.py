"""``TracingMiddleware``: the ASGI layer of a WebSocket connection, as spans.

Wrap the app (``app = TracingMiddleware(app)``) and every WebSocket connection records:

- one span per layer of the app's real, built middleware stack, in the order the connection
  traverses them, named after the layer's class (``FastAPI`` → ``Starlette`` →
  ``ServerErrorMiddleware`` → ``CORSMiddleware`` → ``ExceptionMiddleware`` →
  ``AsyncExitStackMiddleware`` → ``Router`` → the route → ``solve_dependencies`` → the
  endpoint), each with ``code.*`` pointing at the ``__call__`` that ran;
- ``ws.accept`` with the handshake stack (the live Python stack when ``websocket.accept``
  reaches the server).

With the server hooks installed (:func:`tracer.instrument`) the chain joins the connection's
trace under ``asgi.app`` (and ``ProxyHeadersMiddleware``, uvicorn's outermost layer, gets its
span too); messages, frames and broadcasts come from the server layer, which sees the wire.
Alone — under another server or Starlette's ``TestClient`` — the middleware feeds the same
:class:`~tracer.recorder.ConnectionRecord` from the ASGI messages it passes on
(:mod:`tracer.recorder.asgi_side`): a ``ws.connection`` root marked
``wstrace.source = "asgi"``, ``ws.accept``, ``ws.message.receive`` per message (from its
delivery: the wire is out of sight) with its sends and broadcasts, and ``ws.close``.

The chain spans come from class-level wrappers installed once per layer class; they pass
straight through unless a traced WebSocket connection is running in the current task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import operator
import threading
import weakref
from collections.abc import Callable
from time import time_ns
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tracer import vocab
from tracer._contain import errors
from tracer.chain import LAYER_CODES, Chain, RecordedChain, is_disconnect
from tracer.config import TracerConfig
from tracer.recorder import (
    ConnectionRecord,
    Recorder,
    code_attributes,
    current_handling,
    reset_handling,
)

Scope = dict[str, Any]


_current_chain: contextvars.ContextVar[Chain | None] = contextvars.ContextVar(
    "wstrace_chain", default=None
)
"""The chain of the traced WebSocket connection running in this task, if it is one."""


try:
    from opentelemetry.trace.propagation import _SPAN_KEY as _CURRENT_SPAN_KEY
except ImportError:  # another API version: every layer takes trace.get_current_span()
    _CURRENT_SPAN_KEY = ""
"""Where an OpenTelemetry context holds its current span."""

try:
    from opentelemetry.baggage import _BAGGAGE_KEY
except ImportError:  # another API version: trace headers always go through the propagators
    _BAGGAGE_KEY = None
"""Where an OpenTelemetry context holds its baggage."""


def _context_reader() -> Callable[[], Any]:
    """What reads the running OpenTelemetry context: the context variable of the SDK's
    default runtime context itself (a C call), else ``get_current`` (another runtime context
    configured).  Every layer of the chain reads it as it is entered."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and isinstance(
        variable, contextvars.ContextVar
    ):
        return variable.get
    return otel_context.get_current


_current_context = _context_reader()


LayerSpec = tuple[str, dict[str, Any]]
"""A layer's span name and attributes, made once per wrapped layer and shared by its spans."""


async def run_layer(chain: Chain, layer: LayerSpec, awaitable: Any) -> Any:
    """Await one layer as the innermost of ``chain``; its span ends when it returns.  If the
    tracer fails to record it, the layer runs untraced: the app is never affected.

    The layer's coroutine is created by the (synchronous) wrapper and awaited here: one
    coroutine per layer, which lives as long as the connection, rather than two.  An idle
    connection holds one of these per layer, so its frame is kept small: few locals (the
    layer's result reuses ``awaitable``'s), a small-int handle, and the work done by the
    chain's ``enter`` (or, in the rare cases, :func:`_enter_layer`) and ``returned`` /
    ``raised``."""
    try:  # _enter_layer, its usual case spelled out: every layer of every handshake
        if _current_context().get(_CURRENT_SPAN_KEY) is chain:
            handle: int | None = chain.enter(layer[0], layer[1], None)
        else:
            handle = _enter_layer(chain, layer)
    except Exception as failure:
        errors.record("asgi.layer", failure)
        handle = None
    if handle is None:
        return await awaitable
    try:
        awaitable = await awaitable
    except BaseException:
        chain.raised(handle, layer)
        raise
    chain.returned(handle, layer)
    return awaitable


def _enter_layer(chain: Chain, layer: LayerSpec) -> int | None:
    """The layer's handle in ``chain``, or None (the tracer failed: the layer runs untraced)."""
    try:
        # The chain is current for every layer but one nested under a span made inside the
        # chain: read straight from the context first (no type check: the chain is a span).
        if _current_context().get(_CURRENT_SPAN_KEY) is chain:
            return chain.enter(layer[0], layer[1], None)
        current = trace.get_current_span()
        if current is chain:
            return chain.enter(layer[0], layer[1], None)
        # Something inside the chain made its own span current (FastAPI's telemetry, the
        # app's own span): this layer nests under it, and is current inside itself again.
        token = otel_context.attach(trace.set_span_in_context(chain))
        try:
            handle = chain.enter(layer[0], layer[1], current)
        except Exception:
            otel_context.detach(token)
            raise
        chain.hold_token(handle, token)
        return handle
    except Exception as failure:
        errors.record("asgi.layer", failure)
        return None


_wrapped_lock = threading.Lock()
_wrapped: dict[tuple[int, str], tuple[Any, str, Any]] = {}
"""(id(owner), attribute) -> (owner, attribute, original) for every chain wrapper installed:
classes, module functions and route endpoints, all put back by :func:`unwrap_chain`."""

_describers: dict[tuple[int, str], tuple[Callable[[Any], LayerSpec], Any]] = {}
"""(id(owner), attribute) -> (how its wrapper describes an instance, the original), for the
classes whose ``__call__`` is a chain layer (see :func:`_direct_layer`)."""

_TRANSPARENT: set[str] = {"TracingMiddleware"}


def _layer_name(cls: type, owner: type, attribute: str) -> str:
    """The instance's class when ``owner`` holds its own implementation, else ``owner``.

    ``APIRouter`` inherits ``Router.__call__``: its span is ``APIRouter``.  ``FastAPI``
    reaches ``Starlette.__call__`` through ``super()``: that second span is ``Starlette``.
    """
    for klass in cls.__mro__:
        if attribute in klass.__dict__:
            return cls.__name__ if klass is owner else owner.__name__
    return owner.__name__


def _make_layer_wrapper(owner: type, attribute: str) -> tuple[Any, Callable[[Any], LayerSpec]]:
    """The class-level wrapper of ``owner.attribute``, and how it describes an instance."""
    original = owner.__dict__[attribute]
    attrs = code_attributes(original)
    described: dict[tuple[type, Any], LayerSpec] = {}
    handles = attribute == "handle"  # a route's: one span per route template

    def describe(instance: Any) -> LayerSpec:
        route = getattr(instance, "path", None) if handles else None
        key = (type(instance), route)
        found = described.get(key)
        if found is None:
            name = _layer_name(type(instance), owner, attribute)
            span_attrs = {**attrs, vocab.MIDDLEWARE_LAYER: name}
            if isinstance(route, str):  # a route: with its template
                span_attrs[vocab.HTTP_ROUTE] = route
            found = described[key] = (name, span_attrs)
        return found

    def layer(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Synchronous on purpose: untraced calls (and bad calls, which must raise at once, as
        # uvicorn's factory detection relies on) go straight to the original.
        chain = _current_chain.get()
        if chain is None:
            return original(self, *args, **kwargs)
        scope = args[0] if args else kwargs.get("scope")
        if not isinstance(scope, dict) or scope.get("type") != "websocket":
            return original(self, *args, **kwargs)
        # describe(self), its cache read spelled out: every layer of every handshake.
        route = getattr(self, "path", None) if handles else None
        spec = described.get((type(self), route)) or describe(self)
        return run_layer(chain, spec, original(self, *args, **kwargs))

    return _as_layer(original, layer), describe


_LAYER_MARK = "__wstrace_layer__"


def _as_layer(original: Any, wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapper``, a plain function standing in for the coroutine function ``original``,
    dressed as it: its name, docstring and ``__wrapped__``, and marked a coroutine function
    (which is what uvicorn, Starlette and FastAPI ask of an ASGI app's ``__call__``).

    Not ``wrapt``: every layer of every handshake (and of every HTTP request) passes one of
    these.  Measured with wrapt 2.5 and a wrapper that only calls the original, a call through
    its ``FunctionWrapper`` costs about 1 µs more than the original's; through a plain
    function, 0.05 µs more (an endpoint that is not an ``async def`` keeps ``wrapt``)."""
    functools.update_wrapper(wrapper, original)
    setattr(wrapper, _LAYER_MARK, True)
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    if mark is not None:
        mark(wrapper)
    else:  # what asyncio.iscoroutinefunction, which those read up to 3.13, recognises
        wrapper._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
    return wrapper


def is_chain_wrapper(function: Any) -> bool:
    """Whether ``function`` is a layer wrapper installed by :func:`instrument_chain`."""
    return _LAYER_MARK in getattr(function, "__dict__", ())


def _wrap(owner: type, attribute: str) -> None:
    key = (id(owner), attribute)
    with _wrapped_lock:
        if key in _wrapped or attribute not in owner.__dict__:
            return
        original = owner.__dict__[attribute]
        if (
            is_chain_wrapper(original)
            or isinstance(original, wrapt.FunctionWrapper)
            or not inspect.iscoroutinefunction(original)
        ):
            return  # already wrapped, or not an ASGI coroutine we can time
        wrapper, describe = _make_layer_wrapper(owner, attribute)
        setattr(owner, attribute, wrapper)
        _wrapped[key] = (owner, attribute, original)
        _describers[key] = (describe, original)
        LAYER_CODES[id(original.__code__)] = original.__code__


def _direct_layer(app: Any) -> tuple[LayerSpec, Any] | None:
    """``app``'s layer (its span's name and attributes) and its unwrapped ``__call__``, when
    its class's ``__call__`` is a chain layer: :class:`TracingMiddleware` then awaits it as
    :func:`run_layer` would, rather than through one more coroutine."""
    for klass in type(app).__mro__:
        if "__call__" in klass.__dict__:
            found = _describers.get((id(klass), "__call__"))
            if found is None:
                return None
            describe, original = found
            return describe(app), original
    return None


def _wrap_function(module: Any, attribute: str, span_name: str) -> None:
    key = (id(module), attribute)
    with _wrapped_lock:
        original = getattr(module, attribute, None)
        if (
            key in _wrapped
            or not inspect.iscoroutinefunction(original)
            or is_chain_wrapper(original)
            or isinstance(original, wrapt.FunctionWrapper)
        ):
            return
        layer = (span_name, code_attributes(original))

        def timed(*args: Any, **kwargs: Any) -> Any:
            chain = _current_chain.get()
            if chain is None:
                return original(*args, **kwargs)
            return run_layer(chain, layer, original(*args, **kwargs))

        setattr(module, attribute, _as_layer(original, timed))
        _wrapped[key] = (module, attribute, original)


def unwrap_chain() -> None:
    """Restore every class and function the chain wrappers touched."""
    with _wrapped_lock:
        for owner, attribute, original in _wrapped.values():
            setattr(owner, attribute, original)
        _wrapped.clear()
        _describers.clear()
        LAYER_CODES.clear()
        _chains.clear()


def chain_layers(app: Any) -> list[Any]:
    """The app objects a WebSocket connection passes through, outermost first.

    Follows the conventions every ASGI middleware in the ecosystem uses (``self.app``), and
    Starlette's lazily built ``middleware_stack``, which it builds now if needed.
    """
    layers: list[Any] = []
    seen: set[int] = set()
    node = app
    while node is not None and id(node) not in seen and len(layers) < 64:
        seen.add(id(node))
        layers.append(node)
        stack = getattr(node, "middleware_stack", _MISSING)
        if stack is not _MISSING and hasattr(type(node), "build_middleware_stack"):
            if stack is None:
                node.middleware_stack = stack = node.build_middleware_stack()
            node = stack
            continue
        if "routes" in getattr(node, "__dict__", {}):
            break  # the router: routes are wrapped separately
        node = getattr(node, "app", None)
    return layers


_MISSING = object()


_chains: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
"""app -> whether its chain contains a TracingMiddleware (walked once per app)."""


def instrument_chain(app: Any, *, force: bool = False) -> bool:
    """Install the class-level wrappers for every layer of ``app``'s chain (idempotent).

    Only chains that contain a :class:`TracingMiddleware` (or ``force``, used by the
    middleware itself) are wrapped.  Returns whether the chain is traced.
    """
    try:
        known = _chains.get(app)
    except TypeError:  # an app that cannot be weakly referenced: walked every time
        known = None
    if known is not None:
        return known
    layers = chain_layers(app)
    traced = force or any(type(layer).__name__ in _TRANSPARENT for layer in layers)
    with contextlib.suppress(TypeError):
        _chains[app] = traced
    if not traced:
        return False
    for layer in layers:
        cls = type(layer)
        if (
            cls.__name__ in _TRANSPARENT
            or cls.__module__ == "builtins"
            or callable(getattr(layer, "__func__", None))
        ):
            continue  # ourselves, or a plain function/method: no class to wrap
        for klass in cls.__mro__:
            if klass is object:
                break
            if "__call__" in klass.__dict__ and klass.__module__.split(".")[0] in (
                "starlette",
                "fastapi",
                "uvicorn",
            ):
                _wrap(klass, "__call__")
            elif klass is cls and "__call__" in klass.__dict__:
                _wrap(klass, "__call__")  # the user's own middleware
        routes = getattr(layer, "routes", None)
        if routes:
            for route in routes:
                for klass in type(route).__mro__:
                    if "handle" in klass.__dict__:
                        _wrap(klass, "handle")
                        break
                _wrap_endpoint(route)
    import fastapi.routing

    _wrap_function(fastapi.routing, "solve_dependencies", "solve_dependencies")
    return traced


def _wrap_endpoint(route: Any) -> None:
    dependant = getattr(route, "dependant", None)
    call = getattr(dependant, "call", None)
    if call is None or is_chain_wrapper(call) or isinstance(call, wrapt.FunctionWrapper):
        return
    layer = (getattr(call, "__name__", "endpoint"), code_attributes(call))

    def timed(*args: Any, **kwargs: Any) -> Any:
        chain = _current_chain.get()
        if chain is None:
            return call(*args, **kwargs)
        return run_layer(chain, layer, call(*args, **kwargs))

    def endpoint(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return timed(*args, **kwargs)  # wrapped: call itself (a FunctionWrapper, never bound)

    with _wrapped_lock:
        _wrapped[(id(dependant), "call")] = (dependant, "call", call)
        if inspect.iscoroutinefunction(call):  # an async def: as the other layers (_as_layer)
            dependant.call = _as_layer(call, timed)
        else:  # any other callable FastAPI takes, proxied whole
            dependant.call = wrapt.FunctionWrapper(call, endpoint)
        code = getattr(call, "__code__", None)
        if code is not None:
            LAYER_CODES[id(code)] = code


def enter_server_chain(
    app: Any, base: Any, tracer: Any, recorder: Any
) -> tuple[Chain, Chain | None] | None:
    """Called by the server hooks as the ASGI app starts: trace the chain if it is wrapped.

    Returns the connection's :class:`Chain` (to be made the current span, under ``base``) and
    what :func:`leave_server_chain` restores when the app contains a :class:`TracingMiddleware`
    (the user asked for the ASGI layer to be traced): the outer layers, such as uvicorn's
    ``ProxyHeadersMiddleware``, then get spans too.  (The chain before, not a token: the hooks
    keep it as long as the connection, and a token is one more object.)
    """
    if not instrument_chain(app):
        return None
    chain = server_chain(base, tracer, recorder)
    previous = _current_chain.get()
    _current_chain.set(chain)
    return chain, previous


def server_chain(base: Any, tracer: Any, recorder: Any) -> Chain:
    """The chain of a recorded connection (by the server hooks or the middleware alone), under
    ``base``: layers as span ids and start times with the SDK, spans of their own otherwise."""
    sdk = recorder.sdk
    if sdk is not None and base.is_recording():
        return RecordedChain(base, sdk, tracer)
    return Chain(base, recorder.start_layer, tracer)


def leave_server_chain(previous: Chain | None) -> None:
    _current_chain.set(previous)


# --- The middleware ------------------------------------------------------------------------------


class TracingMiddleware:
    """Pure ASGI middleware tracing WebSocket connections; HTTP requests pass straight through.

    Options: ``tracer_provider`` and those of :class:`tracer.config.TracerConfig` (used when
    no server hooks are installed).
    """

    def __init__(self, app: Any, *, tracer_provider: Any = None, **options: Any) -> None:

        self.app = app
        self.config = TracerConfig.build(**options)
        self.recorder = Recorder(tracer_provider, self.config)
        """Records the connections this middleware traces alone (no server hooks)."""
        self.tracer = self.recorder.tracer

    def __getattr__(self, name: str) -> Any:
        # Let code that reaches through to the app (``app.state``, ``app.routes``…) keep working.
        if name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "websocket":
            await self.app(scope, receive, send)
            return
        # This coroutine lives as long as the connection: its frame is kept small, the work
        # done by _websocket.
        chain, layer, handle, run = self._websocket(scope, receive, send)
        if handle is None:
            await run
            return
        # The app's outermost layer, awaited here as run_layer would (its span ends when it
        # returns): one coroutine less for every connection.
        try:
            await run
        except BaseException:
            chain.raised(handle, layer)
            raise
        chain.returned(handle, layer)

    def _websocket(
        self, scope: Scope, receive: Any, send: Any
    ) -> tuple[Any, LayerSpec | None, int | None, Any]:
        """What :meth:`__call__` awaits for a WebSocket connection: ``(chain, layer, handle,
        awaitable)``; with a ``handle``, the awaitable is the app's outermost layer, entered in
        ``chain``, which :meth:`__call__` leaves when it returns."""
        try:
            instrument_chain(self.app, force=True)  # cached per app; again after unwrap_chain
        except Exception as exc:
            errors.record("asgi.instrument_chain", exc)
        handling = current_handling()
        if handling is not None and self.config.propagate_context:
            client = client_trace_context(scope)
            if client is not None and handling.record.recording:
                errors.call("asgi.link", handling.record.span.add_link, client, _CLIENT_LINK)
            scope = with_trace_headers(scope)
        if handling is None:
            return None, None, None, run_alone(self, scope, receive, send)
        if not handling.record.recording:  # owned by the server layer, not sampled
            return None, None, None, self.app(scope, receive, send)
        chain = _current_chain.get()
        if chain is None:
            # The hooks own this connection but did not see this middleware in the app they
            # started: the chain starts here, under whatever span is current.
            return None, None, None, _run_chain(self, handling, scope, receive, send)
        # The server hooks opened the chain.
        direct = _direct_layer(self.app)
        if direct is None:
            return None, None, None, self.app(scope, receive, send)
        layer, original = direct
        run = original(self.app, scope, receive, send)
        return chain, layer, _enter_layer(chain, layer), run


async def _run_chain(
    middleware: TracingMiddleware, handling: Any, scope: Scope, receive: Any, send: Any
) -> None:
    """The app, with a chain of its own made current under the current span."""
    chain = server_chain(trace.get_current_span(), middleware.tracer, handling.record.recorder)
    token = _current_chain.set(chain)
    context_token = otel_context.attach(trace.set_span_in_context(chain))
    try:
        await middleware.app(scope, receive, send)
    finally:
        otel_context.detach(context_token)
        _current_chain.reset(token)


_TRACE_HEADERS = frozenset((b"traceparent", b"tracestate"))
_HEADER_NAME = operator.itemgetter(0)
_CLIENT_LINK = {vocab.LINK: vocab.LINK_CLIENT}


def client_trace_context(scope: Scope) -> trace.SpanContext | None:
    """The trace context the client sent (W3C ``traceparent``), if any: linked, not trusted
    as a parent, since it comes from the other side of the wire."""
    headers = scope.get("headers") or ()
    if _TRACE_HEADERS.isdisjoint(map(_HEADER_NAME, headers)):  # the usual: looked for in C
        return None
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in _TRACE_HEADERS
    }
    context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return context if context.is_valid else None


def with_trace_headers(scope: Scope) -> Scope:
    """Hand the connection's trace context to instrumentation that starts from headers.

    FastAPI's native telemetry (and other server-entry instrumentations) take their parent
    from the request's ``traceparent`` header, not from the running context: without ours they
    start an orphan trace, or join the client's.  So the app sees the connection's context in
    ``traceparent`` / ``tracestate`` (a client's own values are replaced; they are kept as a
    link on ``ws.connection``).  ``propagate_context=False`` leaves the scope untouched.
    """
    ours = _trace_headers()
    if ours is None:
        return scope
    kept = scope.get("headers") or ()
    if not _TRACE_HEADERS.isdisjoint(map(_HEADER_NAME, kept)):  # the client's own: replaced
        kept = [header for header in kept if header[0] not in _TRACE_HEADERS]
    return {**scope, "headers": [*kept, *ours]}


def _trace_headers() -> list[tuple[bytes, bytes]] | None:
    """The running context as the global propagator writes it into headers, or None if it
    writes no ``traceparent``.

    With OpenTelemetry's default propagator (W3C trace context, then W3C baggage) and no
    baggage, that is ``traceparent`` (and ``tracestate``, if any) as its trace context
    propagator writes them, written here in one step: this runs on every handshake, before
    the 101, and the propagators' path through the API costs several times as much."""
    textmap = propagate.get_global_textmap()
    if textmap is not _default_textmap[0]:
        _default_textmap[:] = [textmap, _is_default_textmap(textmap)]
    context = _current_context()
    if _default_textmap[1] and not context.get(_BAGGAGE_KEY):
        span_context = trace.get_current_span(context).get_span_context()
        if span_context == trace.INVALID_SPAN_CONTEXT:
            return None
        trace_id, span_id, _, flags = span_context[:4]  # a SpanContext is a tuple
        parent = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
        ours = [(b"traceparent", parent.encode("latin-1"))]
        if span_context.trace_state:
            ours.append((b"tracestate", span_context.trace_state.to_header().encode("latin-1")))
        return ours
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        return None
    return [(key.encode("latin-1"), value.encode("latin-1")) for key, value in carrier.items()]


_default_textmap: list[Any] = [None, False]
"""The global propagator last seen, and whether it is OpenTelemetry's default."""


def _is_default_textmap(textmap: Any) -> bool:
    """Whether ``textmap`` is OpenTelemetry's default propagator, whose output with no baggage
    :func:`_trace_headers` writes itself."""
    parts = getattr(textmap, "_propagators", None)
    return (
        _BAGGAGE_KEY is not None
        and type(textmap) is CompositePropagator
        and isinstance(parts, list | tuple)
        and [type(part) for part in parts] == [TraceContextTextMapPropagator, W3CBaggagePropagator]
    )


def scope_attributes(scope: Scope, config: TracerConfig) -> dict[str, Any]:
    """Who is at each end, as far as the ASGI scope tells (the middleware alone)."""
    client = scope.get("client") or (None, None)
    server = scope.get("server") or (None, None)
    attributes: dict[str, Any] = {
        vocab.URL_PATH: scope.get("path", ""),
        vocab.URL_SCHEME: scope.get("scheme", "ws"),
    }
    if client[0] is not None:
        attributes[vocab.CLIENT_ADDRESS] = str(client[0])
        attributes[vocab.CLIENT_PORT] = int(client[1] or 0)
    if server[0] is not None:
        attributes[vocab.SERVER_ADDRESS] = str(server[0])
        attributes[vocab.SERVER_PORT] = int(server[1] or 0)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]
    attributes.update(config.header_attributes(vocab.HTTP_REQUEST_HEADER_PREFIX, headers))
    return attributes


async def run_alone(middleware: TracingMiddleware, scope: Scope, receive: Any, send: Any) -> None:
    """Trace a connection no server hook reports: the middleware's own receive and send feed
    the same :class:`~tracer.recorder.ConnectionRecord` the hooks do (``source = "asgi"``).

    A connection that is not sampled runs with its (non-recording) context current and in its
    ``traceparent``, so that what the app records is not sampled either.  Whatever the tracer
    fails to do, the app runs as it would untraced."""
    try:
        record = _new_record(middleware, scope)
    except Exception as exc:
        errors.record("asgi.connection", exc)
        await middleware.app(scope, receive, send)
        return
    undo: list[Callable[[], object]] = []
    try:
        _open_alone(middleware, record, undo)
    except Exception as exc:
        errors.record("asgi.connection", exc)
        _undo(undo)
        errors.call("asgi.connection", record.force_finish, time_ns())
        await middleware.app(scope, receive, send)
        return
    if middleware.config.propagate_context:
        scope = errors.call("asgi.connection", with_trace_headers, scope) or scope
    if not record.inert:
        receive, send = _traced_receive(record, receive), _traced_send(record, send)
    failure: BaseException | None = None
    try:
        await middleware.app(scope, receive, send)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _undo(undo)
        errors.call("asgi.connection", _end_alone, record, failure)


def _open_alone(
    middleware: TracingMiddleware, record: ConnectionRecord, undo: list[Callable[[], object]]
) -> None:
    """Make the connection current for the app: its chain (or, not sampled, its context) and
    its handling.  Each step done leaves in ``undo`` how to take it back."""
    if record.inert:  # not sampled, and nothing of it will be: its context only
        token = otel_context.attach(trace.set_span_in_context(record.span))
        undo.append(lambda: otel_context.detach(token))
        return
    handling_token = record.on_app_start(time_ns(), middleware.app, app_span=False)
    undo.append(lambda: reset_handling(handling_token))
    chain = server_chain(record.span, middleware.tracer, middleware.recorder)
    chain_token = _current_chain.set(chain)
    undo.append(lambda: _current_chain.reset(chain_token))
    context_token = otel_context.attach(trace.set_span_in_context(chain))
    undo.append(lambda: otel_context.detach(context_token))


def _undo(undo: list[Callable[[], object]]) -> None:
    """Take back what :func:`_open_alone` did, last step first."""
    while undo:
        errors.call("asgi.connection", undo.pop())


def _new_record(middleware: TracingMiddleware, scope: Scope) -> ConnectionRecord:
    record = middleware.recorder.new_connection(
        source=vocab.SOURCE_ASGI, peer=scope_attributes(scope, middleware.config)
    )
    record.path = scope.get("path", "")
    client = client_trace_context(scope)
    if client is not None and record.recording:
        record.span.add_link(client, _CLIENT_LINK)
    record.on_asgi_request(time_ns())
    return record


def _end_alone(record: ConnectionRecord, failure: BaseException | None) -> None:
    """The app returned: nothing more will happen on this connection."""
    at = time_ns()
    error = None if failure is None or is_disconnect(failure) else type(failure).__name__
    try:
        if not record.inert:
            record.on_app_end(at, error)
        if error is not None and record.recording:
            record.span.set_attribute(vocab.ERROR_TYPE, error)
            record.span.set_status(Status(StatusCode.ERROR, error))
    finally:
        record.on_lost(at, None)  # ends the connection's span, whatever happened above


def _traced_receive(record: ConnectionRecord, receive: Any) -> Any:
    async def traced_receive() -> Any:
        asked = time_ns()
        errors.call("asgi.receive", record.on_receive_enter, asked)
        message = await receive()
        errors.call("asgi.receive", record.on_asgi_receive, asked, time_ns(), message)
        return message

    return traced_receive


def _traced_send(record: ConnectionRecord, send: Any) -> Any:
    async def traced_send(message: Any) -> None:
        sent = errors.call("asgi.send", record.on_asgi_send_enter, time_ns(), message)
        failure: str | None = None
        try:
            await send(message)
        except BaseException as exc:
            failure = type(exc).__name__
            raise
        finally:
            errors.call("asgi.send", record.on_asgi_send_exit, sent, message, time_ns(), failure)

    return traced_send
