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

The attribute functions here (:func:`message_attributes`, :func:`frame_attributes`,
:func:`send_attributes`, :func:`broadcast_attributes`) are the one layout of those spans: the
server's emitters call them for spans built in the server as well.

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
_HEAD = 11
"""Fields of a fact before its attributes (see :class:`tracer.export.facts.Field`)."""
_SPANS = 15
_PARTS = 16


def message_attributes(
    code: Attributes,
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
) -> Attributes:
    """``ws.message.receive``'s attributes; ``frames`` is ``None`` for a handling with no
    received message (nothing came in, so no frames and no queue wait); ``overflowed``: a
    message past its connection's ``max_messages_per_trace``, in a trace of its own."""
    attributes: Attributes = {
        **code,
        vocab.WS_MESSAGE_TYPE: message_type,
        vocab.WS_MESSAGE_SIZE: size,
        vocab.MESSAGE_INDEX: index,
        vocab.CONNECTION_ID: connection_id,
    }
    if frames is not None:
        attributes[vocab.WS_MESSAGE_FRAMES] = frames
        attributes[vocab.QUEUE_WAIT_NS] = queue_wait_ns
        if frames_dropped:
            attributes[vocab.FRAMES_DROPPED] = frames_dropped
    attributes[vocab.HANDLER_NS] = handler_ns
    attributes[vocab.DELIVERED_NS] = delivered_ns
    if sends_dropped:
        attributes[vocab.SENDS_DROPPED] = sends_dropped
    if overflowed:
        attributes[vocab.MESSAGES_OVERFLOWED] = True
    return attributes


def frame_attributes(
    code: Attributes,
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
) -> Attributes:
    """A frame's attributes, after the ``code.*`` ones of the function that handled it; the
    masking key as hex, the payload preview as text (redacted already)."""
    attributes: Attributes = {
        **code,
        vocab.WS_FIN: fin,
        vocab.WS_RSV: rsv,
        vocab.WS_OPCODE: opcode,
        vocab.WS_OPCODE_NAME: opcode_name(opcode),
        vocab.WS_MASK: masked,
        vocab.WS_PAYLOAD_LENGTH: payload_length,
        vocab.WS_HEADER_LENGTH: header_length,
        vocab.FRAME_OFFSET: offset,
    }
    if masking_key is not None:
        attributes[vocab.WS_MASKING_KEY] = masking_key
    if close_code is not None:
        attributes[vocab.WS_CLOSE_CODE] = close_code
    if close_reason is not None:
        attributes[vocab.WS_CLOSE_REASON] = close_reason
    if preview is not None:
        attributes[vocab.WS_PAYLOAD_PREVIEW] = preview
    return attributes


def send_attributes(
    code: Attributes, message_type: str, size: int, frames: int, connection_id: int
) -> Attributes:
    """``ws.message.send``'s attributes (``connection_id``: the connection it went to)."""
    return {
        **code,
        vocab.WS_MESSAGE_TYPE: message_type,
        vocab.WS_MESSAGE_SIZE: size,
        vocab.WS_MESSAGE_FRAMES: frames,
        vocab.CONNECTION_ID: connection_id,
    }


def broadcast_attributes(recipients: int, connection_id: int, detected: str) -> Attributes:
    """``ws.broadcast``'s attributes (``detected``: ``explicit`` or ``automatic``)."""
    return {
        vocab.BROADCAST_RECIPIENTS: recipients,
        vocab.CONNECTION_ID: connection_id,
        vocab.BROADCAST_DETECTED: detected,
    }


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
    members = [_frame(vocab.WS_FRAME_RECEIVE, frame) for frame in frames]
    members.extend(
        _send(child) if child[0] == SEND else _broadcast(child) for child in children
    )
    fact = (*template[:_HEAD], message_attributes(*template[_HEAD]), *template[_HEAD + 1 : _SPANS])
    return (*fact, template[_SPANS], tuple(members)) if members else fact


def _frame(name: str, values: FrameValues) -> tuple[Any, ...]:
    span_id, start, end = values[:3]
    return (span_id, name, start, max(end, start), _INTERNAL, None,
            frame_attributes(*values[3:]), (), (), None, ())  # fmt: skip


def _send(values: tuple[Any, ...]) -> tuple[Any, ...]:
    _, span_id, start, end, code, message_type, size, count, connection_id, link, error, frames = (
        values
    )
    attributes = send_attributes(code, message_type, size, count, connection_id)
    status = None
    if error is not None:
        attributes[vocab.ERROR_TYPE] = error
        status = (_ERROR, error)
    links = () if link is None else (link,)
    members = tuple(_frame(vocab.WS_FRAME_SEND, frame) for frame in frames)
    return (span_id, vocab.WS_MESSAGE_SEND, start, max(end, start), _INTERNAL, status,
            attributes, (), links, None, members)  # fmt: skip


def _broadcast(values: tuple[Any, ...]) -> tuple[Any, ...]:
    _, span_id, start, end, connection_id, detected, sends = values
    last = max(send[3] for send in sends) if sends else end
    return (span_id, vocab.WS_BROADCAST, start, max(end, start, last), _INTERNAL, None,
            broadcast_attributes(len(sends), connection_id, detected), (), (), None,
            tuple(_send(send) for send in sends))  # fmt: skip
