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

**Families.**  A received message is one span with its frames, sends and broadcasts under it,
all finished together when the app asks for the next message; a connection's ASGI layers
return one inside the other when it ends.  Handing the pipeline a fact for each span costs
the event loop that many times what one costs, so such a span goes as one *family* fact
(:func:`family`): its own fact, then

======================  ==================================================================
``spans``               how many spans the family stands for (itself and every member):
                        what the pipeline counts, drops and reports, span by span
``members``             its children, each ``(span_id, name, start, end, kind, status,
                        attributes, events, links, dropped, members)`` in the encodings
                        above; their trace, flags and state are the family's
======================  ==================================================================

Members get their ids in the server, as they are made (every output of the server writes the
same span under the same id), but no span context, fact or pipeline entry of their own:
:func:`expand` makes their facts where the spans are built, in the order the server would
have ended them, children first.

**Templates.**  A received message's family may come as a *template* instead: its head as
above, with the values of the spans' attributes where the attributes and members go, and one
more field saying which template it is (:mod:`tracer.export.message_facts`).  :func:`built`
makes the family fact of it; everything that reads a fact's members goes through it.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState

from tracer.export import message_facts

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
SPANS = len(Field)
"""In a family fact: how many spans it stands for."""
MEMBERS = SPANS + 1
"""In a family fact: its members."""
TEMPLATE = MEMBERS + 1
"""In a template fact: which template it is (see :func:`built`)."""
SAMPLED = int(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)
"""The status of a span nobody set one on (shared: it never changes)."""
_INTERNAL = SpanKind.INTERNAL
_KIND_VALUES = {kind: kind.value for kind in SpanKind}
"""A kind's int (an enum's ``value`` is a Python-level lookup each time)."""


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


def fact_attributes(attributes: Any) -> Any:
    """Attributes as a fact holds them: a dict, or ``(dict, dropped)`` past ``SpanLimits``."""
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
    if events or links or type(events) is BoundedList or type(links) is BoundedList:
        events, links, dropped = _events_and_links(events, links)
    else:  # the usual span: nothing to convert, nothing dropped
        events = links = ()
        dropped = None
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
        0 if kind is _INTERNAL else _KIND_VALUES[kind],
        None if status is None or status is UNSET else fact_status(status),
        attributes if type(attributes) is dict else fact_attributes(attributes),
        events or (),
        links or (),
        dropped,
    )


def _events_and_links(events: Sequence[Event], links: Sequence[Link]) -> tuple[Any, Any, Any]:
    """Events, links and what ``SpanLimits`` dropped of them, as a fact holds them."""
    # Counted before the emptiness tests: SpanLimits(max_events=0) leaves an empty list that
    # still says how many were dropped.
    events_dropped = events.dropped if type(events) is BoundedList else 0
    links_dropped = links.dropped if type(links) is BoundedList else 0
    dropped = (events_dropped, links_dropped) if events_dropped or links_dropped else None
    if events:
        events = tuple((e.name, e.timestamp, fact_attributes(e.attributes)) for e in events)
    if links:
        links = tuple(fact_link(link) for link in links)
    return events or (), links or (), dropped


def fact_link(link: Link) -> tuple[Any, ...]:
    """A link as a fact holds it: its context (:func:`link_context`), then its attributes."""
    return (*link_context(link.context), fact_attributes(link.attributes))


def member(
    span_id: int,
    name: str,
    start: int,
    end: int,
    attributes: Any,
    events: Sequence[Event],
    links: Sequence[Link],
    kind: SpanKind,
    status: Status | None,
    members: tuple[Any, ...],
) -> tuple[Any, ...]:
    """A family member (see the module's docstring), ``SpanLimits`` applied already."""
    if events.__class__ is tuple and links.__class__ is tuple and not (events or links):
        dropped = None  # none to convert, none dropped (a chain layer, a stage)
    else:
        events, links, dropped = _events_and_links(events, links)
    return (
        span_id,
        name,
        start,
        end,
        0 if kind is _INTERNAL else kind.value,
        None if status is None or status is UNSET else fact_status(status),
        attributes if type(attributes) is dict else fact_attributes(attributes),
        events,
        links,
        dropped,
        members,
    )


