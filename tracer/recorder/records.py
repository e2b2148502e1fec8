"""What the hooks record about a connection: plain data, bounded, cheap to fill."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from tracer.wire import (
    Frame,
)

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord

Attributes = dict[str, Any]


# Bounds on what one connection may hold in memory, whatever its peer sends.
MAX_PENDING_MESSAGES = 1024
"""Complete messages waiting for the app's receive()."""
MAX_FRAMES_HELD = 4096
"""Frames of not-yet-delivered messages kept per connection: a peer sending tiny fragments to
an app that does not read must not make the record outgrow the bytes it sent."""
MAX_WIRE_ERRORS = 64
"""Protocol errors kept per connection (the rest are counted)."""
MAX_EARLY_BYTES = 65536
"""Bytes pipelined before the 101 kept for decoding once the extensions are known."""
MAX_CLOSE_FRAMES = 8
MAX_SENDS_PER_MESSAGE = 4096
"""Sends kept per handled message; beyond, they are counted, not traced."""
GREETING_FLUSH = 64
"""Sends made before the first received message are flushed in batches of this size, so a
push-only app (one that never receives) keeps a bounded record."""


@dataclass(slots=True)
class HttpStages:
    """Timestamps the HTTP-layer hooks collect before a request turns out to be an upgrade."""

    connection_made: int
    parse_start: int = 0
    parse_end: int = 0
    detect_start: int = 0
    detect_end: int = 0
    switch_start: int = 0
    switch_end: int = 0
    head_bytes: list[bytes] = field(default_factory=list)
    head_size: int = 0
    head_complete: bool = False


# The records below are made for every message (a frame each way, the message, its handling,
# its send): msgspec's structs, made in C — a dataclass's __init__ is a Python call, and these
# are seven of them on every message.


class FrameRecord(msgspec.Struct):
    start: int
    end: int
    frame: Frame


class InMessage(msgspec.Struct):
    """A data message assembled from client frames, waiting to be delivered to the app."""

    first_arrival: int
    frames: list[FrameRecord]
    opcode: int
    complete_at: int = 0
    frames_dropped: int = 0


class SendRecord(msgspec.Struct):
    """One ASGI send to one connection, and the frames it put on that connection's wire."""

    start: int
    recipient: ConnectionRecord
    message_type: str
    size: int
    end: int = 0
    frames: list[FrameRecord] = msgspec.field(default_factory=list)
    error: str | None = None


class Handling(msgspec.Struct):
    """A connection's app task between two ``receive()`` calls.

    ``message`` is ``None`` before the first data message (the app is accepting and greeting).
    Sends made while a handling is open belong to it; sends to other connections are fan-out.
    """

    record: ConnectionRecord
    message: InMessage | None
    asked_at: int = 0
    delivered_at: int = 0
    size: int = 0
    message_type: str = ""
    # Lists made by the first send (an empty tuple until then): a handling lives as long as
    # the app waits for the next message, an idle connection's for its whole idleness.
    sends: list[SendRecord] | tuple[()] = ()
    explicit_broadcasts: list[tuple[int, int, list[SendRecord]]] | tuple[()] = ()
    sends_dropped: int = 0
    held: int = 0
    """Sends held in ``sends`` and ``explicit_broadcasts`` together (bounded)."""
    closed: bool = False


_handling: contextvars.ContextVar[Handling | None] = contextvars.ContextVar(
    "wstrace_handling", default=None
)
_explicit_broadcast: contextvars.ContextVar[list[SendRecord] | None] = contextvars.ContextVar(
    "wstrace_broadcast", default=None
)


def current_handling() -> Handling | None:
    return _handling.get()


def reset_handling(token: contextvars.Token[Handling | None]) -> None:
    """Undo :meth:`~tracer.recorder.ConnectionRecord.on_app_start`'s handling (the middleware
    alone, whose task goes on after the connection's app returns)."""
    _handling.reset(token)
