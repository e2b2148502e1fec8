"""Where a received message goes: under its connection, or at the root of a trace of its own
(the trace shape, and the bound on a connection's trace); and the links that tie spans in
one connection's trace to another's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import Link, SpanContext

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


def handshake_link(connection: SpanContext) -> Link:
    """From a message in its own trace to the connection (and handshake) it arrived on."""
    return Link(connection, {vocab.LINK: vocab.LINK_HANDSHAKE})


def recipient_link(connection: SpanContext) -> Link:
    """From a send to the connection it went to, when that is another connection's trace."""
    return Link(connection, {vocab.LINK: vocab.LINK_RECIPIENT})
