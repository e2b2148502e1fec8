"""Messages as spans: each received message with its frames and what the app sent while
handling it, fan-out to other connections as ``ws.broadcast``, control frames, and messages
that arrived but were never delivered to the app.

A message is emitted once the app has asked for the next one (its handling is over: a few
at a time, see :mod:`~tracer.recorder.emit.batches`), so its span holds the frames it came in,
the handler's sends and the frames each send put on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import time_ns
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from tracer import vocab
from tracer._contain import errors
from tracer.export import message_facts
from tracer.export.message_facts import MessageValues, message_attributes
from tracer.recorder.emit.fan_out import sends_made
from tracer.recorder.emit.placement import (
    OVERFLOWED,
    UNDER_CONNECTION,
    handshake_link,
    message_placement,
    recipient_link,
)
from tracer.recorder.emit.templates import NO_CODE, emit_template, template_takers
from tracer.recorder.records import Attributes, FrameRecord, Handling, SendRecord
from tracer.recorder.spans import frame_attributes
from tracer.wire import opcode_name

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord


def emit_message(record: ConnectionRecord, handling: Handling, end: int) -> None:
    """One handling of the app: ``ws.message.receive`` with its frames, sends and broadcasts,
    or, for the greeting phase (before any message), just its sends."""
    if not handling.message_type:
        # The greeting phase (accept, initial sends): no received message to hang it under.
        if record.recording:
            parent = record.app_span or record.span
            emit_sends(record, parent, handling)
        return
    config = record.config
    if not record.recording and config.message_sampling == "inherit":
        return
    message = handling.message
    index = record.messages_seen = record.messages_seen + 1
    start = delivered = handling.delivered_at  # delivered, though nothing came in (0: never)
    if message is not None:
        start = message.first_arrival
        if delivered and delivered < start:
            start = delivered
    placement = message_placement(config, index)
    values = _message_values(record, handling, start, end, index, placement == OVERFLOWED)
    takers = template_takers(record, handling, placement)
    if takers is not None:
        emit_template(record, handling, values, start, end, placement, takers)
        return
    emit_spans(record, handling, values, start, end, placement)


def emit_spans(
    record: ConnectionRecord,
    handling: Handling,
    values: MessageValues,
    start: int,
    end: int,
    placement: int,
) -> None:
    """A received message's spans, made here: under its connection (as a family where every
    processor takes facts, see ``start_family``), or as the root of a trace of its own."""
    if placement == UNDER_CONNECTION:
        # Its frames, sends and broadcasts end before it does: one family (see start_family).
        span = record.recorder.start_family(
            vocab.WS_MESSAGE_RECEIVE, record.span, start, message_attributes(*values),
            SpanKind.SERVER,
        )  # fmt: skip
    else:
        links = [handshake_link(record.span_context)]
        span = record.recorder.start(
            vocab.WS_MESSAGE_RECEIVE, None, start, message_attributes(*values), links,
            SpanKind.SERVER,
        )  # fmt: skip
    if not span.is_recording():
        span.end(end_time=end)
        return
    if handling.message is not None:
        emit_frames(record, span, vocab.WS_FRAME_RECEIVE, handling.message.frames)
    emit_sends(record, span, handling)
    span.end(end_time=max(end, start))


def _message_values(
    record: ConnectionRecord,
    handling: Handling,
    start: int,
    end: int,
    index: int,
    overflowed: bool,
) -> MessageValues:
    """What :func:`~tracer.export.message_facts.message_attributes` takes."""
    message = handling.message
    frames = None  # no message came in: no frames, no queue wait
    queue_wait = frames_dropped = 0
    if message is not None:
        ready = message.complete_at
        asked = handling.asked_at
        frames_dropped = message.frames_dropped
        frames = len(message.frames) + frames_dropped
        queue_wait = asked - ready if asked > ready else 0
    return (
        record.ws_code.get(vocab.WS_MESSAGE_RECEIVE, NO_CODE), handling.message_type,
        handling.size, index, record.id, frames, queue_wait, frames_dropped,
        max(0, end - handling.delivered_at), max(0, handling.delivered_at - start),
        handling.sends_dropped, overflowed,
    )  # fmt: skip


def flush_greeting(greeting: Handling) -> None:
    """Emit a greeting phase's sends so far; the phase itself goes on (a push-only app never
    receives, and its record must stay bounded)."""
    sends, greeting.sends = greeting.sends, ()
    explicit, greeting.explicit_broadcasts = greeting.explicit_broadcasts, ()
    greeting.held = 0
    record = greeting.record
    try:
        emit_message(
            record, Handling(record, None, sends=sends, explicit_broadcasts=explicit), time_ns()
        )
    except Exception as exc:
        errors.record("recorder.emit_message", exc)


def emit_frames(
    record: ConnectionRecord, parent: Any, name: str, frames: Iterable[FrameRecord]
) -> None:
    """Frames on ``record``'s wire: spans, events on ``parent``, or nothing (``frames=``)."""
    mode = record.config.frames
    if mode == vocab.FRAMES_OFF:
        return
    redactor = record.config.redact_payload
    code = record.ws_code.get(name, {})
    for frame in frames:
        if mode == vocab.FRAMES_SPANS:
            attrs = frame_attributes(frame.frame, redactor, code)
            record.recorder.span(name, parent, frame.start, frame.end, attrs)
        else:
            parent.add_event(name, frame_attributes(frame.frame, redactor), timestamp=frame.start)


