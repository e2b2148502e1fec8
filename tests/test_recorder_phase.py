"""The connection's phases: the transition tables themselves, and a record driven through them
by hand (the bytes and hook calls a server would make), without a server.

Each scenario is a path through the tables; the last test checks that together they take every
transition the tables allow, so a transition added without a scenario fails here.
"""

from __future__ import annotations

import gc
from time import time_ns

import pytest
from opentelemetry.trace import StatusCode

from tests.support.records import (
    close_frame,
    make_bench,
    response_101,
    response_denied,
    upgrade_request,
)
from tracer import vocab
from tracer._contain import errors
from tracer.recorder import ConnectionRecord, abandoned
from tracer.recorder.phase import (
    APP_TRANSITIONS,
    INVALID,
    PHASE_TRANSITIONS,
    AppEvent,
    AppPhase,
    Event,
    Phase,
    answered,
    next_app_phase,
    next_phase,
)

pytestmark = pytest.mark.fast

taken: set[tuple[str, int, int]] = set()
"""Transitions the scenarios below have taken (checked last against the tables)."""


def walk(start: Phase, events: list[Event]) -> list[Phase]:
    phases = [start]
    for event in events:
        after = next_phase(phases[-1], event)
        assert after != INVALID, (phases[-1].name, event.name)
        taken.add(("connection", phases[-1], event))
        phases.append(Phase(after))
    return phases


def walk_app(events: list[AppEvent]) -> list[AppPhase]:
    phases = [AppPhase.NOT_STARTED]
    for event in events:
        after = next_app_phase(phases[-1], event)
        assert after != INVALID, (phases[-1].name, event.name)
        taken.add(("app", phases[-1], event))
        phases.append(AppPhase(after))
    return phases


E = Event
P = Phase

CONNECTION_PATHS = {
    # websockets (legacy): the handshake code starts first, writes its 101, then returns.
    "legacy accepted": (
        [E.REQUEST, E.REQUEST, E.SWITCH, E.HANDSHAKE_END, E.CLOSE_FRAME, E.CLOSE_FRAME, E.FINISH],
        [P.HTTP, P.HANDSHAKE, P.HANDSHAKE, P.SWITCHING, P.OPEN, P.CLOSING, P.CLOSING, P.FINISHED],
    ),
    # A failed legacy handshake returns before its 4xx is written; the 4xx reports an end too.
    "legacy refused": (
        [E.REQUEST, E.HANDSHAKE_END, E.HANDSHAKE_END, E.DENY, E.HANDSHAKE_END, E.FINISH],
        [P.HTTP, P.HANDSHAKE, P.RETURNED, P.RETURNED, P.REJECTED, P.REJECTED, P.FINISHED],
    ),
    # wsproto / websockets-sansio: the answer is the end of the handshake.
    "sans-I/O accepted": (
        [E.REQUEST, E.SWITCH, E.HANDSHAKE_END, E.HANDSHAKE_END, E.FINISH],
        [P.HTTP, P.HANDSHAKE, P.SWITCHING, P.OPEN, P.OPEN, P.FINISHED],
    ),
    "sans-I/O refused": (
        [E.REQUEST, E.DENY, E.HANDSHAKE_END, E.FINISH],
        [P.HTTP, P.HANDSHAKE, P.DENYING, P.REJECTED, P.FINISHED],
    ),
    # A close frame pipelined behind the request, decoded as the 101 goes out.
    "pipelined close": (
        [E.REQUEST, E.SWITCH, E.CLOSE_FRAME, E.HANDSHAKE_END, E.CLOSE_FRAME, E.HANDSHAKE_END],
        [P.HTTP, P.HANDSHAKE, P.SWITCHING, P.SWITCHING, P.OPEN, P.CLOSING, P.CLOSING],
    ),
    # The request head failed to decode: the server answers anyway.
    "undecodable request": ([E.SWITCH, E.HANDSHAKE_END], [P.HTTP, P.SWITCHING, P.OPEN]),
    "undecodable, refused": ([E.DENY, E.FINISH], [P.HTTP, P.DENYING, P.FINISHED]),
    "handshake returned first, no request": ([E.HANDSHAKE_END], [P.HTTP, P.RETURNED]),
    "returned, then 101": ([E.HANDSHAKE_END, E.SWITCH], [P.HTTP, P.RETURNED, P.OPEN]),
    "lost before the request": ([E.FINISH], [P.HTTP, P.FINISHED]),
    "lost during the handshake": ([E.REQUEST, E.FINISH], [P.HTTP, P.HANDSHAKE, P.FINISHED]),
    "lost after the handshake code returned": (
        [E.HANDSHAKE_END, E.FINISH], [P.HTTP, P.RETURNED, P.FINISHED],
    ),
    "lost with a 101 out": ([E.SWITCH, E.FINISH], [P.HTTP, P.SWITCHING, P.FINISHED]),
    "lost with a 4xx out": (
        [E.REQUEST, E.DENY, E.FINISH], [P.HTTP, P.HANDSHAKE, P.DENYING, P.FINISHED],
    ),
    "lost open": ([E.SWITCH, E.HANDSHAKE_END, E.FINISH], [P.HTTP, P.SWITCHING, P.OPEN, P.FINISHED]),
    "closing, a late handshake end": (
        [E.SWITCH, E.HANDSHAKE_END, E.CLOSE_FRAME, E.HANDSHAKE_END],
        [P.HTTP, P.SWITCHING, P.OPEN, P.CLOSING, P.CLOSING],
    ),
    # Finished: whatever comes late changes nothing.
    "late reports": (
        [E.FINISH, *Event], [P.HTTP, P.FINISHED, *(P.FINISHED for _ in Event)],
    ),
}


