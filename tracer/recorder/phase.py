"""Where a connection is in its life: two small state machines and their transition tables.

A :class:`~tracer.recorder.connection.ConnectionRecord` follows two parties at once, as h11
follows a client and a server:

- the **connection** as the wire and the handshake code show it (:class:`Phase`): the request
  head arrives, the server's handshake code runs and its answer goes out, in either order (a
  failed handshake may return before its 4xx is written; a 101 may be on the wire before the
  handshake code returns), then frames flow until a close frame, and the record is finished;
- the **app** (:class:`AppPhase`): the ASGI app task starts and returns, and may outlive the
  transport (``connection_lost`` while the app still runs: it is *orphaned*, and the record is
  finished when it returns).

Every transition lives in the two tables below, :data:`PHASE_TRANSITIONS` and
:data:`APP_TRANSITIONS`; anything else is an invalid transition, which the record reports
(counted, like any of the tracer's own errors) without changing its phase: the server is never
affected.  Phases are plain small ints and the tables compile to tuples indexed by them, so a
step costs two index operations and no allocation.

This module is pure: no OpenTelemetry, no I/O; the record acts on the transitions it reports.
"""

from __future__ import annotations

from enum import IntEnum


class Phase(IntEnum):
    """The connection, as the wire and the handshake code show it.  Ordered: every phase from
    :attr:`OPEN` on has had its handshake spans emitted."""

    HTTP = 0
    """The record exists (the upgrade was detected); the request head is not decoded yet."""
    HANDSHAKE = 1
    """The request head is in, or the handshake code runs: the server validates and answers."""
    RETURNED = 2
    """The handshake code has returned; its answer is not on the wire yet."""
    SWITCHING = 3
    """A 101 is on the wire; the handshake code has not returned yet."""
    DENYING = 4
    """Another answer is on the wire; the handshake code has not returned yet."""
    OPEN = 5
    """Handshake over with a 101 (its spans are emitted): frames flow both ways."""
    REJECTED = 6
    """Handshake over with another answer (its spans are emitted): no frame will follow."""
    CLOSING = 7
    """A close frame has been seen on the open connection (RFC 6455 §7.1.2)."""
    FINISHED = 8
    """Everything is emitted and the connection span has ended; later calls are ignored."""


class Event(IntEnum):
    """What the hooks report, as far as the connection's phase is concerned."""

    REQUEST = 0
    """The request head was decoded, or the handshake code started."""
    SWITCH = 1
    """A ``101 Switching Protocols`` response head went out."""
    DENY = 2
    """Another response head went out (the handshake was refused)."""
    HANDSHAKE_END = 3
    """The handshake code returned (or, for some servers, its response went out)."""
    CLOSE_FRAME = 4
    """A close frame was seen, in either direction."""
    FINISH = 5
    """The record is finished: lost with no app running, the app returned after the loss,
    or the tracer is being removed (``uninstrument``)."""


class AppPhase(IntEnum):
    """The ASGI app task of the connection."""

    NOT_STARTED = 0
    RUNNING = 1
    ORPHANED = 2
    """Still running, but the connection is lost: the record finishes when the app returns."""
    DONE = 3


class AppEvent(IntEnum):
    START = 0
    """The server started the app (``run_asgi``)."""
    END = 1
    """The app returned or raised."""
    LOST = 2
    """``connection_lost``: the transport is gone."""
    FORCE_END = 3
    """The tracer is removed while the app runs: its span is ended now."""


_ANSWER = {Event.SWITCH: Phase.SWITCHING, Event.DENY: Phase.DENYING}
_BEFORE_ANSWER = (Phase.HTTP, Phase.HANDSHAKE)

