"""Families: a span finished together with the spans under it, handed on as one fact.

A received message ends after its frames, sends and broadcasts, all of them recorded after
the fact.  Where every span processor takes facts (``wstrace serve``'s export process, see
:mod:`tracer.export.pipeline`), those spans need no context, id or fact of their own in the
server: nothing there refers to them.  So the message is a :class:`FamilyRoot`, the spans made
under it are :class:`FamilyMember`\\s (leaves are made as plain tuples at once), and when the
message ends the whole family goes to the pipeline as one
:func:`~tracer.export.facts.family` fact.  The opening handshake (with its checks and its
answer) and the close (with its close frames) go the same way.  Members get their ids here as
they are made (every output writes a span under the same id), and their spans are built where
they are exported.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracer import vocab
from tracer.export import facts
from tracer.recorder.promises import within_limits
from tracer.recorder.records import Attributes
from tracer.recorder.spans import PendingSpan, SdkParts, _AfterTheFact

_UNSET = facts.UNSET
_INTERNAL = SpanKind.INTERNAL


class FamilyMember(_AfterTheFact):
    """A span made under a :class:`FamilyRoot`: it finishes with the family and travels in
    its fact, so it has an id but no span context in the server.  Nothing may take it as
    the parent of a span made elsewhere."""

    __slots__ = ("_end", "_id", "_members")

    def __init__(
        self,
        span_id: int,
        name: str,
        start: int,
        attributes: Attributes | None,
        links: Sequence[Link] | None,
        kind: SpanKind,
    ) -> None:
        # _AfterTheFact's fields, set here: one call less for every member of every message.
        self._name = name
        self._start = start
        self._attributes = attributes if attributes is not None else {}
        self._owned = attributes is None
        self._links = tuple(links) if links else ()
        self._events = None
        self._kind = kind
        self._status = _UNSET
        self._id = span_id
        self._end = 0
        self._members: list[Any] | None = None

    def member(
        self,
        sdk: SdkParts,
        name: str,
        start: int,
        attributes: Attributes | None,
        links: Sequence[Link] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> FamilyMember:
        """A span under this one, in the same family (its id made by ``sdk`` now, as the span
        would have had it outside a family)."""
        made = FamilyMember(sdk.new_span_id(), name, start, attributes, links, kind)
        if self._members is None:
            self._members = [made]
        else:
            self._members.append(made)
        return made

    def leaf(
        self, sdk: SdkParts, name: str, start: int, end: int, attributes: Attributes | None,
        error: str | None,
    ) -> None:
        """A finished span under this one with nothing under it (a frame): made as the
        family's fact holds it at once, its id by ``sdk``, within ``sdk``'s ``SpanLimits``."""
        span_id = sdk.new_span_id()
        status = None
        if error is not None:
            attributes = {**(attributes or {}), vocab.ERROR_TYPE: error}
            status = facts.fact_status(Status(StatusCode.ERROR, error))
        elif attributes is None:
            attributes = {}
        if not sdk.fits_limits(attributes):
            attributes = within_limits(sdk.limits, attributes, (), ())[0]
            if type(attributes) is not dict:
                attributes = facts.fact_attributes(attributes)
        made = facts.plain_member(span_id, name, start, end, status, attributes)
        if self._members is None:
            self._members = [made]
        else:
            self._members.append(made)

    def get_span_context(self) -> trace.SpanContext:
        return trace.INVALID_SPAN_CONTEXT  # no context: it lives inside its family's fact

    def is_recording(self) -> bool:
        return True

    def end(self, end_time: int | None = None) -> None:
        if not self._end:
            self._end = end_time if end_time is not None else time_ns()


class FamilyRoot(PendingSpan):
    """A span that is finished together with the spans under it and goes to the pipeline as
    one family fact (:func:`tracer.export.facts.family`): a received message with its frames,
    sends and broadcasts.  Made only when every processor takes facts
    (:meth:`~tracer.recorder.spans.SdkParts.families`); spans made under it are
    :class:`FamilyMember`\\s."""

    __slots__ = ("_members",)

    def __init__(
        self,
        sdk: SdkParts,
        name: str,
        context: trace.SpanContext,
        parent: trace.SpanContext | None,
        start: int,
        attributes: Attributes | None,
        kind: SpanKind,
    ) -> None:
        # PendingSpan's fields, set here: one call less (and its parent's) for every message.
        self._name = name
        self._start = start
        self._attributes = attributes if attributes is not None else {}
        self._owned = attributes is None
        self._links = ()
        self._events = None
        self._kind = kind
        self._status = _UNSET
        self._sdk = sdk
        self._parent = parent
        self._context = context
        self._started = False
        self._members: list[Any] | None = None

    member = FamilyMember.member
    leaf = FamilyMember.leaf

    def end(self, end_time: int | None = None) -> None:
        sdk = self._sdk
        if sdk is None:
            return  # ended already
        self._sdk = None
        emit_family(sdk, self, end_time if end_time is not None else time_ns())


FAMILY_TYPES = (FamilyRoot, FamilyMember)
"""Parents whose children join their family."""


def emit_family(sdk: SdkParts, root: FamilyRoot, end: int) -> None:
    """Hand a :class:`FamilyRoot` and its members to the processors as one family fact,
    each span within the provider's ``SpanLimits`` (as separate spans if the processors
    changed since the family started and some now need spans: see
    :meth:`~tracer.recorder.spans.SdkParts.emit`)."""
    counted = [1]
    members = _members_as_facts(sdk, root._members, end, counted)
    sdk.emit(
        root._name, root._context, root._parent, root._start, end, root._attributes,
        events=root._events or (), links=root._links, kind=root._kind, status=root._status,
        started=root._started, members=members, spans=counted[0],
    )  # fmt: skip


def _members_as_facts(
    sdk: SdkParts, members: list[Any] | None, end: int, counted: list[int]
) -> tuple[Any, ...]:
    """Members as a family fact holds them (leaves are made so already, see
    :meth:`FamilyMember.leaf`); one still open ends with the family."""
    if not members:
        return ()
    made = []
    for one in members:
        if type(one) is tuple:
            made.append(one)
            continue
        attributes = one._attributes
        under = _members_as_facts(sdk, one._members, end, counted) if one._members else ()
        stop = max(one._end or end, one._start)
        if (
            one._events
            or one._links
            or one._kind is not _INTERNAL
            or not sdk.fits_limits(attributes)
            or type(attributes) is not dict
        ):
            made.append(
                sdk.member(one._id, one._name, one._start, stop, attributes, one._events or (),
                           one._status, under, one._links, one._kind)
            )  # fmt: skip
        else:  # the usual member (a send, a broadcast): nothing to cut or convert
            status = None if one._status is _UNSET else facts.fact_status(one._status)
            made.append(
                facts.plain_member(one._id, one._name, one._start, stop, status, attributes, under)
            )
    counted[0] += len(made)
    return tuple(made)