def check(fact: Fact, origins: dict[int, Any]) -> None:
    """Raise if ``fact`` is not a span fact :func:`rebuild` could build (with ``origins``): what
    an exporter that writes facts itself is given must be as sound as a span."""
    if len(fact) != SPANS or fact[Field.ORIGIN] not in origins:
        raise ValueError(f"not a span fact: {len(fact)} fields, origin {fact[Field.ORIGIN]!r}")
    _KINDS[fact[Field.KIND]]
    status = fact[Field.STATUS]
    if status is not None:
        StatusCode(status[0])
    if not (type(fact[Field.TRACE_ID]) is int and type(fact[Field.SPAN_ID]) is int):
        raise TypeError("span fact ids must be ints")


def member_parts(member: tuple[Any, ...]) -> tuple[str, int, int, Any, Any, Any, SpanKind, Status]:
    """``(name, start, end, attributes, events, links, kind, status)`` of a family member, as
    the SDK holds them (with what ``SpanLimits`` dropped): for handing it on as a span of its
    own after all."""
    _, name, start, end, kind, status, attributes, events, links, dropped, _ = member
    span_events, span_links = _rebuilt_events_and_links(events, links, dropped)
    return (
        name,
        start,
        end,
        _rebuilt_attributes(attributes),
        span_events,
        span_links,
        _KINDS[kind],
        _rebuilt_status(status),
    )


def members_count(members: tuple[Any, ...]) -> int:
    """How many spans ``members`` hold, theirs included (a chain's layers nest a dozen deep:
    walked without recursion)."""
    count = 0
    pending = [members]
    while pending:
        for one in pending.pop():
            count += 1
            if one[-1]:
                pending.append(one[-1])
    return count


def plain_member(
    span_id: int,
    name: str,
    start: int,
    end: int,
    status: Any,
    attributes: Any,
    members: tuple[Any, ...] = (),
) -> tuple[Any, ...]:
    """:func:`member` of an ``INTERNAL`` span with no events or links (a frame, a send, a
    broadcast), ``status`` and ``attributes`` as facts hold them already: the usual member,
    made without the conversions."""
    return (span_id, name, start, end, 0, status, attributes, (), (), None, members)


def family(fact: Fact, members: tuple[Any, ...], spans: int) -> Fact:
    """A span's fact with its ``members`` (from :func:`member`): ``spans`` spans in all."""
    return (*fact, spans, members)


def built(fact: Fact) -> Fact:
    """``fact`` itself, or the family fact a template fact stands for."""
    return message_facts.build(fact) if is_template(fact) else fact


def is_template(fact: Fact) -> bool:
    """Whether ``fact`` is a template (:mod:`~tracer.export.message_facts`); one of a kind
    this version does not build is refused (``ValueError``)."""
    if len(fact) <= TEMPLATE:
        return False
    if fact[TEMPLATE] != message_facts.TEMPLATE_MESSAGE:
        raise ValueError(f"unknown fact template {fact[TEMPLATE]!r}")
    return True


_TEMPLATE_LENGTH = TEMPLATE + 1
_LAST = operator.itemgetter(-1)
_SPANS_OF = operator.itemgetter(SPANS)
_ORIGIN_OF = operator.itemgetter(ORIGIN)


def all_templates(items: Sequence[Any]) -> bool:
    """Whether every one of ``items`` (at least one) is a message template, as
    :func:`is_template` says of each, worked out in C: the export path asks it of every chunk,
    which on a busy server is hundreds of templates."""
    try:
        return (
            set(map(type, items)) == {tuple}
            and set(map(len, items)) == {_TEMPLATE_LENGTH}
            and set(map(_LAST, items)) == {message_facts.TEMPLATE_MESSAGE}
        )
    except TypeError:  # something without a length
        return False


