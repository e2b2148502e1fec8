"""Hooks on uvicorn's WebSocket protocols and the libraries under them.

Three families, one adapter each, all reporting the same stages to a
:class:`~tracer.recorder.ConnectionRecord`:

``websockets``
    uvicorn's ``WebSocketProtocol`` subclasses the legacy
    ``websockets.legacy.server.WebSocketServerProtocol``: a handler task runs ``handshake()``
    (``read_http_request`` → ``process_request``, which starts the ASGI app and waits for its
    accept → ``check_request`` → ``write_http_response``).
``websockets-sansio``
    ``WebSocketsSansIOProtocol`` drives ``websockets.server.ServerProtocol``: the request
    arrives in ``data_received`` → ``handle_connect`` → ``conn.accept`` (validation); the 101
    is sent from the ASGI ``send`` when the app accepts.
``wsproto``
    ``WSProtocol`` drives ``wsproto.WSConnection``: validation happens inside
    ``conn.receive_data`` (``H11Handshake._process_connection_request``); the 101 is sent from
    the ASGI ``send`` (``H11Handshake._accept``).

Bytes are seen on the wire: ``data_received`` on the way in and a
:class:`~tracer.hooks.transport.TapTransport` on the way out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import copy_context
from dataclasses import dataclass
from time import time_ns
from types import FunctionType, MethodType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from tracer import vocab
from tracer._contain import errors
from tracer.hooks.context import (
    RECORD_ATTRIBUTE,
    Active,
    ChainEntry,
    current_record,
    record_of,
    upgrading,
)
from tracer.hooks.patching import Patch, method_form, original_function
from tracer.hooks.transport import TapTransport
from tracer.recorder import Attributes, ConnectionRecord, code_attributes, stack_entry
from tracer.recorder.phase import Phase

_OPEN = int(Phase.OPEN)
_NO_DICT: dict[str, Any] = {}
"""What an instance without a ``__dict__`` holds: no record (never written)."""


@dataclass(frozen=True, slots=True)
class Family:
    """Where one WebSocket implementation keeps the functions each stage runs through."""

    name: str
    module: str
    cls: str
    send: str
    receive: str
    handshake: tuple[str, str]  # (module, qualname) of the function the handshake runs in
    validate: tuple[tuple[str, str], ...]
    response: tuple[tuple[str, str], ...]
    handshake_ends_on_response: bool


FAMILIES: dict[str, Family] = {
    "websockets": Family(
        name="websockets",
        module="uvicorn.protocols.websockets.websockets_impl",
        cls="WebSocketProtocol",
        send="asgi_send",
        receive="asgi_receive",
        handshake=("websockets.legacy.server", "WebSocketServerProtocol.handshake"),
        validate=(
            ("websockets.legacy.handshake", "check_request"),
            ("websockets.legacy.server", "check_request"),
        ),
        response=(("websockets.legacy.server", "WebSocketServerProtocol.write_http_response"),),
        handshake_ends_on_response=False,
    ),
    "websockets-sansio": Family(
        name="websockets-sansio",
        module="uvicorn.protocols.websockets.websockets_sansio_impl",
        cls="WebSocketsSansIOProtocol",
        send="send",
        receive="receive",
        handshake=(
            "uvicorn.protocols.websockets.websockets_sansio_impl",
            "WebSocketsSansIOProtocol.handle_connect",
        ),
        validate=(("websockets.server", "ServerProtocol.accept"),),
        response=(("websockets.server", "ServerProtocol.send_response"),),
        handshake_ends_on_response=True,
    ),
    "wsproto": Family(
        name="wsproto",
        module="uvicorn.protocols.websockets.wsproto_impl",
        cls="WSProtocol",
        send="send",
        receive="receive",
        handshake=("uvicorn.protocols.websockets.wsproto_impl", "WSProtocol.handle_connect"),
        validate=(("wsproto.handshake", "H11Handshake._process_connection_request"),),
        response=(
            ("wsproto.handshake", "H11Handshake._accept"),
            ("wsproto.handshake", "H11Handshake._reject"),
        ),
        handshake_ends_on_response=True,
    ),
}


def stage_code(family: Family) -> dict[str, Attributes]:
    """``code.*`` per stage, read from the installed functions."""
    own = family.module, family.cls
    targets: dict[str, tuple[str, str]] = {
        vocab.WS_HANDSHAKE: family.handshake,
        vocab.WS_HANDSHAKE_VALIDATE: family.validate[0],
        vocab.WS_HANDSHAKE_RESPONSE: family.response[0],
        vocab.ASGI_APP: (own[0], f"{own[1]}.run_asgi"),
        vocab.WS_ACCEPT: (own[0], f"{own[1]}.{family.send}"),
        vocab.WS_MESSAGE_SEND: (own[0], f"{own[1]}.{family.send}"),
        vocab.WS_FRAME_SEND: (own[0], f"{own[1]}.{family.send}"),
        vocab.WS_MESSAGE_RECEIVE: (own[0], f"{own[1]}.{family.receive}"),
        vocab.WS_FRAME_RECEIVE: (own[0], f"{own[1]}.data_received"),
        vocab.WS_CLOSE: (own[0], f"{own[1]}.connection_lost"),
    }
    found: dict[str, Attributes] = {}
    for stage, (module, qualname) in targets.items():
        function = original_function(module, qualname)
        if function is not None:
            found[stage] = code_attributes(function)
    return found


def _error_name(exc: BaseException | None) -> str | None:
    return type(exc).__name__ if exc is not None else None


# --- Wrappers on uvicorn's protocol class --------------------------------------------------------


def make_connection_made(family: Family, ws_code: dict[str, Attributes]) -> Any:
    """The hook on ``family``'s ``connection_made``: a connection's record, and the tapped
    transport its protocol writes through."""
    send_frame = stack_entry(original_function(family.module, f"{family.cls}.{family.send}"))
    own_methods = _own_methods(family, ("data_received", family.send, family.receive))

    @method_form
    def connection_made_hook(original: FunctionType) -> Callable[..., Any]:
        def connection_made(self: Any, *args: Any, **kwargs: Any) -> Any:
            recorder = Active.recorder
            if recorder is None or RECORD_ATTRIBUTE in self.__dict__:
                return original(self, *args, **kwargs)
            transport = args[0] if args else kwargs.get("transport")
            try:
                upgrade, upgrading.value = upgrading.value, None  # handed over once
                record = recorder.new_connection(
                    impl_http=upgrade.impl_http if upgrade else "unknown",
                    impl_ws=family.name,
                    http=upgrade.stages if upgrade else None,
                    http_code=upgrade.http_code if upgrade else {},
                    ws_code=ws_code,
                    transport=transport,
                    handshake_ends_on_response=family.handshake_ends_on_response,
                    send_frame=send_frame,
                )
                self.__dict__[RECORD_ATTRIBUTE] = record
                if record.inert:
                    # Not sampled: nothing to see on the wire either, and its messages need
                    # not pass the hooks at all.
                    tapped = transport
                    _step_aside(self, own_methods)
                else:
                    tapped = TapTransport(transport, record)
            except Exception as exc:
                errors.record("ws.connection_made", exc)
                tapped = transport
            return original(self, tapped)

        return connection_made

    return connection_made_hook


def _own_methods(family: Family, names: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """The protocol class's own functions behind the hooks on ``names`` (those that are plain
    Python functions, which an instance can hold bound)."""
    found = []
    for name in names:
        function = original_function(family.module, f"{family.cls}.{name}")
        if type(function) is FunctionType:
            found.append((name, function))
    return tuple(found)


_STEPPED_ASIDE = "_wstrace_own_methods"
"""Where a protocol that got its own methods back keeps their names (see :func:`_step_aside`)."""


def _step_aside(instance: Any, methods: tuple[tuple[str, Any], ...]) -> None:
    """Give an unsampled connection's protocol its own methods back, on the instance: every
    chunk it reads and every message it sends or receives then skips the hooks, which would
    only have handed it on (three calls a message), as on a server never traced.

    A bound method on its own instance is a reference cycle: :func:`_step_back` takes them off
    when the connection is lost, so the protocol is freed as soon as it is let go, as before,
    not at the garbage collector's next pass."""
    own = instance.__dict__
    for name, function in methods:
        own[name] = MethodType(function, instance)
    own[_STEPPED_ASIDE] = tuple(name for name, _ in methods)


