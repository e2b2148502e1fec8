"""The SDK's promises to span processors, kept for spans built already finished.

wstrace builds most spans after the fact (:meth:`SdkParts.emit`), without the SDK's tracer.
A processor must still see them as it would see the SDK's own spans:

- ``on_start`` before ``on_end``, on a span it may change (``BaggageSpanProcessor`` adds
  the baggage's entries as attributes there) — only when some processor does something in
  ``on_start``: the check is cached per set of processors, so the usual pipelines (batch,
  simple, wstrace's own) pay nothing;
- the provider's ``SpanLimits``: attribute count and length, event and link count, event
  and link attribute count; what goes over is dropped and counted on the span, as the SDK
  does.

And one promise wstrace makes itself: a span goes to the processors as a ``ReadableSpan``
unless every one of them said it would rather have the span's fact (:class:`FactTakers`,
:mod:`tracer.export.facts`), and then no ``ReadableSpan`` is built in the server at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link


def _noop(self: Any, span: Any, parent_context: Any = None) -> None:
    pass


def _documented_noop(self: Any, span: Any, parent_context: Any = None) -> None:
    """Nothing."""


_NOOP_CODE = {_noop.__code__.co_code, _documented_noop.__code__.co_code}


def _acts_on_start(processor: Any) -> bool:
    method = getattr(type(processor), "on_start", None)
    if method is None or method is SpanProcessor.on_start:
        return False
    code = getattr(method, "__code__", None)
    return code is None or code.co_code not in _NOOP_CODE


class Starters:
    """Whether a processor under the provider's multi-processor does anything in
    ``on_start``; worked out again only when the provider's list of processors changes."""

    __slots__ = ("_known", "_processor")

    def __init__(self, processor: Any) -> None:
        self._processor = processor
        self._known: tuple[Any, bool] = (None, False)
        """(the members it was worked out for, the answer): one tuple, replaced whole, so a
        thread never reads an answer with the members of another."""

    def any(self) -> bool:
        members = _members(self._processor)
        known = self._known
        if members is not known[0]:
            group = members if isinstance(members, tuple) else (members,)
            known = self._known = (members, any(_acts_on_start(member) for member in group))
        return known[1]


def _members(processor: Any) -> Any:
    """The provider's processors as a tuple that is replaced, not changed, when one is added."""
    return getattr(processor, "_span_processors", processor)


class FactTakers:
    """The ``on_fact`` of every span processor under the provider's multi-processor, when
    every one of them takes facts (``takes_facts()``: wstrace's
    :class:`~tracer.export.pipeline.ExportPipeline` in front of an export process) and none
    acts in ``on_start``; otherwise ``None``: spans are built here.  Worked out again only
    when the provider's list of processors changes.

    ``resource`` and ``scope`` are those of the tracer: facts carry them as a number
    (:attr:`origin`, registered the first time facts are taken)."""

    __slots__ = ("_known", "_processor", "_resource", "_scope", "origin")

    def __init__(self, processor: Any, resource: Any, scope: Any) -> None:
        self._processor = processor
        self._resource = resource
        self._scope = scope
        self._known: tuple[Any, Any, Any] = (None, None, None)
        """(the members it was worked out for, their takers, their batch takers): replaced
        whole, as in :class:`Starters`."""
        self.origin = -1

    def takers(self) -> tuple[Callable[[Any], None], ...] | None:
        # _members(), spelled out: asked at least twice for every message.
        processor = self._processor
        members = getattr(processor, "_span_processors", processor)
        known = self._known
        if members is not known[0]:
            known = self._work_out(members)
        return known[1]  # type: ignore[no-any-return]

    def batch_takers(self) -> tuple[Callable[[Sequence[Any]], None], ...] | None:
        """As :meth:`takers`, each taking a list of facts: the processor's ``on_facts`` (one
        hand-over for a connection's messages emitted together), or its ``on_fact`` for each."""
        members = _members(self._processor)
        known = self._known
        if members is not known[0]:
            known = self._work_out(members)
        return known[2]  # type: ignore[no-any-return]

    def _work_out(self, members: Any) -> tuple[Any, Any, Any]:
        group = members if isinstance(members, tuple) else (members,)
        takers = self._find(group)
        batch = None if takers is None else tuple(_batch_taker(member) for member in group)
        known = self._known = (members, takers, batch)
        return known

    def _find(self, group: tuple[Any, ...]) -> tuple[Callable[[Any], None], ...] | None:
        for member in group:
            takes = getattr(member, "takes_facts", None)
            if takes is None or not takes() or _acts_on_start(member):
                return None
        if not group:
            return None  # nobody to take them: the SDK's own behaviour, spans built
        if self.origin < 0:
            from tracer.export.facts import origin

            self.origin = origin(self._resource, self._scope)
        return tuple(member.on_fact for member in group)


def _batch_taker(member: Any) -> Callable[[Sequence[Any]], None]:
    """``member``'s ``on_facts``, or its ``on_fact`` for each fact of the list."""
    on_facts = getattr(member, "on_facts", None)
    if on_facts is not None:
        return on_facts  # type: ignore[no-any-return]
    on_fact = member.on_fact

    def each(facts: Sequence[Any]) -> None:
        for fact in facts:
            on_fact(fact)

    return each


def fast_attribute_limit(limits: Any) -> int:
    """Up to how many attributes a span needs no limit applied (0: always apply)."""
    if limits is None or limits.max_span_attribute_length is not None:
        return 0
    return limits.max_span_attributes if limits.max_span_attributes is not None else 1 << 30


def _bounded_attributes(limit: int | None, length: int | None, attributes: Any) -> Any:
    if not attributes or (length is None and (limit is None or len(attributes) <= limit)):
        return attributes
    bounded = BoundedAttributes(limit, attributes, immutable=False, max_value_len=length)
    bounded.dropped += getattr(attributes, "dropped", 0)  # cut before: what it lost counts
    return bounded


def within_limits(
    limits: Any, attributes: Any, events: Sequence[Event], links: Sequence[Link]
) -> tuple[Any, Sequence[Event], Sequence[Link]]:
    """``attributes``, ``events`` and ``links`` cut to ``limits`` (a ``SpanLimits``); as they
    are, without a copy, when nothing goes over (the usual case: the defaults are generous)."""
    length = limits.max_span_attribute_length
    attributes = _bounded_attributes(limits.max_span_attributes, length, attributes)
    if events:
        over = limits.max_events is not None and len(events) > limits.max_events
        each = limits.max_event_attributes
        if (
            over
            or length is not None
            or any(each is not None and len(e.attributes or ()) > each for e in events)
        ):
            bounded = BoundedList(limits.max_events)
            bounded.dropped = getattr(events, "dropped", 0)  # cut before: what it lost counts
            for event in events:
                attrs = _bounded_attributes(each, length, event.attributes or {})
                bounded.append(Event(event.name, attrs, event.timestamp))
            events = bounded
    if links:
        over = limits.max_links is not None and len(links) > limits.max_links
        each = limits.max_link_attributes
        if over or any(each is not None and len(li.attributes or ()) > each for li in links):
            bounded_links = BoundedList(limits.max_links)
            bounded_links.dropped = getattr(links, "dropped", 0)
            for link in links:
                attrs = _bounded_attributes(each, length, link.attributes or {})
                bounded_links.append(Link(link.context, attrs))
            links = bounded_links
    return attributes, events, links