@pytest.mark.parametrize("name", CONNECTION_PATHS)
def test_connection_paths(name: str) -> None:
    events, expected = CONNECTION_PATHS[name]
    assert walk(expected[0], events) == expected


APP_PATHS = {
    "returns, then lost": (
        [AppEvent.START, AppEvent.END, AppEvent.LOST],
        [AppPhase.NOT_STARTED, AppPhase.RUNNING, AppPhase.DONE, AppPhase.DONE],
    ),
    "lost while running: orphaned until it returns": (
        [AppEvent.START, AppEvent.LOST, AppEvent.END],
        [AppPhase.NOT_STARTED, AppPhase.RUNNING, AppPhase.ORPHANED, AppPhase.DONE],
    ),
    "lost before it started": ([AppEvent.LOST], [AppPhase.NOT_STARTED, AppPhase.NOT_STARTED]),
    "uninstrumented while running, returns later": (
        [AppEvent.START, AppEvent.FORCE_END, AppEvent.END],
        [AppPhase.NOT_STARTED, AppPhase.RUNNING, AppPhase.DONE, AppPhase.DONE],
    ),
    "uninstrumented while orphaned": (
        [AppEvent.START, AppEvent.LOST, AppEvent.FORCE_END],
        [AppPhase.NOT_STARTED, AppPhase.RUNNING, AppPhase.ORPHANED, AppPhase.DONE],
    ),
}


@pytest.mark.parametrize("name", APP_PATHS)
def test_app_paths(name: str) -> None:
    events, expected = APP_PATHS[name]
    assert walk_app(events) == expected


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (P.HTTP, E.CLOSE_FRAME),  # no frame is decoded before a 101
        (P.HANDSHAKE, E.CLOSE_FRAME),
        (P.REJECTED, E.CLOSE_FRAME),
        (P.OPEN, E.SWITCH),  # one response head per connection
        (P.SWITCHING, E.DENY),
        (P.OPEN, E.REQUEST),
    ],
)
def test_transitions_outside_the_table_are_invalid(phase: Phase, event: Event) -> None:
    assert next_phase(phase, event) == INVALID


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (AppPhase.NOT_STARTED, AppEvent.END),
        (AppPhase.RUNNING, AppEvent.START),
        (AppPhase.ORPHANED, AppEvent.LOST),
        (AppPhase.NOT_STARTED, AppEvent.FORCE_END),
    ],
)
def test_app_transitions_outside_the_table_are_invalid(phase: AppPhase, event: AppEvent) -> None:
    assert next_app_phase(phase, event) == INVALID


def test_the_handshake_is_answered_from_open_on() -> None:
    assert [p for p in Phase if answered(p)] == [P.OPEN, P.REJECTED, P.CLOSING, P.FINISHED]


# --- A record driven through its phases -------------------------------------------------------


@pytest.fixture
def bench():
    errors.reset()
    yield make_bench()
    gc.collect()  # records of this test left unfinished: ended here, not in a later test
    abandoned.end_abandoned()


def handshake(bench, record, *, accepted: bool = True) -> None:
    bench.bytes_in(record, upgrade_request("/ws"))
    assert record.phase == Phase.HANDSHAKE
    bench.bytes_out(record, response_101() if accepted else response_denied())


