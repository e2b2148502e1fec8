"""Fan-out found by itself: which of a handling's sends went to other connections together,
the shape of a broadcast loop (``for connection in room: await connection.send_text(...)``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tracer.recorder.records import SendRecord

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
