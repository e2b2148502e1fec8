"""Fan-out found by itself: which of a handling's sends went to other connections together,
the shape of a broadcast loop (``for connection in room: await connection.send_text(...)``);
and, with the app's own ``tracer.broadcast()`` blocks, what a handling's sends become."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from tracer.recorder.records import Handling, SendRecord

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord


def group_fan_out(
    sends: Sequence[SendRecord], owner: ConnectionRecord
) -> Iterable[list[SendRecord]]:
    """Split a handling's sends into single sends and fan-out runs.

    A run is a maximal sequence of sends to distinct connections that includes at least one
    connection other than the one whose message is being handled: the shape of a broadcast
    loop.  Sends to the owner alone stay single.
    """
    run: list[SendRecord] = []
    seen: set[int] = set()

    def flush() -> Iterable[list[SendRecord]]:
        if any(s.recipient is not owner for s in run):
            yield list(run)
        else:
            for s in run:
                yield [s]

    for send in sends:
        rid = id(send.recipient)
        if rid in seen:
            yield from flush()
            run.clear()
            seen.clear()
        run.append(send)
        seen.add(rid)
    if run:
        yield from flush()


def sends_made(
    handling: Handling, owner: ConnectionRecord
) -> Iterator[tuple[list[SendRecord], int, int, str | None]]:
    """What ``handling``'s sends become, in order: ``(sends, start, end, detected)``, a send
    to ``owner`` alone (``detected`` ``None``) or a ``ws.broadcast`` — ``automatic`` (a run,
    see :func:`group_fan_out`) or ``explicit`` (a ``tracer.broadcast()`` block)."""
    sends = handling.sends
    if len(sends) == 1 and not handling.explicit_broadcasts and sends[0].recipient is owner:
        # Most messages: one answer to the sender.  What the grouping would find, without its
        # generators (a microsecond a message).
        yield [sends[0]], sends[0].start, sends[0].end, None
        return
    if sends:  # none, usually, when the app groups its fan-out in tracer.broadcast()
        for group in group_fan_out(sends, owner):
            if len(group) == 1 and group[0].recipient is owner:
                yield group, group[0].start, group[0].end, None
            else:
                yield group, group[0].start, group[-1].end, "automatic"
    for start, end, broadcast in handling.explicit_broadcasts:
        yield broadcast, start, end, "explicit"
