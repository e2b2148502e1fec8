"""Where a received message goes: under its connection, or at the root of a trace of its own
(the trace shape, and the bound on a connection's trace)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracer import vocab

if TYPE_CHECKING:
    from tracer.config import TracerConfig


UNDER_CONNECTION = 0
"""Connection shape: a message is a child of its ``ws.connection``."""
OWN_TRACE = 1
"""Message shape: every message is the root of its own trace, linked to its connection."""
OVERFLOWED = 2
"""Connection shape past ``max_messages_per_trace``: its own linked trace, marked overflowed, so
that a long-lived connection's trace stays bounded."""


def message_placement(config: TracerConfig, index: int) -> int:
    """Where the ``index``-th message (from 1) of a connection goes: the trace shape, for the
    server's recorder and the middleware alone alike."""
    if config.shape == vocab.SHAPE_MESSAGE:
        return OWN_TRACE
    return OVERFLOWED if index > config.max_messages_per_trace else UNDER_CONNECTION
