"""A received message's family as values: its spans' attributes laid out in one place, and
built where the spans are exported.

A received message is one span with its frames, sends and broadcasts under it (a family, see
:mod:`tracer.export.facts`), under its connection or at the root of a trace of its own.  Their
attributes are mostly the same keys every time — the ``code.*`` of the function that handled
each stage, then a frame's header fields, a message's size and timings — and building a dict
for each of them is most of what making the family costs.  So on ``wstrace serve``'s set-up
the server hands the pipeline the values alone, as a *message template* fact (the layout
below), and the export process builds the attributes and the members with :func:`build`: the
same spans, field for field, as the server would have made.  Ids, times, sampling and trace
state are all decided in the server; the server sends a template only when the provider's
``SpanLimits`` cannot cut anything in a message's family (:func:`fits`), so the limits are
decided there too.

The layouts here (:data:`MESSAGE_LAYOUT`, :data:`FRAME_LAYOUT`, :data:`SEND_LAYOUT`,
:data:`BROADCAST_LAYOUT`) are the one layout of those spans' attributes.  They are laid out as
dicts (:func:`laid_out`: the server's emitters, for spans built in the server, and :func:`build`)
or, by the export process that writes OTLP/JSON, straight as text
(:func:`tracer.export.otlp_json.layout_text`).

A template fact is a family fact's head — ``origin`` to ``dropped``, with the message's
:data:`MessageValues` where the attributes go (a message in a trace of its own has its link to
the handshake among its links) — then its span count, its :data:`Parts` where the members go,
and :data:`TEMPLATE_MESSAGE`:

``Parts`` = ``(frames, children)``; ``frames``: the message's frames, each a :data:`FrameValues`;
``children``: in the order they were made, each a send
``(SEND, span_id, start, end, code, message_type, size, frames_count, connection_id, link,
error, frames)`` — ``link``: the link to the connection it went to when that is not the
message's own, as a fact holds a link (:func:`tracer.export.facts.fact_link`), else ``None`` —
or a broadcast
``(BROADCAST, span_id, start, end, connection_id, detected, sends)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tracer import vocab
from tracer.wire import opcode_name

Attributes = dict[str, Any]

TEMPLATE_MESSAGE = "ws.message"
"""The last field of a message template fact: what :func:`build` makes of it."""
SEND = 0
"""A child of a message template: a send to one connection."""
BROADCAST = 1
"""A child of a message template: a broadcast, with its sends."""

MessageValues = tuple[Any, ...]
"""``(code, message_type, size, index, connection_id, frames, queue_wait_ns, frames_dropped,
handler_ns, delivered_ns, sends_dropped, overflowed)``: :func:`message_attributes`'
arguments."""
FrameValues = tuple[Any, ...]
"""``(span_id, start, end, code, fin, rsv, opcode, masked, payload_length, header_length,
offset, masking_key, close_code, close_reason, preview)``: a frame's span."""
Parts = tuple[tuple[FrameValues, ...], tuple[tuple[Any, ...], ...]]

MOST_ATTRIBUTES = 32
"""More attributes than any span of a message's family has (a frame has at most 15): a
provider allowing this many needs no cut on any of them."""

_ERROR = 2
"""``StatusCode.ERROR``'s value, as a fact holds a status."""
_INTERNAL = 0
_SPAN_ID = 3
_HEAD = 11
"""Fields of a fact before its attributes (see :class:`tracer.export.facts.Field`)."""
_SPANS = 15
_PARTS = 16


Layout = tuple[str, ...]
"""The attributes of one kind of span after its ``code.*`` ones: their keys, in order.  A
span's values come in the same order (:func:`message_values` …); a value that is ``None`` is
left out, as the SDK leaves out an attribute set to ``None``."""

