"""Span facts: a finished span as a plain tuple, for spans built where they are exported.

On ``wstrace serve``'s set-up (when exactly: :mod:`tracer.export.pipeline`, "Where spans are
built") nothing in the server reads a finished span of wstrace's: building a ``ReadableSpan``
there, only to take it apart again for the pipe to the export process, costs the event loop
twice.  So wstrace's one span-building place
(:meth:`tracer.recorder.spans.SdkParts.emit`) hands the pipeline a *fact* instead
(:func:`make`), and the export process builds the ``ReadableSpan`` from it (:func:`rebuild`)
before its exporters see it.  Ids, sampling, the provider's ``SpanLimits``: all decided in the
server, as before; the export process only assembles.

A fact is a tuple of ints, strings, dicts and tuples of those (one ``pickle.dumps`` of a
chunk of them runs in C from end to end), in the order of :class:`Field`:

======================  ==================================================================
``origin``              resource and instrumentation scope, as a number (:func:`origin`):
                        they travel once per export process, not per span
``name``                the span's name
``trace_id, span_id``   ints; the span's own context is never remote
``parent``              ``None`` (a root); the parent's span id, when it is in the same
                        trace, not remote, with the same flags and trace state (a child of
                        wstrace's); else ``(trace_id, span_id, remote, flags, state)``
``flags``               the trace flags as an int
``state``               the trace state as ``((key, value), ...)``, or ``None`` when empty
``start, end``          ns since the epoch
``kind``                ``SpanKind`` as its int value
``status``              ``None`` (unset), or ``(code, description)``
``attributes``          a dict (or ``None``); ``(dict, dropped)`` when ``SpanLimits``
                        dropped some
``events``              ``((name, timestamp, attributes), ...)``, attributes as above
``links``               ``((trace_id, span_id, remote, flags, state, attributes), ...)``
``dropped``             ``None``, or ``(events dropped, links dropped)`` by ``SpanLimits``
======================  ==================================================================
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState

Fact = tuple[Any, ...]


class Field(IntEnum):
    """Where each part of a span is in its fact."""

    ORIGIN = 0
    NAME = 1
    TRACE_ID = 2
    SPAN_ID = 3
    PARENT = 4
    FLAGS = 5
    STATE = 6
    START = 7
    END = 8
    KIND = 9
    STATUS = 10
    ATTRIBUTES = 11
    EVENTS = 12
    LINKS = 13
    DROPPED = 14


TRACE_ID = Field.TRACE_ID.value
FLAGS = Field.FLAGS.value
ORIGIN = Field.ORIGIN.value
SAMPLED = int(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)
"""The status of a span nobody set one on (shared: it never changes)."""
_INTERNAL = SpanKind.INTERNAL


# --- Origins: resource and scope, once per process --------------------------------------------

_origins: list[tuple[Any, Any]] = []
_origin_numbers: dict[tuple[int, int], int] = {}
_origins_lock = threading.Lock()


def origin(resource: Any, scope: Any) -> int:
    """The number that stands for ``(resource, scope)`` in facts.  Registered once per pair of
    objects (a tracer's); kept for the life of the process, as the provider keeps them."""
    key = (id(resource), id(scope))
    number = _origin_numbers.get(key)
    if number is None:
        with _origins_lock:
            number = _origin_numbers.get(key)
            if number is None:
                number = len(_origins)
                _origins.append((resource, scope))  # keeps both alive: their ids stay theirs
                _origin_numbers[key] = number
    return number


def origin_parts(number: int) -> tuple[Any, Any]:
    """``(resource, scope)`` of an origin number given by :func:`origin`."""
    return _origins[number]


# --- The server's half: a finished span as a fact ---------------------------------------------


def _state(state: Any) -> tuple[tuple[str, str], ...] | None:
    return tuple(state.items()) if state else None


def _attributes(attributes: Any) -> Any:
    kind = type(attributes)
    if kind is dict or attributes is None:
        return attributes
    if kind is BoundedAttributes:
        content = dict(attributes._dict)
        return (content, attributes.dropped) if attributes.dropped else content
    return dict(attributes)


def _parent(parent: Any, trace_id: int, flags: Any, state: Any) -> Any:
    """A parent as a fact holds it: its span id alone when it differs from the span's own
    context in nothing else (the usual case), else its whole context."""
    if parent is None:
        return None
    parent_state = parent[4]
    if (
        parent[0] == trace_id
        and not parent[2]
        and parent[3] == flags
        and (parent_state is state or _state(parent_state) == _state(state))
    ):
        return parent[1]
    return (parent[0], parent[1], parent[2], int(parent[3]), _state(parent_state))


def make(
    number: int,
    name: str,
    context: SpanContext,
    parent: SpanContext | None,
    start: int,
    end: int,
    attributes: Any,
    events: Sequence[Event],
    links: Sequence[Link],
    kind: SpanKind,
    status: Status | None,
) -> Fact:
    """The fact of a finished span (``SpanLimits`` applied already); ``number``: its
    :func:`origin`.  ``context`` must not be remote (wstrace's own spans never are)."""
    trace_id = context[0]
    flags = context[3]
    state = context[4]
    # Counted before the emptiness tests: SpanLimits(max_events=0) leaves an empty list that
    # still says how many were dropped.
    events_dropped = events.dropped if type(events) is BoundedList else 0
    links_dropped = links.dropped if type(links) is BoundedList else 0
    dropped = (events_dropped, links_dropped) if events_dropped or links_dropped else None
    if events:
        events = tuple((e.name, e.timestamp, _attributes(e.attributes)) for e in events)
    if links:
        links = tuple(
            (*_link_context(link.context), _attributes(link.attributes)) for link in links
        )
    return (
        number,
        name,
        trace_id,
        context[1],
        # A child of wstrace's: its parent's span id is enough (see _parent).
        parent[1]
        if parent is not None
        and parent[4] is state
        and parent[0] == trace_id
        and parent[3] == flags
        and not parent[2]
        else _parent(parent, trace_id, flags, state),
        int(flags),
        None if state is DEFAULT_TRACE_STATE or not state else tuple(state.items()),
        start,
        end,
        0 if kind is _INTERNAL else kind.value,
        None if status is None or status is UNSET else _status(status),
        attributes if type(attributes) is dict else _attributes(attributes),
        events or (),
        links or (),
        dropped,
    )


def _status(status: Status | None) -> tuple[int, str | None] | None:
    if status is None or status is UNSET:
        return None
    code = status.status_code
    if code is StatusCode.UNSET and not status.description:
        return None
    return code.value, status.description


def _link_context(context: SpanContext) -> tuple[int, int, bool, int, Any]:
    trace_id, span_id, remote, flags, state = context[:5]
    return trace_id, span_id, remote, int(flags), _state(state)


# --- The export process's half: the span again ------------------------------------------------

_KINDS = {kind.value: kind for kind in SpanKind}
_FLAGS = {0: TraceFlags(0), SAMPLED: TraceFlags(SAMPLED)}


def _flags(flags: int) -> TraceFlags:
    known = _FLAGS.get(flags)
    return known if known is not None else TraceFlags(flags)


def _trace_state(items: Any) -> TraceState:
    return TraceState(list(items)) if items else DEFAULT_TRACE_STATE


def _rebuilt_attributes(attributes: Any) -> Any:
    if type(attributes) is not tuple:
        return attributes
    content, dropped = attributes
    bounded = BoundedAttributes(attributes=content, immutable=False)
    bounded.dropped = dropped
    return bounded


def _bounded(items: list[Any], dropped: int) -> Any:
    if not dropped:
        return items
    bounded = BoundedList(None)
    bounded.extend(items)
    bounded.dropped = dropped
    return bounded


def _context(trace_id: int, span_id: int, remote: bool, flags: int, state: Any) -> SpanContext:
    return SpanContext(trace_id, span_id, remote, _flags(flags), _trace_state(state))


def rebuild(fact: Fact, origins: dict[int, tuple[Any, Any]]) -> ReadableSpan:
    """The ``ReadableSpan`` a fact stands for, with the resource and scope ``origins`` holds
    for its origin number: field for field the span the server would have built."""
    (
        number, name, trace_id, span_id, parent, flags, state, start, end, kind, status,
        attributes, events, links, dropped,
    ) = fact  # fmt: skip
    trace_flags = _flags(flags)
    trace_state = _trace_state(state)
    if parent is None:
        parent_context = None
    elif type(parent) is int:
        parent_context = SpanContext(trace_id, parent, False, trace_flags, trace_state)
    else:
        parent_context = _context(*parent)
    span_events: Any = ()
    span_links: Any = ()
    if events:
        span_events = [Event(n, _rebuilt_attributes(a), t) for n, t, a in events]
    if links:
        span_links = [
            Link(_context(*link[:5]), _rebuilt_attributes(link[5])) for link in links
        ]
    if dropped is not None:
        span_events = _bounded(list(span_events), dropped[0]) if dropped[0] else span_events
        span_links = _bounded(list(span_links), dropped[1]) if dropped[1] else span_links
    resource, scope = origins[number]
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, False, trace_flags, trace_state),
        parent=parent_context,
        resource=resource,
        attributes=_rebuilt_attributes(attributes),
        events=span_events,
        links=span_links,
        kind=_KINDS[kind],
        status=UNSET if status is None else Status(StatusCode(status[0]), status[1]),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


# --- Values pickle cannot carry ---------------------------------------------------------------


def plain(fact: Fact, value: Any) -> Fact:
    """``fact`` with every attribute value passed through ``value`` (a function that makes a
    value pickle can carry): the rare fallback when a chunk would not pickle."""

    def attrs(attributes: Any) -> Any:
        if attributes is None:
            return None
        if type(attributes) is tuple:
            return ({str(k): value(v) for k, v in attributes[0].items()}, attributes[1])
        return {str(k): value(v) for k, v in attributes.items()}

    events = tuple((n, t, attrs(a)) for n, t, a in fact[Field.EVENTS])
    links = tuple((*link[:5], attrs(link[5])) for link in fact[Field.LINKS])
    return (*fact[: Field.ATTRIBUTES], attrs(fact[Field.ATTRIBUTES]), events, links,
            fact[Field.DROPPED])
