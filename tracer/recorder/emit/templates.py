"""A received message as a template: the values of its spans, with their ids, handed to
processors that take facts; the export process builds the spans
(:mod:`tracer.export.message_facts`).  What it makes is, field for field, the family that
:func:`tracer.recorder.emit.messages.emit_spans` makes of the same handling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from tracer import vocab
from tracer._contain import errors
from tracer.export import facts, message_facts
from tracer.export.message_facts import FrameValues, MessageValues
from tracer.recorder.emit.fan_out import sends_made
from tracer.recorder.emit.placement import UNDER_CONNECTION, handshake_link, recipient_link
from tracer.recorder.records import Attributes, FrameRecord, Handling, SendRecord
from tracer.recorder.spans import frame_fields

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord

NO_CODE: Attributes = {}
"""A stage without ``code.*`` attributes (shared by every span that has none: never written,
only spread into new mappings)."""
_SERVER = SpanKind.SERVER.value
# Read once: a module attribute looked up on every message is a dict lookup each time.
_FRAMES_SPANS = vocab.FRAMES_SPANS
_FRAMES_EVENTS = vocab.FRAMES_EVENTS
_FRAME_RECEIVE = vocab.WS_FRAME_RECEIVE
_MESSAGE_RECEIVE = vocab.WS_MESSAGE_RECEIVE
_TEMPLATE_MESSAGE = message_facts.TEMPLATE_MESSAGE


def template_takers(
    record: ConnectionRecord, handling: Handling, placement: int
) -> tuple[Callable[[Any], None], ...] | None:
    """Where a received message goes as a template (:mod:`tracer.export.message_facts`), if it
    may: the SDK's spans, every processor taking facts, ``SpanLimits`` that cut nothing in the
    family, frames as spans (or none) on every connection it touched; and either under its
    connection, still open, or in a trace of its own sampled as its connection was (no
    sampler to ask: it would be given the attributes)."""
    takers = _collecting.takers  # a batch being kept: the connection was asked already
    if takers is None:
        takers = _connection_takers(record)
        if takers is None:
            return None
    config = record.config
    if placement == UNDER_CONNECTION:
        if not record.span.is_recording():
            return None
    elif config.message_sampling != "inherit" or not record.recording:
        return None
    for send in handling.sends:
        if send.recipient.config is not config:
            return None
    for _, _, sends in handling.explicit_broadcasts:
        for send in sends:
            if send.recipient.config is not config:
                return None
    return takers


def _connection_takers(record: ConnectionRecord) -> tuple[Callable[[Any], None], ...] | None:
    """Where ``record``'s message templates go, if its messages may go as templates at all:
    the SDK's spans, processors that all take facts, ``SpanLimits`` that cut nothing in a
    family, frames as spans or none."""
    sdk = record.recorder.sdk
    if sdk is None or record.config.frames == _FRAMES_EVENTS:
        return None
    return sdk.template_takers()


class _Collecting(threading.local):
    """Where the templates of the batch being emitted on this thread go (see :func:`collect`)."""

    takers: tuple[Callable[[Any], None], ...] | None = None


_collecting = _Collecting()


def collect(record: ConnectionRecord) -> list[Any] | None:
    """From now on ``record``'s message templates are kept (in the list returned), to be
    handed to the processors together by :func:`hand_over`: one hand-over for a connection's
    batch of messages (:mod:`~tracer.recorder.emit.batches`), not one for each.  ``None``:
    they go as they are made (no processor takes facts, or a batch is being kept already)."""
    if _collecting.takers is not None or _connection_takers(record) is None:
        return None
    made: list[Any] = []
    _collecting.takers = (made.append,)
    return made


def hand_over(record: ConnectionRecord, made: list[Any] | None) -> None:
    """Hand what :func:`collect` kept to the processors, and stop keeping."""
    if made is None:
        return
    _collecting.takers = None
    sdk = record.recorder.sdk
    if made and sdk is not None and sdk.facts is not None:
        try:
            for take in sdk.facts.batch_takers() or ():
                take(made)
        except Exception as exc:
            errors.record("recorder.emit_message", exc)


def emit_template(
    record: ConnectionRecord,
    handling: Handling,
    values: MessageValues,
    start: int,
    end: int,
    placement: int,
    takers: tuple[Callable[[Any], None], ...],
) -> None:
    """Hand ``takers`` a received message as a template fact: the values of its spans, with
    ids made here in the order its spans would have been made (``placement``: under its
    connection, or in a trace of its own).

    It runs once for every message a connection receives: the frames and sends are read
    straight into their values, with the count of spans kept as they are made."""
    sdk = record.recorder.sdk
    assert sdk is not None and sdk.facts is not None  # see template_takers
    new_id = sdk.new_span_id
    trace_id, parent, flags, state, link, frames_on, code, redactor = (
        record.template_head or _template_head(record)
    )
    if placement == UNDER_CONNECTION:
        links: tuple[Any, ...] = ()
    else:  # its own trace, sampled as the connection's, linked to it (see SdkParts.root)
        trace_id, parent, state, links = sdk.new_trace_id(), None, None, (link,)
    span_id = new_id()
    message = handling.message
    frames: tuple[FrameValues, ...] = ()
    if frames_on and message is not None:
        made = message.frames
        frames = (
            (_one_frame(new_id, made[0], code, redactor),)  # most messages: one frame
            if len(made) == 1
            else _frame_values(new_id, made, code, redactor)
        )
    spans = 1 + len(frames)
    children = []
    for sends, first, last, detected in sends_made(handling, record):
        if detected is None:
            child = _send_values(new_id, sends[0], record, frames_on)
            spans += 1 + len(child[-1])
        else:
            child = _broadcast_values(new_id, record, first, last, sends, detected, frames_on)
            spans += 1
            for send in child[-1]:
                spans += 1 + len(send[-1])
        children.append(child)
    fact = (
        sdk.facts.origin, _MESSAGE_RECEIVE, trace_id, span_id, parent, flags, state,
        start, end if end > start else start, _SERVER, None, values, (), links, None, spans,
        (frames, tuple(children)), _TEMPLATE_MESSAGE,
    )  # fmt: skip
    for take in takers:
        take(fact)


def _template_head(record: ConnectionRecord) -> tuple[Any, ...]:
    """What every message template of ``record`` takes of its connection, as a fact holds it:
    ``(trace_id, span_id, flags, state, link, frames_on, code, redactor)`` — its trace and span
    (a message's parent under it), trace flags and state, the link from a message in a trace
    of its own; whether its frames are spans, their ``code.*`` and the payload redactor.  Made
    at its first template, kept on the record: none of it changes while it lives."""
    connection = record.span_context
    trace_id, span_id, _, flags, state = facts.link_context(connection)
    config = record.config
    head = (
        trace_id, span_id, flags, state, facts.fact_link(handshake_link(connection)),
        config.frames == _FRAMES_SPANS, record.ws_code.get(_FRAME_RECEIVE, NO_CODE),
        config.redact_payload,
    )  # fmt: skip
    record.template_head = head
    return head


def _frame_values(
    new_id: Callable[[], int], frames: Sequence[FrameRecord], code: Attributes, redactor: Any
) -> tuple[FrameValues, ...]:
    return tuple([_one_frame(new_id, record, code, redactor) for record in frames])


def _one_frame(
    new_id: Callable[[], int], record: FrameRecord, code: Attributes, redactor: Any
) -> FrameValues:
    frame = record.frame
    if frame.preview is not None:  # captured payload: redacted, as text
        return (new_id(), record.start, record.end, code, *frame_fields(frame, redactor))
    key = frame.masking_key
    return (
        new_id(), record.start, record.end, code, frame.fin, frame.rsv, frame.opcode,
        frame.masked, frame.payload_length, frame.header_length, frame.offset,
        None if key is None else key.hex(), frame.close_code, frame.close_reason, None,
    )  # fmt: skip


def _send_values(
    new_id: Callable[[], int], send: SendRecord, owner: ConnectionRecord, frames_on: bool
) -> tuple[Any, ...]:
    recipient = send.recipient
    span_id = new_id()
    frames = ()
    if frames_on:
        code = recipient.ws_code.get(vocab.WS_FRAME_SEND, NO_CODE)
        made, redactor = send.frames, recipient.config.redact_payload
        frames = (
            (_one_frame(new_id, made[0], code, redactor),)  # most sends: one frame
            if len(made) == 1
            else _frame_values(new_id, made, code, redactor)
        )
    return (
        message_facts.SEND, span_id, send.start, send.end,
        recipient.ws_code.get(vocab.WS_MESSAGE_SEND, NO_CODE), send.message_type, send.size,
        len(send.frames), recipient.id,
        None if recipient is owner else facts.fact_link(recipient_link(recipient.span_context)),
        send.error, frames,
    )  # fmt: skip


def _broadcast_values(
    new_id: Callable[[], int],
    owner: ConnectionRecord,
    start: int,
    end: int,
    sends: list[SendRecord],
    detected: str,
    frames_on: bool,
) -> tuple[Any, ...]:
    span_id = new_id()
    if len(sends) == 1:  # a room of one, or a broadcast() block around one send
        made: tuple[Any, ...] = (_send_values(new_id, sends[0], owner, frames_on),)
    else:
        made = tuple([_send_values(new_id, send, owner, frames_on) for send in sends])
    return (message_facts.BROADCAST, span_id, start, end, owner.id, detected, made)
