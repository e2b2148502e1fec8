"""Fan-out found by itself: which of a handling's sends went to other connections together,
the shape of a broadcast loop (``for connection in room: await connection.send_text(...)``);
and, with the app's own ``tracer.broadcast()`` blocks, what a handling's sends become."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
) -> Sequence[tuple[list[SendRecord], int, int, str | None]]:
    """What ``handling``'s sends become, in order: ``(sends, start, end, detected)``, a send
    to ``owner`` alone (``detected`` ``None``) or a ``ws.broadcast`` — ``automatic`` (a run,
    see :func:`group_fan_out`) or ``explicit`` (a ``tracer.broadcast()`` block).

    Worked out for every message: the usual shapes — one answer to the sender, or sends all in
    ``tracer.broadcast()`` blocks — are read off without the grouping's generators."""
    sends = handling.sends
    explicit = handling.explicit_broadcasts
    if not sends:
        if len(explicit) == 1:  # one tracer.broadcast() block: no list to build
            start, end, broadcast = explicit[0]
            return ((broadcast, start, end, "explicit"),)
        return [(broadcast, start, end, "explicit") for start, end, broadcast in explicit]
    if len(sends) == 1 and not explicit and sends[0].recipient is owner:
        return ((sends, sends[0].start, sends[0].end, None),)
    made: list[tuple[list[SendRecord], int, int, str | None]] = []
    for group in group_fan_out(sends, owner):
        if len(group) == 1 and group[0].recipient is owner:
            made.append((group, group[0].start, group[0].end, None))
        else:
            made.append((group, group[0].start, group[-1].end, "automatic"))
    made.extend((broadcast, start, end, "explicit") for start, end, broadcast in explicit)
    return made
