"""Build the walkthrough of one connection from a loaded trace.

One function per step, in the order a connection lives through them.  Each reads the spans of
its stage (the span names and attributes of :mod:`tracer.vocab`), looks its code up in the
installed packages (:mod:`.source`) and says what the specification says.  A stage missing from
the trace (e.g. a trace recorded by the ASGI middleware alone has no header parse) keeps its
step, with a note saying why it is empty, so the outline is the same for every trace.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from tracer import vocab
from tracer.analysis.explain import prose
from tracer.analysis.explain.model import Block, Document, Para, Step, Table, Val
from tracer.analysis.explain.reading import (
    Spans,
    attr,
)
from tracer.analysis.explain.source import package_label
from tracer.analysis.explain.steps_app import step_accept, step_asgi, step_middleware, step_route
from tracer.analysis.explain.steps_frames import (
    step_broadcast,
    step_close,
    step_frame,
    step_message,
)
from tracer.analysis.explain.steps_request import (
    step_connection,
    step_handshake,
    step_parse,
    step_switch,
    step_upgrade,
)
from tracer.export.traceset import Connection, TraceSet

STEPS: tuple[Callable[[Spans], Step], ...] = (
    step_connection,
    step_parse,
    step_upgrade,
    step_switch,
    step_handshake,
    step_asgi,
    step_middleware,
    step_route,
    step_accept,
    step_frame,
    step_message,
    step_broadcast,
    step_close,
)


def versions_table(conn: Connection) -> Table:
    root = conn.root
    tops = ["uvicorn", "starlette", "fastapi"]
    tops += {"websockets": ["websockets"], "websockets-sansio": ["websockets"]}.get(
        str(attr(root, vocab.IMPL_WS)),
        ["wsproto"] if attr(root, vocab.IMPL_WS) == "wsproto" else [],
    )
    parser = attr(root, vocab.IMPL_HTTP)
    if parser in ("httptools", "h11", "zttp"):
        tops.append(str(parser))
    rows = [[Val(top), Val(package_label(top))] for top in tops]
    rows.append([Val("Python"), Val(sys.version.split()[0])])
    return Table(["package", "installed version (read when this page was generated)"], rows)


def explain_connection(traces: TraceSet, conn: Connection) -> Document:
    """The walkthrough of one connection."""
    spans = Spans(traces, conn)
    http = attr(conn.root, vocab.IMPL_HTTP, "?")
    ws = attr(conn.root, vocab.IMPL_WS, "?")
    intro: list[Block] = [
        Para(prose.intro(str(http), str(ws))),
        versions_table(conn),
    ]
    return Document(
        title=f"A WebSocket connection, step by step ({http} + {ws})",
        intro=intro,
        steps=[build(spans) for build in STEPS],
    )


def explain(traces: TraceSet, connection: int = 1) -> Document:
    """The walkthrough of the ``connection``-th connection (1-based) of a trace set."""
    return explain_connection(traces, traces.connection(connection))


__all__ = ["STEPS", "explain", "explain_connection"]