def test_record_open_then_closed_by_the_client(bench) -> None:
    record = bench.record()
    assert (record.phase, record.app_phase) == (Phase.HTTP, AppPhase.NOT_STARTED)
    handshake(bench, record)
    assert record.phase == Phase.OPEN
    assert [s.name for s in bench.spans] == [vocab.WS_HANDSHAKE_RESPONSE, vocab.WS_HANDSHAKE]
    bench.app_start(record)
    assert record.app_phase == AppPhase.RUNNING
    bench.bytes_in(record, close_frame(1000))
    assert record.phase == Phase.CLOSING
    bench.bytes_out(record, close_frame(1000, client=False))
    record.on_app_end(time_ns(), None)
    record.on_lost(time_ns(), None)
    assert (record.phase, record.app_phase) == (Phase.FINISHED, AppPhase.DONE)
    (connection,) = bench.named(vocab.CONNECTION)
    assert connection.attributes[vocab.WS_CLOSE_CODE] == 1000
    (close,) = bench.named(vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_INITIATOR] == vocab.INITIATOR_CLIENT
    assert errors.counts == {}


def test_record_refused(bench) -> None:
    record = bench.record()
    handshake(bench, record, accepted=False)
    assert record.phase == Phase.REJECTED
    (hs,) = bench.named(vocab.WS_HANDSHAKE)
    assert hs.attributes[vocab.ERROR_TYPE] == "403"
    record.on_lost(time_ns(), None)
    assert record.phase == Phase.FINISHED
    assert bench.named(vocab.WS_CLOSE) == []  # no close span without a 101
    assert errors.counts == {}


def _accept_sent(bench, record) -> None:
    """The app accepts: its send is entered and writes the 101; it has not returned yet."""
    bench.bytes_in(record, upgrade_request("/ws"))
    bench.app_start(record)
    record.on_send_enter(time_ns(), {"type": "websocket.accept"})
    bench.bytes_out(record, response_101())


def test_the_accept_follows_the_handshake_once_its_send_returns(bench) -> None:
    record = bench.record()
    _accept_sent(bench, record)
    assert record.phase == Phase.OPEN
    assert bench.named(vocab.WS_HANDSHAKE) and bench.named(vocab.WS_ACCEPT) == []
    record.on_accept_exit()
    (accept,) = bench.named(vocab.WS_ACCEPT)
    assert [s.name for s in bench.spans][-1] == vocab.WS_ACCEPT  # after the handshake's
    (stack,) = [e for e in accept.events if e.name == vocab.EVENT_HANDSHAKE_STACK]
    assert any("_the_accept_follows" in f for f in stack.attributes[vocab.STACK_FUNCTIONS])
    assert record.accept_stack is None and record.accept_parent is None
    record.on_accept_exit()  # reported twice: still one accept
    assert len(bench.named(vocab.WS_ACCEPT)) == 1
    assert errors.counts == {}


def test_an_accept_whose_send_never_returns_goes_out_with_the_connection(bench) -> None:
    record = bench.record()
    _accept_sent(bench, record)
    record.force_finish(time_ns())
    assert record.phase == Phase.FINISHED
    (accept,) = bench.named(vocab.WS_ACCEPT)  # without the stack: it was never read
    assert not [e for e in accept.events if e.name == vocab.EVENT_HANDSHAKE_STACK]
    assert bench.named(vocab.CONNECTION)
    record.on_accept_exit()  # the send returns after all: nothing more
    assert len(bench.named(vocab.WS_ACCEPT)) == 1
    assert errors.counts == {}


def test_legacy_handshake_waits_for_its_code_to_return(bench) -> None:
    record = bench.record(ends_on_response=False)
    record.on_handshake_start(time_ns())
    handshake(bench, record)
    assert record.phase == Phase.SWITCHING
    assert bench.named(vocab.WS_HANDSHAKE) == []  # not over until the code returns
    record.on_handshake_end(time_ns())
    assert record.phase == Phase.OPEN
    assert len(bench.named(vocab.WS_HANDSHAKE)) == 1
    record.on_handshake_end(time_ns())  # reported twice: still one handshake span
    assert len(bench.named(vocab.WS_HANDSHAKE)) == 1
    assert errors.counts == {}


def test_lost_before_the_handshake_ends(bench) -> None:
    record = bench.record(ends_on_response=False)
    bench.bytes_in(record, upgrade_request("/ws"))
    record.on_lost(time_ns(), ConnectionResetError())
    assert record.phase == Phase.FINISHED
    (hs,) = bench.named(vocab.WS_HANDSHAKE)
    assert hs.attributes[vocab.ERROR_TYPE] == "no-response"
    (connection,) = bench.named(vocab.CONNECTION)
    assert connection.attributes[vocab.ERROR_TYPE] == "ConnectionResetError"
    assert connection.attributes[vocab.WS_CLOSE_CODE] == 1006
    # Late reports after the end change nothing and count nothing.
    record.on_handshake_end(time_ns())
    bench.bytes_out(record, response_101())
    assert record.phase == Phase.FINISHED
    assert len(bench.named(vocab.WS_HANDSHAKE)) == 1
    assert errors.counts == {}