MESSAGE_LAYOUT: Layout = (
    vocab.WS_MESSAGE_TYPE, vocab.WS_MESSAGE_SIZE, vocab.MESSAGE_INDEX, vocab.CONNECTION_ID,
    vocab.WS_MESSAGE_FRAMES, vocab.QUEUE_WAIT_NS, vocab.FRAMES_DROPPED, vocab.HANDLER_NS,
    vocab.DELIVERED_NS, vocab.SENDS_DROPPED, vocab.MESSAGES_OVERFLOWED,
)  # fmt: skip
"""``ws.message.receive``."""
FRAME_LAYOUT: Layout = (
    vocab.WS_FIN, vocab.WS_RSV, vocab.WS_OPCODE, vocab.WS_OPCODE_NAME, vocab.WS_MASK,
    vocab.WS_PAYLOAD_LENGTH, vocab.WS_HEADER_LENGTH, vocab.FRAME_OFFSET, vocab.WS_MASKING_KEY,
    vocab.WS_CLOSE_CODE, vocab.WS_CLOSE_REASON, vocab.WS_PAYLOAD_PREVIEW,
)  # fmt: skip
"""``ws.frame.receive`` and ``ws.frame.send`` (and a frame as an event)."""
SEND_LAYOUT: Layout = (
    vocab.WS_MESSAGE_TYPE, vocab.WS_MESSAGE_SIZE, vocab.WS_MESSAGE_FRAMES, vocab.CONNECTION_ID,
    vocab.ERROR_TYPE,
)  # fmt: skip
"""``ws.message.send`` (``error.type``: why it failed)."""
BROADCAST_LAYOUT: Layout = (
    vocab.BROADCAST_RECIPIENTS, vocab.CONNECTION_ID, vocab.BROADCAST_DETECTED,
)  # fmt: skip
"""``ws.broadcast``."""
NO_CODE: Attributes = {}
"""A span with no ``code.*`` attributes."""

AttributeMaker = Callable[[Attributes, Layout, tuple[Any, ...]], Any]
"""What makes a span's attributes of its ``code.*``, its layout and its values: a dict
(:func:`laid_out`), or the text the OTLP/JSON writer writes
(:func:`tracer.export.otlp_json.layout_text`)."""


def laid_out(code: Attributes, layout: Layout, values: tuple[Any, ...]) -> Attributes:
    """A span's attributes as a dict: its ``code.*``, then ``values`` under ``layout``'s keys
    (those that are not ``None``)."""
    attributes: Attributes = {**code}
    for key, value in zip(layout, values, strict=True):
        if value is not None:
            attributes[key] = value
    return attributes


def message_values(
    message_type: str,
    size: int,
    index: int,
    connection_id: int,
    frames: int | None,
    queue_wait_ns: int,
    frames_dropped: int,
    handler_ns: int,
    delivered_ns: int,
    sends_dropped: int,
    overflowed: bool,
) -> tuple[Any, ...]:
    """``ws.message.receive``'s values in :data:`MESSAGE_LAYOUT`'s order; ``frames`` is
    ``None`` for a handling with no received message (nothing came in, so no frames and no
    queue wait); ``overflowed``: a message past its connection's ``max_messages_per_trace``,
    in a trace of its own."""
    no_message = frames is None
    return (message_type, size, index, connection_id, frames,
            None if no_message else queue_wait_ns, None if no_message else frames_dropped or None,
            handler_ns, delivered_ns, sends_dropped or None, overflowed or None)  # fmt: skip


def message_attributes(code: Attributes, *values: Any) -> Attributes:
    """``ws.message.receive``'s attributes (``values``: :func:`message_values`' arguments)."""
    return laid_out(code, MESSAGE_LAYOUT, message_values(*values))


def frame_values(
    fin: bool,
    rsv: int,
    opcode: int,
    masked: bool,
    payload_length: int,
    header_length: int,
    offset: int,
    masking_key: str | None,
    close_code: int | None,
    close_reason: str | None,
    preview: str | None,
) -> tuple[Any, ...]:
    """A frame's values in :data:`FRAME_LAYOUT`'s order: the masking key as hex, the payload
    preview as text (redacted already)."""
    return (fin, rsv, opcode, opcode_name(opcode), masked, payload_length, header_length,
            offset, masking_key, close_code, close_reason, preview)  # fmt: skip


def frame_attributes(code: Attributes, *values: Any) -> Attributes:
    """A frame's attributes, after the ``code.*`` ones of the function that handled it
    (``values``: :func:`frame_values`' arguments)."""
    return laid_out(code, FRAME_LAYOUT, frame_values(*values))


def send_attributes(
    code: Attributes, message_type: str, size: int, frames: int, connection_id: int
) -> Attributes:
    """``ws.message.send``'s attributes (``connection_id``: the connection it went to)."""
    return laid_out(code, SEND_LAYOUT, (message_type, size, frames, connection_id, None))


def broadcast_attributes(recipients: int, connection_id: int, detected: str) -> Attributes:
    """``ws.broadcast``'s attributes (``detected``: ``explicit`` or ``automatic``)."""
    return laid_out(NO_CODE, BROADCAST_LAYOUT, (recipients, connection_id, detected))


