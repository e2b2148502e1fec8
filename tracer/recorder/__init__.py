"""Turns stage boundaries reported by the hooks into OpenTelemetry spans.

One :class:`ConnectionRecord` per upgraded connection.  The hooks call its ``on_*`` methods
with timestamps; those methods only store numbers and small tuples (the hot path), and move the
connection through its phases (:mod:`tracer.recorder.phase`).  Spans are built in batches at
natural boundaries — when the handshake is over, when the app has finished handling a message,
when the connection is gone — by the emitters (:mod:`tracer.recorder.emit`), with explicit
start and end times, so every span is complete, correctly parented and strictly nested when it
reaches the exporter.

Two kinds of span live here: ``ws.connection`` and ``asgi.app`` are started for real when they
begin (other layers, such as :class:`tracer.TracingMiddleware`, need their context while they
run); everything else is built after the fact from the recorded timestamps.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracer import vocab
from tracer._contain import errors
from tracer.config import TracerConfig
from tracer.recorder import abandoned
from tracer.recorder.connection import ConnectionRecord
from tracer.recorder.emit.messages import emit_broadcast
from tracer.recorder.family import FAMILY_TYPES, FamilyRoot
from tracer.recorder.records import (
    MAX_SENDS_PER_MESSAGE,
    Attributes,
    FrameRecord,
    Handling,
    HttpStages,
    InMessage,
    SendRecord,
    _explicit_broadcast,
    _handling,
    current_handling,
    reset_handling,
)
from tracer.recorder.spans import (
    _ROOT_CONTEXT,
    AppSpan,
    PendingSpan,
    SdkParts,
    code_attributes,
    stack_entry,
)

__all__ = [
    "Attributes",
    "ConnectionRecord",
    "FrameRecord",
    "Handling",
    "HttpStages",
    "InMessage",
    "PendingSpan",
    "Recorder",
    "SdkParts",
    "SendRecord",
    "broadcast",
    "code_attributes",
    "current_handling",
    "reset_handling",
    "stack_entry",
]


class Recorder:
    """Makes connection records and their spans, with one OpenTelemetry tracer: the server
    hooks have one (process-wide), each :class:`tracer.TracingMiddleware` used alone its own.
    Open records are found through their guards (:func:`tracer.recorder.abandoned.open_owners`)."""

    def __init__(self, tracer_provider: Any = None, config: TracerConfig | None = None) -> None:
        from tracer._version import __version__

        self.config = config or TracerConfig()
        self.tracer = trace.get_tracer(
            vocab.INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        self.sdk: SdkParts | None = SdkParts.of(self.tracer)
        """The SDK's parts, when the tracer is the OpenTelemetry SDK's (spans made directly).
        An attribute, not a property: every received message reads it."""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.stats = {"connections": 0, "frames_dropped": 0, "messages_dropped": 0}

    def next_connection_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def new_connection(self, **kwargs: Any) -> ConnectionRecord:
        if abandoned.pending():
            errors.call("recorder.end_abandoned", abandoned.end_abandoned)
        record = ConnectionRecord(self, **kwargs)
        self.stats["connections"] += 1
        return record

    def flush_open(self) -> None:
        """End every span of connections still open (used when uninstrumenting)."""
        now = time_ns()
        errors.call("recorder.end_abandoned", abandoned.end_abandoned)
        for record in abandoned.open_owners():  # every open record carries a guard
            if getattr(record, "recorder", None) is not self:
                continue
            try:
                if record.span.is_recording():
                    record.span.set_attribute(vocab.END_REASON, vocab.END_UNINSTRUMENTED)
                    record.span.set_status(
                        Status(StatusCode.ERROR, "ended by wstrace.uninstrument() while open")
                    )
                record.force_finish(now)
            except Exception as exc:
                errors.record("recorder.flush_open", exc)

    # Span building helpers: the only place spans are made.

    def start(
        self,
        name: str,
        parent: Any,
        start: int,
        attributes: Attributes | None = None,
        links: Sequence[Link] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Any:
        """Start a span at a past time ``start``; the caller ends it with an explicit time.

        With the OpenTelemetry SDK every span is a :class:`PendingSpan`: the same finished span
        reaches the same processors, without the SDK's per-span machinery (context objects,
        locks, bounded containers).  A root asks the provider's sampler, and processors see it
        start; a child follows its parent's sampling, as the SDK's default ``ParentBased``
        does.  With another tracer, its own spans.  A root takes ``attributes`` as its own:
        the caller made them for it, and must not reuse them.
        """
        sdk = self.sdk
        if sdk is not None:
            if parent is not None:
                if type(parent) in FAMILY_TYPES:
                    return parent.member(sdk, name, start, attributes, links, kind)
                parent_context = parent.get_span_context()
                if not parent.is_recording():
                    return trace.NonRecordingSpan(parent_context)
                context = sdk.child_context(parent_context)
                return PendingSpan(
                    sdk, name, context, parent_context, start, attributes, links, kind
                )
            if links:  # a message's own trace
                inherit = self.config.message_sampling == "inherit"
                return sdk.root(name, start, attributes, links, kind, inherit)
            return sdk.root(name, start, attributes, (), kind)  # a connection's trace
        context = trace.set_span_in_context(parent) if parent is not None else _ROOT_CONTEXT
        return self.tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, links=links, start_time=start
        )

    def start_family(
        self,
        name: str,
        parent: Any,
        start: int,
        attributes: Attributes | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Any:
        """:meth:`start` for a span that ends after every span made under it: where every
        processor takes facts, a :class:`~tracer.recorder.family.FamilyRoot`, whose children
        travel in its fact (a received message with its frames and sends); else any span."""
        sdk = self.sdk
        if sdk is None or parent is None or not parent.is_recording() or not sdk.families():
            return self.start(name, parent, start, attributes, None, kind)
        parent_context = parent.get_span_context()
        context = sdk.child_context(parent_context)
        return FamilyRoot(sdk, name, context, parent_context, start, attributes, kind)

    def start_app(self, parent: Any, start: int, code: Attributes, path: str) -> Any:
        """``asgi.app`` under ``parent``, with ``code`` (shared, not copied) and the path."""
        sdk = self.sdk
        if sdk is None or parent is None or not parent.is_recording():
            return self.start(vocab.ASGI_APP, parent, start, {**code, vocab.URL_PATH: path})
        parent_context = parent.get_span_context()
        context = sdk.child_context(parent_context)
        return AppSpan(sdk, context, parent_context, start, code, path)

    def start_layer(self, name: str, attributes: Attributes, parent: Any) -> Any:
        """A layer of an ASGI chain starts now (see :class:`tracer.chain.Chain`)."""
        return self.start(name, parent, time_ns(), attributes)

    def span(
        self,
        name: str,
        parent: Any,
        start: int,
        end: int,
        attributes: Attributes | None = None,
        links: Sequence[Link] | None = None,
        error: str | None = None,
    ) -> None:
        """A span that is over already (a leaf: nothing will nest under it)."""
        sdk = self.sdk
        if sdk is not None and parent is not None and not links:
            if type(parent) in FAMILY_TYPES:
                parent.leaf(sdk, name, start, max(end, start), attributes, error)
                return
            if parent.is_recording():
                sdk.finished(name, parent.get_span_context(), start, max(end, start),
                             attributes, error)
            return
        span = self.start(name, parent, start, attributes, links)
        if error is not None:
            span.set_attribute(vocab.ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(end, start))


class broadcast:  # lower case: used like a function
    """``tracer.broadcast()``: mark an app's fan-out loop as one ``ws.broadcast``.

    ::

        async def broadcast(self, message, room):
            with tracer.broadcast():
                for connection in self.rooms[room]:
                    await connection.send_text(message)

    Inside the block every send becomes a ``ws.message.send`` child of one ``ws.broadcast``
    span (``wstrace.broadcast.recipients`` = how many), each tied to its recipient's
    connection by a link; under the server hooks and the middleware alone alike.  Without the
    block, the server hooks still detect the usual shape on their own (a run of sends to
    distinct connections while one message is handled); the block makes it exact, and covers
    broadcasts from background tasks.  With no tracing installed it costs next to nothing.

    A class rather than a generator context manager: it runs for every fan-out."""

    __slots__ = ("_sends", "_started", "_token")

    def __enter__(self) -> None:
        self._sends: list[SendRecord] = []
        self._token = _explicit_broadcast.set(self._sends)
        self._started = time_ns()

    def __exit__(self, *exc_info: object) -> None:
        _explicit_broadcast.reset(self._token)
        try:
            _collect_broadcast(self._started, time_ns(), self._sends)
        except Exception as exc:
            errors.record("recorder.broadcast", exc)


def _collect_broadcast(started: int, ended: int, sends: list[SendRecord]) -> None:
    if not sends:
        return
    handling = _handling.get()
    if handling is not None and not handling.closed:
        record = handling.record
        if not handling.message_type:
            # The greeting phase may last the connection's life (a push loop): emit at once.
            if record.recording:
                parent = record.app_span or record.span
                emit_broadcast(record, parent, started, ended, sends, detected="explicit")
            return
        if handling.held + len(sends) > MAX_SENDS_PER_MESSAGE:
            handling.sends_dropped += len(sends)
            return
        handling.held += len(sends)
        if type(handling.explicit_broadcasts) is tuple:
            handling.explicit_broadcasts = []
        handling.explicit_broadcasts.append((started, ended, sends))
        return
    owner = sends[0].recipient
    if owner.recording:
        emit_broadcast(owner, None, started, ended, sends, detected="explicit")