def _step_back(instance: Any) -> None:
    """Take off what :func:`_step_aside` put on ``instance`` (the app keeps what it was given)."""
    own = instance.__dict__
    for name in own.pop(_STEPPED_ASIDE, ()):
        own.pop(name, None)


@method_form
def data_received_hook(original: FunctionType) -> Callable[..., Any]:
    """The protocol's ``data_received`` (every chunk a client sends), hooked: the chunk is
    decoded before the protocol sees it, its frames ended once the protocol is done with it."""

    def data_received(self: Any, *args: Any, **kwargs: Any) -> Any:
        # record_of(self), spelled out in the three hooks every message passes.
        record = getattr(self, "__dict__", _NO_DICT).get(RECORD_ATTRIBUTE)
        if record is None or record.inert:
            return original(self, *args, **kwargs)
        # errors.call, spelled out: this runs for every chunk a client sends.
        try:
            frames = record.on_bytes_in(time_ns(), args[0])
        except Exception as exc:
            errors.record("ws.data_received", exc)
            frames = None
        try:
            if record.phase < _OPEN:
                # The record is shared (see _traced_send) in a copy of the context: the
                # reader's own, which lives as long as the connection, would otherwise keep the
                # set-and-reset (new context variable mappings) for its whole life.
                return copy_context().run(_shared_call, record, original, (self, *args), kwargs)
            return original(self, *args, **kwargs)
        finally:
            if frames:
                try:
                    record.on_bytes_in_done(frames, time_ns())
                except Exception as exc:
                    errors.record("ws.data_received", exc)

    return data_received


