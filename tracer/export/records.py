"""Plain records for spans read back from OTLP JSON files.

They are deliberately independent of the OpenTelemetry SDK: a trace file written on one
machine is read on another that may have no SDK at all, and the renderers (tree, stats,
Perfetto) only need ids, times, names and decoded attribute values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AttributeValue = Any
"""A decoded OTLP ``AnyValue``: str, bool, int, float, bytes, list or dict."""

STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2


@dataclass(frozen=True)
class Status:
    """Span status as OTLP encodes it: ``code`` 0 unset, 1 ok, 2 error."""

    code: int = STATUS_UNSET
    message: str = ""

    @property
    def is_error(self) -> bool:
        return self.code == STATUS_ERROR


@dataclass(frozen=True)
class EventRecord:
    """A span event (a frame in ``frames="events"`` mode, a protocol error, the stack)."""

    name: str
    time_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkRecord:
    """A span link: a broadcast send to its recipient, a message trace to its connection."""

    trace_id: str
    span_id: str
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass
class SpanRecord:
    """One span, ids as lowercase hex, times as integer Unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    links: list[LinkRecord] = field(default_factory=list)
    status: Status = field(default_factory=Status)
    kind: int = 0
    resource: dict[str, AttributeValue] = field(default_factory=dict)
    scope: str = ""
    parent_is_remote: bool = False
    """The parent is another process's span (OTLP ``flags``): not in the file, by design."""
    source: str = ""
    """Where the span was read from, ``file:line``, for error messages."""

    @property
    def key(self) -> tuple[str, str]:
        """Span ids are only unique within a trace, so spans are indexed by both."""
        return (self.trace_id, self.span_id)

    @property
    def parent_key(self) -> tuple[str, str] | None:
        return (self.trace_id, self.parent_span_id) if self.parent_span_id else None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)