PHASE_TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    # The request head, or the handshake code starting (either may come first).
    (Phase.HTTP, Event.REQUEST): Phase.HANDSHAKE,
    (Phase.HANDSHAKE, Event.REQUEST): Phase.HANDSHAKE,
    # The answer and the handshake code's return, in either order.
    **{(p, e): to for p in _BEFORE_ANSWER for e, to in _ANSWER.items()},
    **{(p, Event.HANDSHAKE_END): Phase.RETURNED for p in _BEFORE_ANSWER},
    (Phase.RETURNED, Event.HANDSHAKE_END): Phase.RETURNED,
    (Phase.RETURNED, Event.SWITCH): Phase.OPEN,
    (Phase.RETURNED, Event.DENY): Phase.REJECTED,
    (Phase.SWITCHING, Event.HANDSHAKE_END): Phase.OPEN,
    (Phase.DENYING, Event.HANDSHAKE_END): Phase.REJECTED,
    # A server may report the handshake's end twice (from its code and from the answer).
    (Phase.OPEN, Event.HANDSHAKE_END): Phase.OPEN,
    (Phase.REJECTED, Event.HANDSHAKE_END): Phase.REJECTED,
    (Phase.CLOSING, Event.HANDSHAKE_END): Phase.CLOSING,
    # Close frames: a client may pipeline one right behind its request, decoded as the 101
    # goes out, before the handshake code returns; the close is a fact, the phase waits.
    (Phase.SWITCHING, Event.CLOSE_FRAME): Phase.SWITCHING,
    (Phase.OPEN, Event.CLOSE_FRAME): Phase.CLOSING,
    (Phase.CLOSING, Event.CLOSE_FRAME): Phase.CLOSING,
    # The end, from anywhere: a connection may be lost (or the tracer removed) at any point.
    **{(p, Event.FINISH): Phase.FINISHED for p in Phase if p is not Phase.FINISHED},
    # Once finished, late reports (a handshake returning after uninstrument(), bytes after
    # connection_lost) change nothing.
    **{(Phase.FINISHED, e): Phase.FINISHED for e in Event},
}
"""(phase, event) -> next phase: every transition of a connection."""

APP_TRANSITIONS: dict[tuple[AppPhase, AppEvent], AppPhase] = {
    (AppPhase.NOT_STARTED, AppEvent.START): AppPhase.RUNNING,
    (AppPhase.RUNNING, AppEvent.END): AppPhase.DONE,
    (AppPhase.ORPHANED, AppEvent.END): AppPhase.DONE,
    # Lost with no app running: the record finishes now; with the app running, when it returns.
    (AppPhase.NOT_STARTED, AppEvent.LOST): AppPhase.NOT_STARTED,
    (AppPhase.RUNNING, AppEvent.LOST): AppPhase.ORPHANED,
    (AppPhase.DONE, AppEvent.LOST): AppPhase.DONE,
    (AppPhase.RUNNING, AppEvent.FORCE_END): AppPhase.DONE,
    (AppPhase.ORPHANED, AppEvent.FORCE_END): AppPhase.DONE,
    # The server still reports the end of an app whose span uninstrument() already ended.
    (AppPhase.DONE, AppEvent.END): AppPhase.DONE,
}
"""(app phase, event) -> next app phase: every transition of a connection's app task."""

INVALID = -1


def _compile(
    table: dict[tuple[int, int], int], phases: type[IntEnum], events: type[IntEnum]
) -> tuple[tuple[int, ...], ...]:
    """The table as rows indexed by phase then event, :data:`INVALID` where it has no entry."""
    return tuple(
        tuple(int(table.get((phase, event), INVALID)) for event in events) for phase in phases
    )


_PHASE_STEPS = _compile(PHASE_TRANSITIONS, Phase, Event)  # type: ignore[arg-type]
_APP_STEPS = _compile(APP_TRANSITIONS, AppPhase, AppEvent)  # type: ignore[arg-type]


def next_phase(phase: int, event: int) -> int:
    """The connection's phase after ``event``, or :data:`INVALID`."""
    return _PHASE_STEPS[phase][event]


def next_app_phase(phase: int, event: int) -> int:
    """The app's phase after ``event``, or :data:`INVALID`."""
    return _APP_STEPS[phase][event]


def answered(phase: int) -> bool:
    """Whether the handshake's spans have been emitted (its answer and its end are known, or
    the record was finished without them)."""
    return phase >= Phase.OPEN


def app_running(phase: int) -> bool:
    return phase == AppPhase.RUNNING or phase == AppPhase.ORPHANED


class InvalidTransition(Exception):
    """An event the phase tables do not allow: reported and counted, never raised into the
    server (the record keeps its phase)."""

    def __init__(self, machine: str, phase: int, event: int) -> None:
        self.machine = machine
        self.phase = phase
        self.event = event
        phases, events = (Phase, Event) if machine == "connection" else (AppPhase, AppEvent)
        super().__init__(
            f"{machine}: no transition from {phases(phase).name} on {events(event).name}"
        )
