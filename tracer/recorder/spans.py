"""Making spans: finished child spans without the SDK's per-span machinery, and the small
helpers that turn recorded facts into attributes."""

from __future__ import annotations

import os
import random
import sys
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from time import time_ns
from types import MappingProxyType
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracer import vocab
from tracer.export import facts, message_facts
from tracer.recorder.promises import FactTakers, Starters, fast_attribute_limit, within_limits
from tracer.recorder.records import Attributes
from tracer.wire import Frame, ProtocolError

_TRACER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
"""wstrace's own package: its frames are left out of captured stacks."""


def stack_entry(function: Any) -> tuple[str, str, int] | None:
    """A function as a handshake-stack row: (qualified name, file, first line)."""
    function = getattr(function, "__wrapped__", function)
    code = getattr(function, "__code__", None)
    if code is None:
        return None
    return getattr(function, "__qualname__", code.co_name), code.co_filename, code.co_firstlineno


def code_attributes(function: Any) -> Attributes:
    """``code.*`` attributes of the installed function that does a stage's work."""
    function = getattr(function, "__wrapped__", function)
    code = getattr(function, "__code__", None)
    if code is None:
        return {}
    module = getattr(function, "__module__", "") or ""
    qualname = getattr(function, "__qualname__", code.co_name)
    return {
        vocab.CODE_FUNCTION_NAME: f"{module}.{qualname}" if module else qualname,
        vocab.CODE_FILE_PATH: code.co_filename,
        vocab.CODE_LINE_NUMBER: code.co_firstlineno,
    }