def fits(limits: Any) -> bool:
    """Whether ``limits`` (a ``SpanLimits``, or ``None``) leave every span of a message's
    family whole: no attribute length limit, room for :data:`MOST_ATTRIBUTES`, and for a send's
    one link with its one attribute."""
    if limits is None:
        return True
    count = limits.max_span_attributes
    return (
        limits.max_span_attribute_length is None
        and (count is None or count >= MOST_ATTRIBUTES)
        and (limits.max_links is None or limits.max_links >= 1)
        and (limits.max_link_attributes is None or limits.max_link_attributes >= 1)
    )


# --- The export process's half ----------------------------------------------------------------


def build(template: tuple[Any, ...]) -> tuple[Any, ...]:
    """The family fact a message template stands for (see the module's docstring): a plain
    span fact when nothing was made under the message."""
    frames, children = template[_PARTS]
    members = [_member(_frame_parts(vocab.WS_FRAME_RECEIVE, frame)) for frame in frames]
    for child in children:
        members.append(_send_member(child) if child[0] == SEND else _broadcast_member(child))
    fact = message_fact(template, laid_out)
    return (*fact, template[_SPANS], tuple(members)) if members else fact


def message_fact(template: tuple[Any, ...], attributes: AttributeMaker) -> tuple[Any, ...]:
    """The plain span fact of a template's message, its attributes made by ``attributes``."""
    code, *values = template[_HEAD]
    laid = attributes(code, MESSAGE_LAYOUT, message_values(*values))
    return (*template[:_HEAD], laid, *template[_HEAD + 1 : _SPANS])


SpanParts = tuple[Any, ...]
"""One span under a template's message: ``(span_id, name, start, end, status, links, code,
layout, values)``, its attributes still to be laid out."""


def spans_below(template: tuple[Any, ...]) -> list[tuple[int, SpanParts]]:
    """``(parent span id, parts)`` of each span under a template's message, in the order
    :func:`tracer.export.facts.expand` gives the family's spans (children before their
    parent): for writing them out without making the family first."""
    message_id = template[_SPAN_ID]
    frames, children = template[_PARTS]
    below = [(message_id, _frame_parts(vocab.WS_FRAME_RECEIVE, frame)) for frame in frames]
    for child in children:
        if child[0] == SEND:
            _send_below(below, message_id, child)
        else:
            parts, sends = _broadcast_parts(child)
            for send in sends:
                _send_below(below, parts[0], send)
            below.append((message_id, parts))
    return below


def _send_below(
    below: list[tuple[int, SpanParts]], parent_id: int, values: tuple[Any, ...]
) -> None:
    parts, frames = _send_parts(values)
    below.extend((parts[0], _frame_parts(vocab.WS_FRAME_SEND, frame)) for frame in frames)
    below.append((parent_id, parts))


def _frame_parts(name: str, values: FrameValues) -> SpanParts:
    span_id, start, end, code = values[:4]
    return (span_id, name, start, max(end, start), None, (), code, FRAME_LAYOUT,
            frame_values(*values[4:]))  # fmt: skip


def _send_parts(values: tuple[Any, ...]) -> tuple[SpanParts, tuple[FrameValues, ...]]:
    _, span_id, start, end, code, message_type, size, count, connection_id, link, error, frames = (
        values
    )
    status = None if error is None else (_ERROR, error)
    links = () if link is None else (link,)
    laid = (message_type, size, count, connection_id, error)
    return (span_id, vocab.WS_MESSAGE_SEND, start, max(end, start), status, links, code,
            SEND_LAYOUT, laid), frames  # fmt: skip


def _broadcast_parts(values: tuple[Any, ...]) -> tuple[SpanParts, tuple[tuple[Any, ...], ...]]:
    _, span_id, start, end, connection_id, detected, sends = values
    last = max(send[3] for send in sends) if sends else end
    laid = (len(sends), connection_id, detected)
    return (span_id, vocab.WS_BROADCAST, start, max(end, start, last), None, (), NO_CODE,
            BROADCAST_LAYOUT, laid), sends  # fmt: skip


def _member(parts: SpanParts, members: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    span_id, name, start, end, status, links, code, layout, values = parts
    laid = laid_out(code, layout, values)
    return (span_id, name, start, end, _INTERNAL, status, laid, (), links, None, members)


def _send_member(values: tuple[Any, ...]) -> tuple[Any, ...]:
    parts, frames = _send_parts(values)
    return _member(parts, tuple(_member(_frame_parts(vocab.WS_FRAME_SEND, f)) for f in frames))


def _broadcast_member(values: tuple[Any, ...]) -> tuple[Any, ...]:
    parts, sends = _broadcast_parts(values)
    return _member(parts, tuple(_send_member(send) for send in sends))
