"""The end of a connection as spans: ``ws.close`` with the close frames of both sides, the
protocol errors seen on the wire, and the ``ws.connection`` span's own end.

RFC 6455 §7.1.5: a connection closed without a close frame has the close code 1006 (abnormal
closure); a close frame without a status code, 1005.  Neither is ever sent on the wire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracer import vocab
from tracer.recorder.emit.messages import emit_frames
from tracer.recorder.records import Attributes
from tracer.recorder.spans import error_event
from tracer.wire import CloseCode

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord

ABNORMAL_CLOSURE = int(CloseCode.ABNORMAL_CLOSURE)
"""Recorded when the connection was lost without a close frame (RFC 6455 §7.1.5)."""
NO_STATUS_RCVD = int(CloseCode.NO_STATUS_RCVD)
"""Recorded for a close frame that carried no status code (§7.1.5)."""


def effective_close_code(record: ConnectionRecord) -> int:
    if record.close_initiator is None:
        return ABNORMAL_CLOSURE
    return record.close_code if record.close_code is not None else NO_STATUS_RCVD


def emit_close(record: ConnectionRecord) -> None:
    """``ws.close`` from the first close frame (or the loss) to the connection's loss; only
    for a connection that was switched to WebSocket."""
    if record.status != 101:
        return
    code = effective_close_code(record)
    initiator = record.close_initiator or vocab.INITIATOR_NONE
    start = record.close_start or record.lost_at
    attrs: Attributes = {
        **record.ws_code.get(vocab.WS_CLOSE, {}),
        vocab.WS_CLOSE_CODE: code,
        vocab.WS_CLOSE_INITIATOR: initiator,
    }
    if record.close_reason:
        attrs[vocab.WS_CLOSE_REASON] = record.close_reason
    # Its close frames end before it does: one family where spans are built in export.
    span = record.recorder.start_family(vocab.WS_CLOSE, record.span, start, attrs)
    for side, frame in record.close_frames:
        name = vocab.WS_FRAME_RECEIVE if side == vocab.INITIATOR_CLIENT else vocab.WS_FRAME_SEND
        emit_frames(record, span, name, [frame])
    if code == ABNORMAL_CLOSURE:
        span.set_attribute(vocab.ERROR_TYPE, "abnormal-closure")
    span.end(end_time=max(record.lost_at, start))


def emit_wire_errors(record: ConnectionRecord) -> None:
    """Protocol errors the decoders reported, as events on the connection span."""
    span = record.span
    for when, error in record.wire_errors:
        name, attrs = error_event(error)
        span.add_event(name, attrs, timestamp=when)
    if record.wire_errors_dropped:
        span.set_attribute(vocab.PROTOCOL_ERRORS_DROPPED, record.wire_errors_dropped)


def end_connection(record: ConnectionRecord, at: int) -> None:
    """End ``ws.connection``: why it was lost, how it closed."""
    span = record.span
    if record.lost_error:
        span.set_attribute(vocab.ERROR_TYPE, record.lost_error)
    span.set_attribute(vocab.WS_CLOSE_CODE, effective_close_code(record))
    span.end(end_time=max(at, record.lost_at))