# --- What the hooks record ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SdkParts:
    """What an SDK tracer hands every span it makes: where finished spans go, and tags."""

    processor: Any
    resource: Any
    scope: Any
    new_span_id: Any
    new_trace_id: Any
    sampler: Any
    limits: Any = None
    """The provider's ``SpanLimits``, kept by every span built here."""
    max_attributes: int = 0
    """Attributes a span may have before ``limits`` need applying (0: always apply them)."""
    starters: Starters | None = None
    facts: FactTakers | None = None
    """Whether the processors take facts instead of spans (see :meth:`emit`)."""
    templates: bool = False
    """Whether ``limits`` leave a received message's family whole, so that it may go to
    processors that take facts as its values (:func:`tracer.export.message_facts.fits`)."""

    @classmethod
    def of(cls, tracer: Any) -> SdkParts | None:
        processor = getattr(tracer, "span_processor", None)
        generator = getattr(tracer, "id_generator", None)
        if processor is None or generator is None or not isinstance(tracer, sdk_trace.Tracer):
            return None  # a no-op or foreign tracer: use the API path
        sampler = getattr(tracer, "sampler", None)
        if sampler is None:
            return None
        return cls(
            processor,
            tracer.resource,
            getattr(tracer, "_instrumentation_scope", None),
            _span_ids(generator),
            generator.generate_trace_id,
            sampler,
            limits := getattr(tracer, "_span_limits", None),
            fast_attribute_limit(limits),
            Starters(processor),
            FactTakers(processor, tracer.resource, getattr(tracer, "_instrumentation_scope", None)),
            message_facts.fits(limits),
        )

    def root(
        self,
        name: str,
        start: int,
        attributes: Attributes | None,
        links: Sequence[Link],
        kind: SpanKind,
        inherit: bool = False,
    ) -> Any:
        """A new trace's root: sampled by the provider's sampler like any SDK root, or, with
        ``inherit``, as the trace its first link points to was (the connection's decision).
        ``attributes`` become the span's own: the caller made them for it."""
        trace_id = self.new_trace_id()
        trace_state = None
        if inherit:
            sampled = links[0].context.trace_flags.sampled
        else:
            result = self.sampler.should_sample(None, trace_id, name, kind, attributes, links)
            sampled = result.decision.is_sampled()
            trace_state = result.trace_state
            if sampled and result.attributes:
                # The SDK's samplers hand the span's own attributes back: merged in place
                # (they are the root's own), not copied.
                if attributes is None:
                    attributes = dict(result.attributes)
                else:
                    attributes.update(result.attributes)
        flags = _SAMPLED if sampled else _NOT_SAMPLED
        context = trace.SpanContext(trace_id, self.new_span_id(), False, flags, trace_state)
        if not sampled:
            return trace.NonRecordingSpan(context)
        # A root's attributes are made for it (a connection's or a message's): written to in
        # place, not copied, when the handshake adds the status code.
        span = PendingSpan(self, name, context, None, start, attributes, links, kind, owned=True)
        # Processors see a root start as they would from the SDK (children are made after
        # the fact: they start, for processors that act then, when they are emitted).
        self.processor.on_start(span, parent_context=None)
        span._started = True
        return span

    def emit(
        self,
        name: str,
        context: trace.SpanContext,
        parent: trace.SpanContext | None,
        start: int,
        end: int,
        attributes: Attributes,
        *,
        events: Sequence[sdk_trace.Event] = (),
        links: Sequence[Link] = (),
        kind: SpanKind = SpanKind.INTERNAL,
        status: Status | None = None,
        started: bool = False,
        members: tuple[Any, ...] = (),
        spans: int = 0,
        limited: bool = False,
    ) -> None:
        """Hand a finished span to the provider's processors: the one place spans are built
        without the SDK's tracer.  Unless it was ``started`` already, processors that act in
        ``on_start`` see it start first (see :mod:`tracer.recorder.promises`).

        ``members``: its finished children as a family's fact holds them, made while every
        processor took facts (a message's frames and sends, a chain's layers, within the
        ``SpanLimits`` already; ``spans``: how many spans they are with this one, if the
        caller counted them): they travel in its fact, as one family; if some processor needs
        spans by now, each goes as its own span first.  ``limited``: the span was cut to the
        ``SpanLimits`` already, its attributes and events carrying what was dropped (a member
        handed on after all): cut again only if a processor's ``on_start`` touched it.

        When every processor takes facts (:class:`~tracer.recorder.promises.FactTakers`:
        ``wstrace serve``'s export process), each gets the span's
        :mod:`~tracer.export.facts` fact and no ``ReadableSpan`` is built here: the export
        process builds it.  (A span whose own context is remote, which wstrace never makes,
        would go as a span: facts hold only local spans.)"""
        sink = self.facts
        takers = sink.takers() if sink is not None and not context[2] else None
        if members and takers is None:
            self.emit_members(context, members)
        if takers is None and not started and self.starters is not None and self.starters.any():
            span = PendingSpan(self, name, context, parent, start, attributes, links, kind)
            # A BoundedList is kept as it is: it counts what the limits dropped already.
            span._events = events if type(events) is BoundedList else (list(events) or None)
            span._status = status or _UNSET
            self.processor.on_start(span, parent_context=None)
            span._sdk = None  # it ends here: nobody may end it again
            attributes, status = span._attributes, span._status
            events = span._events if span._events is not None else ()
            name = span._name
            limited = False  # what on_start added must keep the limits too
        if (
            self.limits is not None
            and not limited
            and (len(attributes) > self.max_attributes or events or links)
        ):
            attributes, events, links = within_limits(self.limits, attributes, events, links)
        if takers is not None:
            fact = facts.make(
                sink.origin,  # type: ignore[union-attr]  # takers come from the sink
                name, context, parent, start, end, attributes, events, links, kind, status,
            )
            if members:
                fact = facts.family(fact, members, spans or 1 + facts.members_count(members))
            for take in takers:
                take(fact)
            return
        self.processor.on_end(
            sdk_trace.ReadableSpan(
                name=name,
                context=context,
                parent=parent,
                resource=self.resource,
                attributes=attributes,
                events=events,
                links=links,
                kind=kind,
                status=status or _UNSET,
                start_time=start,
                end_time=end,
                instrumentation_scope=self.scope,
            )
        )

    def fits_limits(self, attributes: Attributes) -> bool:
        """Whether a span with ``attributes`` and no events or links keeps the ``SpanLimits``
        as it is: nothing to cut, so its member is made as it is
        (:func:`~tracer.export.facts.plain_member`)."""
        return self.limits is None or len(attributes) <= self.max_attributes

    def member(
        self,
        span_id: int,
        name: str,
        start: int,
        end: int,
        attributes: Attributes,
        events: Sequence[sdk_trace.Event],
        status: Status | None,
        members: tuple[Any, ...],
        links: Sequence[Link] = (),
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> tuple[Any, ...]:
        """A finished span with ``members`` under it, as a family member that its parent's
        :meth:`emit` will carry (``members``), within the ``SpanLimits``."""
        if self.limits is not None and (len(attributes) > self.max_attributes or events or links):
            attributes, events, links = within_limits(self.limits, attributes, events, links)
        return facts.member(
            span_id, name, start, end, attributes, events, links, kind, status, members
        )

    def emit_members(self, parent: trace.SpanContext, members: tuple[Any, ...]) -> None:
        """Family members handed on one by one as spans of their own, each after its own
        members, under ``parent``: some processor needs spans after all."""
        for one in members:
            context = trace.SpanContext(parent[0], one[0], False, parent[3], parent[4])
            if one[-1]:
                self.emit_members(context, one[-1])
            name, start, end, attributes, events, links, kind, status = facts.member_parts(one)
            self.emit(name, context, parent, start, end, attributes, events=events, links=links,
                      kind=kind, status=status, limited=True)  # fmt: skip

    def families(self) -> bool:
        """Whether a span's finished children may travel in its fact
        (:class:`~tracer.recorder.family.FamilyRoot`): every processor takes facts, so none
        needs to see a child as a span of its own."""
        sink = self.facts
        return sink is not None and sink.takers() is not None

    def template_takers(self) -> tuple[Callable[[Any], None], ...] | None:
        """The processors' ``on_fact``, when a received message's family may go to them as a
        template (:mod:`tracer.export.message_facts`): every processor takes facts, and the
        ``SpanLimits`` cut nothing in the family.  ``None``: its spans are made here."""
        sink = self.facts
        return sink.takers() if self.templates and sink is not None else None

    def finished(
        self,
        name: str,
        parent: trace.SpanContext,
        start: int,
        end: int,
        attributes: Attributes | None,
        error: str | None = None,
    ) -> None:
        """A child of a recording span that is over already, straight to the processors:
        no span object to make and end first (frames, handshake stages)."""
        status = _UNSET
        if error is not None:
            attributes = {**(attributes or {}), vocab.ERROR_TYPE: error}
            status = Status(StatusCode.ERROR, error)
        self.emit(name, self.child_context(parent), parent, start, end, attributes or {},
                  status=status)  # fmt: skip

    def child_context(self, parent: trace.SpanContext) -> trace.SpanContext:
        """A new span's context under ``parent``: a new id, the parent's trace and sampling
        (as the SDK's default ``ParentBased`` sampler decides)."""
        # By index: a SpanContext is a tuple (trace id, span id, remote, flags, state, valid),
        # and its properties are a Python call each.
        new_span_id = self.new_span_id
        span_id = new_span_id()
        if parent[5] and new_span_id is _random_span_id:
            # What SpanContext() makes, without its checks (every span takes one): the trace
            # id is a valid parent's, and the SDK's generator (see _span_ids) makes no invalid
            # span id.
            return _new_context((parent[0], span_id, False, parent[3], parent[4], True))
        return trace.SpanContext(parent[0], span_id, False, parent[3], parent[4])


class _AfterTheFact(trace.Span):
    """What a span recorded after the fact holds while it is open, and everything that may
    touch it then (attributes, events, links, status, name)."""

    __slots__ = (
        "_attributes",
        "_events",
        "_kind",
        "_links",
        "_name",
        "_owned",
        "_start",
        "_status",
    )

    def __init__(
        self,
        name: str,
        start: int,
        attributes: Attributes | None,
        links: Sequence[Link] | None,
        kind: SpanKind,
        owned: bool = False,
    ) -> None:
        """``owned``: ``attributes`` was made for this span alone, and may be written to."""
        self._name = name
        self._start = start
        # Shared until written: many spans (a chain layer, a frame's code.*) start from a
        # mapping that never changes, and an open span's weight counts per idle connection.
        self._attributes = attributes if attributes is not None else {}
        self._owned = owned or attributes is None
        self._links: Sequence[Link] = tuple(links) if links else ()
        self._events: list[sdk_trace.Event] | None = None  # made by the first add_event
        self._kind = kind
        self._status = _UNSET

    def _own(self) -> dict[str, Any]:
        if not self._owned:
            attributes = self._attributes
            if type(attributes) is BoundedAttributes:  # cut to the limits already: still counts
                copy = BoundedAttributes(
                    attributes.maxlen, attributes, immutable=False,
                    max_value_len=attributes.max_value_len,
                )  # fmt: skip
                copy.dropped = attributes.dropped
                self._attributes = copy
            else:
                self._attributes = dict(attributes)
            self._owned = True
        return self._attributes

    def set_attribute(self, key: str, value: Any) -> None:
        self._own()[key] = value

    def set_attributes(self, attributes: Any) -> None:
        self._own().update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._events is None:
            self._events = []
        self._events.append(sdk_trace.Event(name, attributes, timestamp or time_ns()))

    def add_link(self, context: trace.SpanContext, attributes: Any = None) -> None:
        if context.is_valid:
            self._links = (*self._links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        if isinstance(status, Status):
            self._status = status
        else:
            self._status = Status(status, description)

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self.add_event("exception", {"exception.type": type(exception).__name__})


class PendingSpan(_AfterTheFact):
    """A child span recorded after the fact, finished into a ``ReadableSpan`` by :meth:`end`.

    It behaves as a span for everything that may touch it while it is open (attributes,
    events, status, being a parent in an OpenTelemetry context), and costs a small slotted
    object.  Its sampling follows its parent's, as the SDK's default ``ParentBased`` does.
    """

    __slots__ = ("_context", "_parent", "_sdk", "_started")

    def __init__(
        self,
        sdk: SdkParts,
        name: str,
        context: trace.SpanContext,
        parent: trace.SpanContext | None,
        start: int,
        attributes: Attributes | None,
        links: Sequence[Link] | None,
        kind: SpanKind,
        owned: bool = False,
    ) -> None:
        """``owned``: ``attributes`` was made for this span alone, and may be written to."""
        super().__init__(name, start, attributes, links, kind, owned)
        self._sdk = sdk
        self._parent = parent
        self._context = context
        self._started = False

    # What a span processor's on_start may read, as on the SDK's spans.
    name = property(lambda self: self._name)
    context = property(lambda self: self._context)
    parent = property(lambda self: self._parent)
    kind = property(lambda self: self._kind)
    start_time = property(lambda self: self._start)
    end_time = None
    status = property(lambda self: self._status)
    attributes = property(lambda self: MappingProxyType(self._attributes))
    events = property(lambda self: tuple(self._events or ()))
    links = property(lambda self: tuple(self._links))
    resource = property(lambda self: self._sdk.resource if self._sdk else None)
    instrumentation_scope = property(lambda self: self._sdk.scope if self._sdk else None)

    def get_span_context(self) -> trace.SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._sdk is not None

    def end(self, end_time: int | None = None) -> None:
        sdk = self._sdk
        if sdk is None:
            return  # ended already
        self._sdk = None
        sdk.emit(
            self._name,
            self._context,
            self._parent,
            self._start,
            end_time if end_time is not None else time_ns(),
            self._attributes,
            events=self._events or (),
            links=self._links,
            kind=self._kind,
            status=self._status,
            started=self._started,
        )


class AppSpan(PendingSpan):
    """``asgi.app``: a pending span whose attributes are its stage's shared ``code.*`` mapping
    and the connection's path, kept apart until it is written to or ends.

    It is open as long as its connection, idle or not: a mapping of its own from the start
    would weigh on every idle connection.  The path goes in where it always stood (after
    ``code.*``, before anything written later)."""

    __slots__ = ("_path",)

    def __init__(
        self, sdk: SdkParts, context: trace.SpanContext, parent: trace.SpanContext,
        start: int, code: Attributes, path: str,
    ) -> None:
        super().__init__(sdk, vocab.ASGI_APP, context, parent, start, code, None, SpanKind.INTERNAL)
        self._path: str | None = path

    attributes = property(
        lambda self: MappingProxyType(
            self._attributes if self._path is None else self._with_path()
        )
    )

    def _with_path(self) -> dict[str, Any]:
        return {**self._attributes, vocab.URL_PATH: self._path}

    def _own(self) -> dict[str, Any]:
        if self._path is not None:
            self._attributes = self._with_path()
            self._owned = True
            self._path = None
        return super()._own()

    def end(self, end_time: int | None = None) -> None:
        if self._sdk is not None:
            self._own()
        super().end(end_time)


_UNSET = facts.UNSET
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)
_ROOT_CONTEXT = trace.set_span_in_context(trace.INVALID_SPAN)


_new_context: Callable[[tuple[Any, ...]], trace.SpanContext] = partial(
    tuple.__new__, trace.SpanContext
)
"""A ``SpanContext`` from its six fields, as its constructor lays them out (see
:meth:`SdkParts.child_context`)."""

_random_bits = random.getrandbits
"""The module's generator, as the SDK's ``RandomIdGenerator`` uses it."""


def _span_ids(generator: Any) -> Callable[[], int]:
    """What makes span ids for ``generator``: the SDK's ``RandomIdGenerator`` made without its
    method call and lookups (a received message takes five ids), any other as it is."""
    if type(generator) is not sdk_trace.RandomIdGenerator:
        return generator.generate_span_id
    return _random_span_id


_random_span_id: Callable[[], int] = filter(
    None, iter(partial(_random_bits, 64), -1)
).__next__
"""``RandomIdGenerator.generate_span_id``: 64 random bits, never the invalid id 0 (a draw of
0 is passed over, as the SDK draws again), from the same generator.  The ``__next__`` of an
iterator made of C parts: a call of it runs no Python frame, and a received message takes
five ids."""


def frame_fields(frame: Frame, preview_redactor: Any = None) -> tuple[Any, ...]:
    """A frame's header fields as :func:`tracer.export.message_facts.frame_attributes` takes
    them after ``code``: the masking key as hex, the preview redacted and as text.  (A message
    template reads a frame without a preview into the same fields itself: see
    ``tracer.recorder.emit.templates``; the template tests hold the two to the same bytes.)"""
    key = frame.masking_key
    preview = frame.preview
    if preview is not None:
        if preview_redactor:
            preview = preview_redactor(preview)
        preview = preview.decode("utf-8", "backslashreplace")
    return (
        frame.fin, frame.rsv, frame.opcode, frame.masked, frame.payload_length,
        frame.header_length, frame.offset, None if key is None else key.hex(),
        frame.close_code, frame.close_reason, preview,
    )  # fmt: skip


def frame_attributes(
    frame: Frame, preview_redactor: Any = None, code: Attributes | None = None
) -> Attributes:
    """A frame's attributes, after the ``code.*`` ones of the function that handled it."""
    return message_facts.frame_attributes(code or {}, *frame_fields(frame, preview_redactor))


def error_event(error: ProtocolError) -> tuple[str, Attributes]:
    attributes: Attributes = {
        vocab.PROTOCOL_ERROR_KIND: error.kind,
        vocab.PROTOCOL_ERROR_OFFSET: error.offset,
    }
    if error.detail:
        attributes[vocab.PROTOCOL_ERROR_DETAIL] = error.detail
    return vocab.EVENT_PROTOCOL_ERROR, attributes


_SKIP = ("", "", 0)
_stack_rows: dict[tuple[Any, int], tuple[str, str, int]] = {}


def stack_event_attributes(stack: Sequence[tuple[str, str, int]]) -> Attributes:
    """A captured stack as the attributes of a ``wstrace.handshake.stack`` event."""
    functions, files, lines = zip(*stack, strict=True)
    return {vocab.STACK_FUNCTIONS: functions, vocab.STACK_FILES: files, vocab.STACK_LINES: lines}


_PROBE_DEPTH = 8
_stacks: weakref.WeakKeyDictionary[
    Any, dict[Any, tuple[Mapping[str, Any], tuple[Any, ...]]]
] = weakref.WeakKeyDictionary()
"""app -> (its innermost call sites and the server's send -> the stack's event attributes,
and the codes of those sites) for stacks already walked."""


def capture_stack(
    skip: int = 1,
    app: Any = None,
    stop: Collection[int] = (),
    innermost: tuple[str, str, int] | None = None,
) -> Mapping[str, Any]:
    """The live Python stack, outermost first, without wstrace's own frames, then
    ``innermost`` (the server's ``send``, entered but not yet running), as the attributes of a
    ``wstrace.handshake.stack`` event (:func:`stack_event_attributes`), read-only: they are
    shared.

    Coroutine frames chain through ``f_back`` while they run, so inside the server's
    ``send`` this walks the whole ASGI chain up to the event loop's ``_run``.

    Walking materialises a frame object for every coroutine on the way, and each stays alive
    as long as its coroutine: for the ASGI chain, the whole connection.  So with ``app`` (the
    ASGI app the connection runs), the innermost few call sites are read — up to the first
    frame running a code whose id is in ``stop`` (the innermost layer of the chain, most often
    the endpoint: the frames outside it live on, and are not touched) — and, if this app reached
    ``accept`` through them before, the attributes made then — the same code, hence the same
    rows — are returned without walking the rest.
    """
    frame = sys._getframe(skip)
    known = None
    probe: tuple[Any, ...] = ()
    codes: list[Any] = []
    if app is not None:
        # Call sites by the code's id: hashing a code object hashes its constants, on every
        # handshake.  The cache keeps the codes alive with the stack, so no id is reused.
        sites: list[Any] = [innermost]
        walked: Any = frame
        while walked is not None and len(sites) <= _PROBE_DEPTH:
            code = walked.f_code
            codes.append(code)
            sites.append((id(code), walked.f_lasti))
            if id(code) in stop:
                break
            walked = walked.f_back
        probe = tuple(sites)
        try:
            known = _stacks.get(app)
            if known is None:
                known = _stacks[app] = {}
        except TypeError:  # an app that cannot be weakly referenced: walk every time
            known = None
        if known is not None:
            seen = known.get(probe)
            if seen is not None:
                return seen[0]
    frames: list[tuple[str, str, int]] = []
    while frame is not None:
        code = frame.f_code
        key = (code, frame.f_lasti)
        row = _stack_rows.get(key)
        if row is None:
            # f_lineno decodes the line table: costly, and the same few hundred call sites
            # recur on every handshake, so each is worked out once.
            if code.co_filename.startswith(_TRACER_DIR):
                row = _SKIP
            else:
                row = (getattr(code, "co_qualname", code.co_name), code.co_filename, frame.f_lineno)
            if len(_stack_rows) < 4096:
                _stack_rows[key] = row
        if row is not _SKIP:
            frames.append(row)
        frame = frame.f_back
    frames.reverse()
    if innermost is not None:
        frames.append(innermost)
    # Read-only: every handshake through these call sites shares them.
    attributes = MappingProxyType(stack_event_attributes(frames) if frames else {})
    if known is not None and len(known) < 64:
        known[probe] = (attributes, tuple(codes))
    return attributes