def emit_control_frame(record: ConnectionRecord, name: str, frame: FrameRecord) -> None:
    """A ping or pong (or a frame sent outside any send), straight under its connection."""
    if not record.recording:
        return
    try:
        emit_frames(record, record.span, name, [frame])
    except Exception as exc:
        errors.record("recorder.emit_control_frame", exc)


def emit_sends(record: ConnectionRecord, parent: Any, handling: Handling) -> None:
    """A handling's sends under ``parent``: each alone, or in a ``ws.broadcast``
    (:func:`~tracer.recorder.emit.fan_out.sends_made`)."""
    for sends, start, end, detected in sends_made(handling, record):
        if detected is None:
            emit_send(record, parent, sends[0], record)
        else:
            emit_broadcast(record, parent, start, end, sends, detected=detected)


def emit_broadcast(
    record: ConnectionRecord,
    parent: Any,
    start: int,
    end: int,
    sends: list[SendRecord],
    *,
    detected: str,
) -> None:
    """``ws.broadcast`` with one ``ws.message.send`` per recipient; with no parent (a broadcast
    from outside any connection's handler) it links to every recipient's connection."""
    links = None
    if parent is None:
        links = [recipient_link(s.recipient.span_context) for s in sends]
    broadcast = record.recorder.start(
        vocab.WS_BROADCAST, parent, start,
        message_facts.broadcast_attributes(len(sends), record.id, detected), links,
    )  # fmt: skip
    for send in sends:
        emit_send(record, broadcast, send, record)
    last = max(send.end for send in sends) if sends else end
    broadcast.end(end_time=max(end, start, last))


def emit_send(
    record: ConnectionRecord, parent: Any, send: SendRecord, owner: ConnectionRecord
) -> None:
    """``ws.message.send`` with the frames it put on its recipient's wire; a send to another
    connection than ``owner`` links to that connection."""
    recipient = send.recipient
    attrs = message_facts.send_attributes(
        recipient.ws_code.get(vocab.WS_MESSAGE_SEND, NO_CODE), send.message_type, send.size,
        len(send.frames), recipient.id,
    )  # fmt: skip
    links = None
    if recipient is not owner:
        links = [recipient_link(recipient.span_context)]
    span = record.recorder.start(vocab.WS_MESSAGE_SEND, parent, send.start, attrs, links)
    if send.error:
        span.set_attribute(vocab.ERROR_TYPE, send.error)
        span.set_status(Status(StatusCode.ERROR, send.error))
    emit_frames(recipient, span, vocab.WS_FRAME_SEND, send.frames)
    span.end(end_time=max(send.end, send.start))


def emit_undelivered(record: ConnectionRecord, at: int) -> None:
    """Messages that arrived (whole or in part) but that the app never received, as errors."""
    pending = list(record.completed)
    if record.assembling is not None:
        pending.append(record.assembling)
    for message in pending:
        attrs: Attributes = {
            **record.ws_code.get(vocab.WS_MESSAGE_RECEIVE, {}),
            vocab.WS_MESSAGE_FRAMES: len(message.frames) + message.frames_dropped,
            vocab.WS_MESSAGE_TYPE: opcode_name(message.opcode),
            vocab.CONNECTION_ID: record.id,
        }
        if message.frames_dropped:
            attrs[vocab.FRAMES_DROPPED] = message.frames_dropped
        span = record.recorder.start(
            vocab.WS_MESSAGE_RECEIVE, record.span, message.first_arrival, attrs
        )
        emit_frames(record, span, vocab.WS_FRAME_RECEIVE, message.frames)
        span.set_attribute(vocab.ERROR_TYPE, "undelivered")
        span.set_status(Status(StatusCode.ERROR, "message not delivered to the app"))
        span.end(end_time=max(at, message.first_arrival))
    record.completed = ()
    record.assembling = None