def _shared_call(record: ConnectionRecord, wrapped: Any, args: Any, kwargs: Any) -> Any:
    """``wrapped(*args, **kwargs)`` with ``record`` as the ``current_record`` (run in a copy of
    the context, which is let go afterwards: nothing to reset)."""
    current_record.set(record)
    return wrapped(*args, **kwargs)


@method_form
def connection_lost_hook(original: FunctionType) -> Callable[..., Any]:
    """``connection_lost``: the record learns the connection is gone, after the protocol."""

    def connection_lost(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = record_of(self)
        lost_at = time_ns()
        try:
            return original(self, *args, **kwargs)
        finally:
            if record is not None:
                if record.inert:
                    _step_back(self)
                exc = args[0] if args else kwargs.get("exc")
                errors.call("ws.connection_lost", record.on_lost, lost_at, exc)

    return connection_lost


# The async wrappers below dispatch synchronously: a connection that is not traced goes
# straight to the original coroutine function, with no extra coroutine frame on its path.  A
# traced one gets the original's coroutine, made at once (so the wrapper's ``args`` and ``kwargs``
# are not kept), awaited by a wrapper whose frame stays small: ``run_asgi``'s lives as long as
# the connection, ``receive``'s as long as it is idle.


@method_form
def run_asgi_hook(original: FunctionType) -> Callable[..., Any]:
    """``run_asgi``: the app task, traced as :func:`_traced_run_asgi` (or only owned)."""

    def run_asgi(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = record_of(self)
        if record is None:
            return original(self, *args, **kwargs)
        if record.inert:
            return _owned_run_asgi(record, original(self, *args, **kwargs))
        app = getattr(self, "app", None)
        return _traced_run_asgi(record, app, original(self, *args, **kwargs))

    return run_asgi


async def _owned_run_asgi(record: ConnectionRecord, run: Any) -> Any:
    """A connection not sampled: only say that the server layer owns it (nothing to record)."""
    record.claim()
    return await run


async def _traced_run_asgi(record: ConnectionRecord, app: Any, run: Any) -> Any:
    context, chain, app = _app_started(record, app)  # app: now the chain's entry
    try:
        run = await run
    except BaseException:
        _app_raised(record, context, chain, app)
        raise
    _app_ended(record, context, chain, app, None)
    return run


_NOT_ATTACHED = object()


def _app_started(record: ConnectionRecord, app: Any) -> tuple[Any, Any, ChainEntry | None]:
    """The app task starts: ``asgi.app`` and, under it, the ASGI chain become current.

    Returns what :func:`_app_ended` restores: the OpenTelemetry context before (not attach's
    token: it would be one more object for the connection's life), and, when the chain was
    entered, what its entry's ``leave`` takes, with the entry."""
    context: Any = _NOT_ATTACHED
    chain: Any = None
    entry: ChainEntry | None = None
    try:
        record.on_app_start(time_ns(), app)
        if record.app_span is not None:
            # Spans made inside the app (the ASGI chain, FastAPI's own telemetry, other
            # instrumentations) join this connection's trace under asgi.app.
            current: Any = record.app_span
            active = Active.chain
            entered = active and active.enter(
                app, record.app_span, record.recorder.tracer, record.recorder
            )
            if entered is not None:
                current, chain = entered
                entry = active
            before = otel_context.get_current()
            otel_context.attach(trace.set_span_in_context(current))
            context = before
    except Exception as exc:
        errors.record("ws.run_asgi", exc)
    return context, chain, entry


def _app_ended(
    record: ConnectionRecord, context: Any, chain: Any, entry: ChainEntry | None, error: str | None
) -> None:
    """The app task returned (or raised ``error``): take back what :func:`_app_started` did."""
    if entry is not None:
        entry.leave(chain)
    if context is not _NOT_ATTACHED:
        otel_context.attach(context)
    errors.call("ws.run_asgi", record.on_app_end, time_ns(), error)


def _app_raised(
    record: ConnectionRecord, context: Any, chain: Any, entry: ChainEntry | None
) -> None:
    """As :func:`_app_ended`, for the exception being handled now."""
    _app_ended(record, context, chain, entry, _error_name(sys.exc_info()[1]))


@method_form
def send_hook(original: FunctionType) -> Callable[..., Any]:
    """The protocol's ``send`` (the app's ASGI send), hooked: a connection not traced goes
    straight to the original coroutine, with no extra coroutine frame on its path."""

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = getattr(self, "__dict__", _NO_DICT).get(RECORD_ATTRIBUTE)
        if record is None or record.inert:
            return original(self, *args, **kwargs)
        message = args[0] if args else kwargs.get("message")
        return _traced_send(record, message, original(self, *args, **kwargs))

    return send


async def _traced_send(record: ConnectionRecord, message: Any, run: Any) -> Any:
    """``run``: the original ``send(message)``'s coroutine, made (not yet run) by the hook."""
    try:
        send = record.on_send_enter(time_ns(), message)
    except Exception as exc:
        errors.record("ws.send", exc)
        send = None
    # The record is the current_record while the protocol's code runs, if it may be needed:
    # only the library-level hooks read it (validation, the handshake's response), and those
    # run before the handshake is over; once the connection is open, sends skip the
    # set-and-reset.
    token = current_record.set(record) if record.phase < _OPEN else None
    failure: str | None = None
    try:
        return await run
    except BaseException as exc:
        failure = _error_name(exc)
        raise
    finally:
        if token is not None:
            current_record.reset(token)
        try:
            if send is not None:
                record.on_send_exit(send, time_ns(), failure)
            else:  # an accept (the 101 is out: see on_accept_exit), a close, a denial
                record.on_accept_exit()
        except Exception as exc:
            errors.record("ws.send", exc)


@method_form
def receive_hook(original: FunctionType) -> Callable[..., Any]:
    """The protocol's ``receive`` (the app's ASGI receive), hooked: as :func:`send_hook`."""

    def receive(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = getattr(self, "__dict__", _NO_DICT).get(RECORD_ATTRIBUTE)
        if record is None or record.inert:
            return original(self, *args, **kwargs)
        return _traced_receive(record, original(self, *args, **kwargs))

    return receive


async def _traced_receive(record: ConnectionRecord, message: Any) -> Any:
    """``message``: the original ``receive()``'s coroutine, then what it returned.  (Runs for
    every message: the record's calls are made here, not through helpers.)"""
    asked = time_ns()
    try:
        record.on_receive_enter(asked)
    except Exception as exc:
        errors.record("ws.receive", exc)
    message = await message
    try:
        record.on_receive_exit(asked, time_ns(), message)
    except Exception as exc:
        errors.record("ws.receive", exc)
    return message


# --- Wrappers on the libraries' handshake functions ----------------------------------------------


def _with_record(instance: Any) -> ConnectionRecord | None:
    record = record_of(instance) if instance is not None else None
    return record if record is not None else current_record.get()


def wrap_async_handshake(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    record = _with_record(instance)
    if record is None:
        return wrapped(*args, **kwargs)
    return _traced_handshake(record, wrapped, args, kwargs)


async def _traced_handshake(record: ConnectionRecord, wrapped: Any, args: Any, kwargs: Any) -> Any:
    errors.call("ws.handshake", record.on_handshake_start, time_ns())
    token = current_record.set(record)
    failure: BaseException | None = None
    try:
        return await wrapped(*args, **kwargs)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        current_record.reset(token)
        errors.call("ws.handshake", record.on_handshake_end, time_ns(), _error_name(failure))


def _noting(where: str, note: str) -> Any:
    """A hook that tells the connection's record ``note(time_ns())`` as the method starts,
    then runs it (``where``: the name a failure of the tracer's is counted under)."""

    @method_form
    def hook(original: FunctionType) -> Callable[..., Any]:
        def noted(self: Any, *args: Any, **kwargs: Any) -> Any:
            record = _with_record(self)
            if record is not None:
                errors.call(where, getattr(record, note), time_ns())
            return original(self, *args, **kwargs)

        return noted

    return hook


sync_handshake_hook = _noting("ws.handshake", "on_handshake_start")
"""The handshake's entry (``handle_connect``): the handshake starts."""


def wrap_validate(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    record = current_record.get()
    if record is None:
        return wrapped(*args, **kwargs)
    started = time_ns()
    failure: BaseException | None = None
    result = None
    try:
        result = wrapped(*args, **kwargs)
        return result
    except BaseException as exc:
        failure = exc
        raise
    finally:
        error = _error_name(failure)
        status = getattr(result, "status_code", None)
        if error is None and isinstance(status, int) and status != 101:
            error = f"rejected-{status}"
        errors.call("ws.validate", record.on_validate, started, time_ns(), error)


response_hook = _noting("ws.response", "on_response_start")
"""The library writing its answer: the response starts."""


def patches(name: str) -> list[Patch]:
    family = FAMILIES[name]
    code = stage_code(family)
    own = f"{family.cls}."
    targets = [
        Patch(family.module, own + "connection_made", make_connection_made(family, code)),
        Patch(family.module, own + "data_received", data_received_hook),
        Patch(family.module, own + "connection_lost", connection_lost_hook),
        Patch(family.module, own + "run_asgi", run_asgi_hook),
        Patch(family.module, own + family.send, send_hook),
        Patch(family.module, own + family.receive, receive_hook),
    ]
    module, qualname = family.handshake
    handshake_wrapper = wrap_async_handshake if name == "websockets" else sync_handshake_hook
    targets.append(Patch(module, qualname, handshake_wrapper))
    targets += [Patch(module, qualname, wrap_validate) for module, qualname in family.validate]
    targets += [Patch(module, qualname, response_hook) for module, qualname in family.response]
    return targets