def templates_spans(templates: Sequence[Fact]) -> int:
    """How many spans ``templates`` (all templates: :func:`all_templates`) stand for."""
    return sum(map(_SPANS_OF, templates))


def templates_origins(templates: Sequence[Fact]) -> set[int]:
    """The origins ``templates`` (all templates: :func:`all_templates`) were made under."""
    return set(map(_ORIGIN_OF, templates))


def span_count(item: Any) -> int:
    """How many spans a pipeline item stands for: a family's count, else one."""
    return item[SPANS] if type(item) is tuple and len(item) > SPANS else 1


def expand(fact: Fact) -> list[Fact]:
    """A family's spans as plain facts, in the order they ended: children before their
    parent, itself last."""
    fact = built(fact)
    if len(fact) <= SPANS:
        return [fact]
    number, _, trace_id, span_id, _, flags, state = fact[:7]
    spans: list[Fact] = []

    def add(parent_id: int, members: tuple[Any, ...]) -> None:
        for (
            own_id, name, start, end, kind, status, attributes, events, links, dropped, own,
        ) in members:  # fmt: skip
            if own:
                add(own_id, own)
            spans.append(
                (number, name, trace_id, own_id, parent_id, flags, state, start, end, kind,
                 status, attributes, events, links, dropped)
            )  # fmt: skip

    add(span_id, fact[MEMBERS])
    spans.append(fact[:SPANS])
    return spans


def fact_status(status: Status | None) -> tuple[int, str | None] | None:
    """A status as a fact holds it."""
    if status is None or status is UNSET:
        return None
    code = status.status_code
    if code is StatusCode.UNSET and not status.description:
        return None
    return code.value, status.description


def link_context(context: SpanContext) -> tuple[int, int, bool, int, Any]:
    """A link's context as a fact holds it: ``(trace_id, span_id, remote, flags, state)``."""
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


def _rebuilt_events_and_links(events: Any, links: Any, dropped: Any) -> tuple[Any, Any]:
    """A fact's events and links as the SDK holds them, with what ``SpanLimits`` dropped."""
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
    return span_events, span_links


def _rebuilt_status(status: Any) -> Status:
    return UNSET if status is None else Status(StatusCode(status[0]), status[1])


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
    span_events, span_links = _rebuilt_events_and_links(events, links, dropped)
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
        status=_rebuilt_status(status),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


# --- Values pickle cannot carry ---------------------------------------------------------------


def plain(fact: Fact, value: Any) -> Fact:
    """``fact`` with every attribute value passed through ``value`` (a function that makes a
    value pickle can carry): the rare fallback when a chunk would not pickle."""
    fact = built(fact)

    def attrs(attributes: Any) -> Any:
        if attributes is None:
            return None
        if type(attributes) is tuple:
            return ({str(k): value(v) for k, v in attributes[0].items()}, attributes[1])
        return {str(k): value(v) for k, v in attributes.items()}

    def events_and_links(events: Any, links: Any) -> tuple[Any, Any]:
        return (
            tuple((n, t, attrs(a)) for n, t, a in events),
            tuple((*link[:5], attrs(link[5])) for link in links),
        )

    def plain_copy(item: tuple[Any, ...]) -> tuple[Any, ...]:
        span_id, name, start, end, kind, status, attributes, events, links, dropped, members = item
        return (span_id, name, start, end, kind, status, attrs(attributes),
                *events_and_links(events, links), dropped,
                tuple(plain_copy(m) for m in members))  # fmt: skip

    plain_fact = (*fact[: Field.ATTRIBUTES], attrs(fact[Field.ATTRIBUTES]),
                  *events_and_links(fact[Field.EVENTS], fact[Field.LINKS]),
                  fact[Field.DROPPED])  # fmt: skip
    if len(fact) > SPANS:
        return family(plain_fact, tuple(plain_copy(m) for m in fact[MEMBERS]), fact[SPANS])
    return plain_fact