def test_lost_while_the_app_runs_finishes_when_it_returns(bench) -> None:
    record = bench.record()
    handshake(bench, record)
    bench.app_start(record)
    lost = time_ns()
    record.on_lost(lost, None)
    assert (record.phase, record.app_phase) == (Phase.OPEN, AppPhase.ORPHANED)
    assert bench.named(vocab.CONNECTION) == []  # still open: the app runs
    record.on_lost(time_ns(), None)  # reported twice: nothing changes
    assert record.app_phase == AppPhase.ORPHANED
    ended = time_ns()
    record.on_app_end(ended, None)
    assert (record.phase, record.app_phase) == (Phase.FINISHED, AppPhase.DONE)
    (connection,) = bench.named(vocab.CONNECTION)
    assert connection.end_time == ended
    (close,) = bench.named(vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1006
    assert errors.counts == {}


def test_force_finish_ends_a_running_app(bench) -> None:
    record = bench.record()
    handshake(bench, record)
    bench.app_start(record)
    at = time_ns()
    record.force_finish(at)
    assert (record.phase, record.app_phase) == (Phase.FINISHED, AppPhase.DONE)
    (app,) = bench.named(vocab.ASGI_APP)
    (connection,) = bench.named(vocab.CONNECTION)
    assert app.end_time == at and connection.end_time == at
    # The server reports the app's end and the loss later: both are ignored.
    record.on_app_end(time_ns(), None)
    record.on_lost(time_ns(), None)
    assert len(bench.named(vocab.CONNECTION)) == 1
    assert errors.counts == {}


def test_uninstrument_mid_handshake(bench) -> None:
    record = bench.record(ends_on_response=False)
    record.on_handshake_start(time_ns())
    bench.recorder.flush_open()
    assert record.phase == Phase.FINISHED
    (connection,) = bench.named(vocab.CONNECTION)
    assert connection.attributes[vocab.END_REASON] == vocab.END_UNINSTRUMENTED
    assert connection.status.status_code is StatusCode.ERROR
    assert errors.counts == {}


def test_a_collected_record_has_its_spans_ended(bench) -> None:
    record = bench.record()
    handshake(bench, record)
    bench.app_start(record)
    assert record.phase == Phase.OPEN
    del record
    gc.collect()
    assert abandoned.end_abandoned() == 2  # asgi.app and ws.connection
    reasons = {s.name: s.attributes[vocab.END_REASON] for s in bench.spans
               if vocab.END_REASON in s.attributes}
    assert reasons == {vocab.CONNECTION: vocab.END_COLLECTED, vocab.ASGI_APP: vocab.END_COLLECTED}


def test_a_finished_record_leaves_nothing_to_end(bench) -> None:
    record = bench.record()
    handshake(bench, record)
    record.on_lost(time_ns(), None)
    del record
    gc.collect()
    assert abandoned.end_abandoned() == 0


def test_an_invalid_transition_is_counted_not_raised(bench) -> None:
    record = bench.record()
    handshake(bench, record)
    bench.app_start(record)
    bench.app_start(record)  # a server starting the app twice: not in the table
    assert record.app_phase == AppPhase.RUNNING
    assert errors.counts == {"recorder.phase": 1}
    record.on_app_end(time_ns(), None)
    record.on_lost(time_ns(), None)
    assert record.phase == Phase.FINISHED


def test_every_transition_is_taken_by_a_scenario() -> None:
    for name in CONNECTION_PATHS:
        test_connection_paths(name)
    for name in APP_PATHS:
        test_app_paths(name)
    allowed = {("connection", p, e) for p, e in PHASE_TRANSITIONS} | {
        ("app", p, e) for p, e in APP_TRANSITIONS
    }
    assert allowed - taken == set()


def test_a_held_request_head_that_fails_to_decode_leaves_the_answer_recorded(
    bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held head is decoded as the 101 goes out: a failure there is counted, and the
    101 itself is still decoded and ends the handshake."""

    def broken(self, start, data):
        raise RuntimeError("decoder bug")

    record = bench.record()
    bench.bytes_in(record, upgrade_request("/ws"))
    assert record.held_request is not None
    monkeypatch.setattr(ConnectionRecord, "_decode_request", broken)
    bench.bytes_out(record, response_101())
    assert errors.counts == {"recorder.request": 1}
    assert record.phase == Phase.OPEN
    (hs,) = bench.named(vocab.WS_HANDSHAKE)
    assert hs.attributes[vocab.HTTP_RESPONSE_STATUS_CODE] == 101
    errors.reset()
