"""Received messages emitted a few at a time, not one by one.

A message is over when the app asks for the next one (see
:meth:`~tracer.recorder.app_side.AppSide.on_receive_enter`).  Emitting it right there, between
the app's work on one message and its work on the next, costs the server about twice what
the same emitting code costs when it runs back to back, away from the app's.  So a handled
message waits on its connection's record (``handled``), and the messages waiting on the
connections of one thread (one event loop) are emitted together: :data:`DELAY_S` after the
first of them, or as soon as :data:`MAX_WAITING` wait, whichever comes first.

A connection emits what waits on it before anything that must come after: a message emitted
at once (the last one, when the app returns), its close, its end.  So its messages keep their
order and their indexes, and none is left behind when it ends.  On a thread with no running
event loop (nothing to call back), a message is emitted at once.

Only messages that go as facts wait (every processor takes them: ``wstrace serve``'s set-up,
an export pipeline in front of an export process).  A user's own processors see each message
as soon as it is over, as they would see the SDK's spans.  And a pipeline's ``force_flush``,
from any thread, first has every event loop emit what waits on it (:func:`flush_waiting`).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from tracer._contain import errors
from tracer.export import pipeline
from tracer.recorder.emit.messages import emit_message
from tracer.recorder.emit.templates import collect, hand_over
from tracer.recorder.records import Handling

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord

DELAY_S = 0.01
"""How long the first message of a batch may wait to be emitted."""
MAX_WAITING = 64
"""Messages waiting on one thread's connections that make a batch whatever the time."""


class _Waiting(threading.local):
    """This thread's connections with messages waiting, and the timer that emits them."""

    def __init__(self) -> None:
        self.records: list[ConnectionRecord] = []
        self.count = 0
        self.timer: Any = None
        self.loop: Any = None
        """The loop the timer is on: a thread may run one loop after another (a test's)."""


_waiting = _Waiting()

_loops_waiting: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
"""The event loops with a batch's timer set: what :func:`flush_waiting` asks to emit."""
_loops_lock = threading.Lock()


def may_wait(record: ConnectionRecord) -> bool:
    """Whether ``record``'s messages may wait for a batch: they go as facts (see the module's
    docstring); spans for a user's own processors do not wait."""
    sdk = record.recorder.sdk
    return sdk is not None and sdk.facts is not None and sdk.facts.takers() is not None


def defer_message(record: ConnectionRecord, handling: Handling, at: int) -> None:
    """``handling``, over at ``at``, waits on ``record`` to be emitted with the next batch."""
    waiting = _waiting
    held = record.handled
    if held:
        held.append((handling, at))
    else:  # its first in this batch
        record.handled = [(handling, at)]
        waiting.records.append(record)
    count = waiting.count = waiting.count + 1
    if count >= MAX_WAITING:
        emit_waiting()
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # nothing to call back: emit it now
        emit_waiting()
        return
    if waiting.timer is None or waiting.loop is not loop:
        if waiting.timer is not None:  # on a loop that has stopped: it would never go off
            waiting.timer.cancel()
        waiting.timer = loop.call_later(DELAY_S, _on_timer)
        waiting.loop = loop
        with _loops_lock:
            _loops_waiting.add(loop)


def _on_timer() -> None:
    _waiting.timer = None
    emit_waiting()


def emit_waiting() -> None:
    """Emit every message waiting on this thread's connections."""
    waiting = _waiting
    if waiting.timer is not None:
        waiting.timer.cancel()
        waiting.timer = None
    if waiting.loop is not None:  # its timer cancelled, or gone off (_on_timer)
        with _loops_lock:
            _loops_waiting.discard(waiting.loop)
    records, waiting.records, waiting.count = waiting.records, [], 0
    for record in records:
        emit_handled(record)


def emit_handled(record: ConnectionRecord) -> None:
    """Emit the messages waiting on ``record``, in the order they were handled (a record that
    emitted its own already is passed over when its batch comes)."""
    held = record.handled
    if not held:
        return
    record.handled = ()
    waiting = _waiting
    waiting.count = max(0, waiting.count - len(held))
    made = collect(record)
    try:
        for handling, at in held:
            try:
                emit_message(record, handling, at)
            except Exception as exc:
                errors.record("recorder.emit_message", exc)
    finally:
        hand_over(record, made)


def flush_waiting(timeout_s: float) -> bool:
    """Emit what waits on every thread's connections, from any thread: this one's at once,
    each other running event loop's in that loop (it is asked, and waited for, at most
    ``timeout_s``).  False if one did not answer in time: its messages go with its batch."""
    emit_waiting()
    try:
        own = asyncio.get_running_loop()
    except RuntimeError:
        own = None
    with _loops_lock:
        loops = [loop for loop in _loops_waiting if loop is not own]
    asked = []
    for loop in loops:
        if loop.is_closed() or not loop.is_running():
            continue  # a stopped loop runs nothing: its batch goes when it runs again
        done = threading.Event()
        try:
            loop.call_soon_threadsafe(_emit_then_set, done)
        except RuntimeError:  # closed in the meantime
            continue
        asked.append(done)
    deadline = time.monotonic() + timeout_s
    return all(done.wait(max(0.0, deadline - time.monotonic())) for done in asked)


def _emit_then_set(done: threading.Event) -> None:
    try:
        emit_waiting()
    finally:
        done.set()


pipeline.before_flush(flush_waiting)
