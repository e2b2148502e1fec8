"""A connection's opening handshake as one fact: its spans made as facts hold them, handed
to the pipeline together, and taken apart where they are exported.

The handshake is the busiest moment of a connection for the tracer: once the 101 is on the
wire, ``http.headers.parse``, ``http.upgrade.detect`` and ``ws.protocol.switch`` (under the
connection), ``ws.handshake`` with its validations and its response, and ``ws.accept`` (under
the innermost ASGI layer, with the stack that reached it) are all emitted at once
(:mod:`tracer.recorder.emit.handshake`).  Where every processor takes facts and the
``SpanLimits`` cut nothing (``wstrace serve``'s set-up), the server makes them straight as
facts hold them — no span objects, no processor calls per span — and hands them on as one
*handshake template*: one item to hold, count and send to the export process instead of five.
:func:`build` gives the facts back, the same as the server's span path makes of the same
record (the handshake template tests hold the two to the same bytes).

A handshake template is ``ws.handshake``'s own fact (its validations and its response are its
members), then how many spans it stands for in all, its :data:`Parts`, and
:data:`TEMPLATE_HANDSHAKE`.  ``Parts`` = ``(members, stages, accept)``: ``ws.handshake``'s
members, as a family fact holds them; the HTTP layer's spans, each a fact; ``ws.accept``'s
fact, or ``None``.
"""

from __future__ import annotations

from typing import Any

TEMPLATE_HANDSHAKE = "ws.handshake"
"""The last field of a handshake template fact: what :func:`build` makes of it."""

_SPANS = 15
_PARTS = 16
"""Fields of a template after ``ws.handshake``'s own fact (see
:class:`tracer.export.facts.Field`)."""

Parts = tuple[tuple[Any, ...], tuple[tuple[Any, ...], ...], tuple[Any, ...] | None]


def template(
    handshake: tuple[Any, ...],
    members: tuple[Any, ...],
    stages: tuple[tuple[Any, ...], ...],
    accept: tuple[Any, ...] | None,
) -> tuple[Any, ...]:
    """The template of a handshake: ``handshake``, its ``members``, the HTTP layer's
    ``stages`` and the ``accept``, all facts (see the module's docstring)."""
    spans = 1 + len(members) + len(stages) + (accept is not None)
    return (*handshake, spans, (members, stages, accept), TEMPLATE_HANDSHAKE)


def build(template: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The facts a handshake template stands for, in the order the server's span path emits
    them: the HTTP layer's spans, ``ws.handshake`` (a family fact when it has members), then
    ``ws.accept``."""
    members, stages, accept = template[_PARTS]
    handshake = template[:_SPANS]
    made = list(stages)
    made.append((*handshake, 1 + len(members), members) if members else handshake)
    if accept is not None:
        made.append(accept)
    return made
