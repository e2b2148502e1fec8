"""Spans of connections the server forgot: ended anyway, saying why.

A connection's ``ws.connection`` (and ``asgi.app``) span is ended by ``connection_lost``.  A
server never calls it when its transport is aborted by a test harness or a protocol object is
simply dropped (uvicorn's own protocol tests do both, with mock transports).  Each record
carries a :func:`guard`: when the record is garbage-collected unfinished, its open spans are
queued here, and the recorder ends them at its next safe point (:func:`end_abandoned`: the next
connection, or ``uninstrument()``), with :data:`~tracer.vocab.END_REASON` and an error status.

They are not ended in the finalizer itself: a finalizer runs wherever the garbage collector
happens to run, possibly inside a span processor holding its (non-reentrant) lock.
"""

from __future__ import annotations

import weakref
from collections import deque
from time import time_ns
from typing import Any

from opentelemetry.trace import Status, StatusCode

from tracer import vocab

_abandoned: deque[list[Any]] = deque()
"""Lists of open spans of records collected unfinished (``deque.append`` takes no lock)."""


class Guard(weakref.ref):
    """A weak reference to a record that queues the record's open spans when it is collected.

    A weakref subclass with one slot, rather than ``weakref.finalize`` (a registry entry, an
    info object and an argument tuple): every open connection carries one."""

    __slots__ = ("spans",)

    def __new__(cls, owner: object, spans: list[Any]) -> Guard:
        return super().__new__(cls, owner, _collected)

    def __init__(self, owner: object, spans: list[Any]) -> None:
        super().__init__(owner, _collected)
        self.spans = spans

    def detach(self) -> None:
        """The owner ended its spans itself: nothing to do when it is collected."""
        _guards.discard(self)


_guards: set[Guard] = set()
"""Guards of the records still open: a weak reference calls back only while it is alive."""


def _collected(guard: Any) -> None:
    if guard in _guards:
        _guards.discard(guard)
        _abandoned.append(guard.spans)


def open_owners() -> list[Any]:
    """Every guarded owner still alive and not detached: the records of open connections."""
    return [owner for owner in (made() for made in list(_guards)) if owner is not None]


def guard(owner: object, spans: list[Any]) -> Guard:
    """Queue ``spans`` (kept up to date by the owner) when ``owner`` is collected; the owner
    calls ``.detach()`` on the result once it has ended them itself."""
    made = Guard(owner, spans)
    _guards.add(made)
    return made


def end_spans(spans: list[Any], reason: str, description: str, at: int | None = None) -> int:
    """End every span of ``spans`` still recording, innermost first; returns how many."""
    at = at or time_ns()
    ended = 0
    for span in reversed(spans):
        if not span.is_recording():
            continue
        span.set_attribute(vocab.END_REASON, reason)
        span.set_status(Status(StatusCode.ERROR, description))
        span.end(end_time=at)
        ended += 1
    return ended


def end_abandoned() -> int:
    """End the spans of every record collected unfinished since the last call."""
    ended = 0
    while _abandoned:
        try:
            spans = _abandoned.popleft()
        except IndexError:
            break
        ended += end_spans(
            spans,
            vocab.END_COLLECTED,
            "ended by wstrace: the server dropped the connection without connection_lost",
        )
    return ended


def pending() -> bool:
    """Whether spans wait to be ended (cheap: checked on every new connection)."""
    return bool(_abandoned)
