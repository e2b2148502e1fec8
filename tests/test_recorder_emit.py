"""The emitters, fed by records driven by hand (no server): what each stage family makes of
the facts — messages with their frames and sends, fan-out across connections, the greeting
phase of a push-only app, overflow into linked traces, undelivered messages, the close."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
from time import time_ns

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import RandomIdGenerator, TracerProvider
from opentelemetry.trace import TraceFlags, TraceState

from tests.support.facts import FactCollector
from tests.support.raw import client_frame
from tests.support.records import (
    Bench,
    close_frame,
    make_bench,
    make_facts_bench,
    response_101,
    upgrade_request,
)
from tests.support.tracing import Tree
from tracer import vocab
from tracer._contain import errors
from tracer.config import TracerConfig
from tracer.export import facts, pipeline
from tracer.recorder import ConnectionRecord, abandoned
from tracer.recorder.emit import batches
from tracer.recorder.emit.fan_out import group_fan_out, sends_made
from tracer.recorder.emit.placement import (
    OVERFLOWED,
    OWN_TRACE,
    UNDER_CONNECTION,
    message_placement,
)
from tracer.recorder.records import GREETING_FLUSH, Handling, SendRecord
from tracer.recorder.spans import SdkParts, _random_span_id
from tracer.wire import Opcode, encode_frame

pytestmark = pytest.mark.fast


@pytest.fixture(autouse=True)
def _no_errors():
    errors.reset()
    yield
    gc.collect()  # records of this test left unfinished: ended here, not in a later test
    abandoned.end_abandoned()
    assert errors.counts == {}


def opened(bench: Bench) -> tuple[ConnectionRecord, contextvars.Context]:
    record = bench.record()
    bench.bytes_in(record, upgrade_request("/ws"))
    bench.bytes_out(record, response_101())
    return record, bench.app_start(record)


def receive(bench: Bench, record: ConnectionRecord, app: contextvars.Context, text: str) -> None:
    """A client's text message, then the app's receive() that gets it."""
    bench.bytes_in(record, client_frame(Opcode.TEXT, text.encode()))
    asked = time_ns()
    app.run(record.on_receive_enter, asked)
    app.run(record.on_receive_exit, asked, time_ns(), {"type": "websocket.receive", "text": text})


def end(record: ConnectionRecord, app: contextvars.Context) -> None:
    """The app returns, then the connection is lost: the record finishes."""
    app.run(record.on_app_end, time_ns(), None)
    record.on_lost(time_ns(), None)


def send(
    bench: Bench, app: contextvars.Context, to: ConnectionRecord, text: str, frames: int = 1
) -> None:
    """The app (running in ``app``) sends ``text`` to connection ``to``, in ``frames`` frames."""
    message = {"type": "websocket.send", "text": text}
    record = app.run(to.on_send_enter, time_ns(), message)
    for i in range(frames):
        opcode = Opcode.TEXT if i == 0 else Opcode.CONTINUATION
        bench.bytes_out(to, encode_frame(opcode, text.encode(), fin=i == frames - 1))
    app.run(to.on_send_exit, record, time_ns(), None)


def test_a_message_holds_its_frames_and_sends() -> None:
    bench = make_bench()
    record, app = opened(bench)
    receive(bench, record, app, "bid 10")
    send(bench, app, record, "ok", frames=2)
    app.run(record.on_receive_enter, time_ns())  # the app asks for the next: handled
    end(record, app)
    tree = Tree(bench.spans)
    (connection,) = tree.connections()
    (message,) = tree.kids(connection, vocab.WS_MESSAGE_RECEIVE)
    assert message.attributes[vocab.WS_MESSAGE_SIZE] == len("bid 10")
    assert message.attributes[vocab.MESSAGE_INDEX] == 1
    (frame,) = tree.kids(message, vocab.WS_FRAME_RECEIVE)
    assert frame.attributes[vocab.WS_MASK] is True
    (sent,) = tree.kids(message, vocab.WS_MESSAGE_SEND)
    assert sent.attributes[vocab.WS_MESSAGE_FRAMES] == 2
    assert [f.attributes[vocab.WS_FIN] for f in tree.kids(sent, vocab.WS_FRAME_SEND)] == [
        False,
        True,
    ]


def test_a_message_s_size_is_its_bytes_on_the_wire() -> None:
    bench = make_bench()
    record, app = opened(bench)
    receive(bench, record, app, "prix: 10 €")  # 10 characters, 12 bytes of UTF-8
    send(bench, app, record, "reçu")  # 4 characters, 5 bytes
    app.run(record.on_receive_enter, time_ns())
    tree = Tree(bench.spans)
    (message,) = bench.named(vocab.WS_MESSAGE_RECEIVE)
    (frame,) = tree.kids(message, vocab.WS_FRAME_RECEIVE)
    assert message.attributes[vocab.WS_MESSAGE_SIZE] == frame.attributes[
        vocab.WS_PAYLOAD_LENGTH] == 12  # fmt: skip
    (sent,) = tree.kids(message, vocab.WS_MESSAGE_SEND)
    (out,) = tree.kids(sent, vocab.WS_FRAME_SEND)
    assert sent.attributes[vocab.WS_MESSAGE_SIZE] == out.attributes[vocab.WS_PAYLOAD_LENGTH] == 5


def test_sends_to_other_connections_become_a_broadcast() -> None:
    bench = make_bench()
    owner, app = opened(bench)
    other, _ = opened(bench)
    receive(bench, owner, app, "bid 11")
    send(bench, app, other, "new bid")
    send(bench, app, owner, "new bid")
    app.run(owner.on_receive_enter, time_ns())
    tree = Tree(bench.spans)
    (message,) = bench.named(vocab.WS_MESSAGE_RECEIVE)
    (broadcast,) = tree.kids(message, vocab.WS_BROADCAST)
    assert broadcast.attributes[vocab.BROADCAST_RECIPIENTS] == 2
    assert broadcast.attributes["wstrace.broadcast.detected"] == "automatic"
    sends = tree.kids(broadcast, vocab.WS_MESSAGE_SEND)
    to_other = next(s for s in sends if s.attributes[vocab.CONNECTION_ID] == other.id)
    assert [link.context for link in to_other.links] == [other.span_context]
    # The frames a send put on the other connection's wire hang under that send.
    assert len(tree.kids(to_other, vocab.WS_FRAME_SEND)) == 1


def test_group_fan_out_splits_runs_at_a_repeated_recipient() -> None:
    bench = make_bench()
    a, _ = opened(bench)
    b, _ = opened(bench)
    sends = [SendRecord(0, r, "text", 1) for r in (a, a, b, a, b)]
    groups = [[s.recipient.id for s in g] for g in group_fan_out(sends, a)]
    assert groups == [[a.id], [a.id, b.id], [a.id, b.id]]


@pytest.mark.parametrize("to", ["a", "b", "aa", "ab", "ba", "aba"])
def test_what_sends_become_is_the_grouping_whatever_the_shortcut(to: str) -> None:
    """One send to the owner skips the grouping: it must come out as the grouping says."""
    bench = make_bench()
    a, _ = opened(bench)
    b, _ = opened(bench)
    handling = Handling(a, None)
    handling.sends = [SendRecord(i, {"a": a, "b": b}[r], "text", 1) for i, r in enumerate(to)]
    for i, send_record in enumerate(handling.sends):
        send_record.end = i + 10
    made = list(sends_made(handling, a))
    grouped = [
        (group, group[0].start, group[-1].end,
         None if len(group) == 1 and group[0].recipient is a else "automatic")
        for group in group_fan_out(handling.sends, a)
    ]  # fmt: skip
    assert made == grouped


def test_a_push_only_app_is_flushed_in_batches() -> None:
    bench = make_bench()
    record, app = opened(bench)
    for i in range(GREETING_FLUSH + 1):
        send(bench, app, record, f"tick {i}")
    # The first batch is out while the app still runs; the record holds the rest only.
    assert len(bench.named(vocab.WS_MESSAGE_SEND)) == GREETING_FLUSH
    assert len(record.handling.sends) == 1
    end(record, app)
    tree = Tree(bench.spans)
    (app_span,) = bench.named(vocab.ASGI_APP)
    assert len(tree.kids(app_span, vocab.WS_MESSAGE_SEND)) == GREETING_FLUSH + 1


def test_past_the_cap_a_message_gets_its_own_linked_trace() -> None:
    bench = make_bench(max_messages_per_trace=1)
    record, app = opened(bench)
    receive(bench, record, app, "first")
    receive(bench, record, app, "second")
    app.run(record.on_receive_enter, time_ns())
    first, second = sorted(bench.named(vocab.WS_MESSAGE_RECEIVE), key=lambda s: s.start_time)
    assert first.parent.span_id == record.span_context.span_id
    assert vocab.MESSAGES_OVERFLOWED not in first.attributes
    assert second.parent is None and second.attributes[vocab.MESSAGES_OVERFLOWED] is True
    assert second.context.trace_id != record.span_context.trace_id
    assert [link.context for link in second.links] == [record.span_context]


def test_a_ping_hangs_under_its_connection() -> None:
    bench = make_bench()
    record, _ = opened(bench)
    bench.bytes_in(record, client_frame(Opcode.PING, b"?"))
    (ping,) = bench.named(vocab.WS_FRAME_RECEIVE)
    assert ping.parent.span_id == record.span_context.span_id
    assert ping.attributes[vocab.WS_OPCODE] == Opcode.PING


def test_messages_never_received_are_emitted_as_undelivered() -> None:
    bench = make_bench()
    record, app = opened(bench)
    bench.bytes_in(record, client_frame(Opcode.TEXT, b"one"))
    bench.bytes_in(record, client_frame(Opcode.BINARY, b"half", fin=False))
    end(record, app)
    undelivered = bench.named(vocab.WS_MESSAGE_RECEIVE)
    assert sorted(s.attributes[vocab.WS_MESSAGE_TYPE] for s in undelivered) == ["binary", "text"]
    assert {s.attributes[vocab.ERROR_TYPE] for s in undelivered} == {"undelivered"}


@pytest.mark.parametrize(
    ("frames", "code", "initiator"),
    [
        ([close_frame(4001)], 4001, vocab.INITIATOR_CLIENT),
        ([client_frame(Opcode.CLOSE, b"")], 1005, vocab.INITIATOR_CLIENT),  # no status code
        ([], 1006, vocab.INITIATOR_NONE),  # no close frame at all
    ],
    ids=["code", "no-status", "abnormal"],
)
def test_the_close(frames: list[bytes], code: int, initiator: str) -> None:
    bench = make_bench()
    record, app = opened(bench)
    for frame in frames:
        bench.bytes_in(record, frame)
    end(record, app)
    tree = Tree(bench.spans)
    (connection,) = tree.connections()
    (close,) = tree.kids(connection, vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == code
    assert close.attributes[vocab.WS_CLOSE_INITIATOR] == initiator
    assert connection.attributes[vocab.WS_CLOSE_CODE] == code
    assert len(tree.kids(close, vocab.WS_FRAME_RECEIVE)) == len(frames)
    assert (close.attributes.get(vocab.ERROR_TYPE) == "abnormal-closure") == (code == 1006)


@pytest.mark.parametrize(
    ("shape", "index", "expected"),
    [
        (vocab.SHAPE_CONNECTION, 1, UNDER_CONNECTION),
        (vocab.SHAPE_CONNECTION, 3, UNDER_CONNECTION),
        (vocab.SHAPE_CONNECTION, 4, OVERFLOWED),
        (vocab.SHAPE_MESSAGE, 1, OWN_TRACE),
        (vocab.SHAPE_MESSAGE, 4, OWN_TRACE),  # never "overflowed": every message is its own
    ],
)
def test_message_placement(shape: str, index: int, expected: int) -> None:
    """The one rule both the server's recorder and the middleware alone follow."""
    config = TracerConfig(shape=shape, max_messages_per_trace=3)
    assert message_placement(config, index) == expected


# --- The request head, held until the answer goes out ---------------------------------------


def test_a_held_request_head_is_decoded_as_of_its_arrival() -> None:
    """The head in one chunk (as uvicorn hands it over) is decoded when the 101 goes out:
    the handshake starts when it arrived, and the app that started in between gets its path;
    a frame pipelined behind the head is still decoded once the 101 is out."""
    bench = make_bench()
    record = bench.record()
    arrived = time_ns()
    pipelined = client_frame(Opcode.TEXT, b"early")
    frames = record.on_bytes_in(arrived, upgrade_request("/ws/held") + pipelined)
    assert not frames
    assert record.request is None  # held, not decoded yet
    assert record.path == "/ws/held"  # but in: checked, with its path
    assert record.handshake_start == arrived
    app = bench.app_start(record)
    bench.bytes_out(record, response_101())
    (handshake,) = bench.named(vocab.WS_HANDSHAKE)  # from the head, decoded by now
    assert handshake.start_time == arrived
    assert handshake.attributes[vocab.URL_PATH] == "/ws/held"
    assert handshake.attributes[vocab.HTTP_REQUEST_METHOD] == "GET"
    assert handshake.attributes[vocab.WS_VERSION] == "13"
    assert [[f.frame.payload_length for f in m.frames] for m in record.completed] == [[5]]
    end(record, app)
    (app_span,) = bench.named(vocab.ASGI_APP)
    assert app_span.attributes[vocab.URL_PATH] == "/ws/held"
    (connection,) = bench.named(vocab.CONNECTION)
    assert connection.attributes[vocab.URL_PATH] == "/ws/held"


def test_a_held_request_head_names_the_app_that_ends_before_any_answer() -> None:
    bench = make_bench()
    record = bench.record()
    bench.bytes_in(record, upgrade_request("/ws/quick"))
    app = bench.app_start(record)
    end(record, app)
    (app_span,) = bench.named(vocab.ASGI_APP)
    assert app_span.attributes[vocab.URL_PATH] == "/ws/quick"
    (handshake,) = bench.named(vocab.WS_HANDSHAKE)
    assert handshake.attributes[vocab.HTTP_REQUEST_METHOD] == "GET"


def test_a_malformed_request_head_is_decoded_as_it_comes() -> None:
    bench = make_bench()
    record = bench.record()
    arrived = time_ns()
    record.on_bytes_in(arrived, b"GET /ws HTTP/1.1\r\nBad Header: x\r\n\r\n")
    assert record.held_request is None
    assert [(at, error.kind) for at, error in record.wire_errors] == [(arrived, "bad-header-line")]
    assert record.path is None


def test_a_request_head_in_pieces_is_decoded_as_it_comes() -> None:
    bench = make_bench()
    record = bench.record()
    head = upgrade_request("/ws/split")
    bench.bytes_in(record, head[:10])
    assert record.held_request is None and record.request is None
    bench.bytes_in(record, head[10:])
    assert record.request is not None and record.path == "/ws/split"


# --- Messages emitted a batch at a time, with an event loop running, when they go as facts ----


def _indexes(bench: Bench) -> list[int]:
    return [s.attributes[vocab.MESSAGE_INDEX] for s in bench.named(vocab.WS_MESSAGE_RECEIVE)]


def test_handled_messages_wait_for_their_batch_and_keep_their_order() -> None:
    async def play() -> list[list[int]]:
        bench = make_facts_bench()
        record, app = opened(bench)
        seen = []
        for text in ("bid 1", "bid 2", "bid 3"):
            receive(bench, record, app, text)  # the one before is over: it waits
            send(bench, app, record, "ok")
        seen.append(_indexes(bench))  # none yet
        loop = asyncio.get_running_loop()
        assert loop in batches._loops_waiting  # a flush from another thread would ask it
        await asyncio.sleep(batches.DELAY_S * 3)
        seen.append(_indexes(bench))  # the first two, in the batch the first one started
        assert loop not in batches._loops_waiting  # its timer went off: nothing to ask
        app.run(record.on_receive_enter, time_ns())  # the third waits in a batch of its own
        end(record, app)  # and goes before the connection's close and end
        seen.append(_indexes(bench))
        names = [s.name for s in bench.spans]
        assert names.index(vocab.WS_CLOSE) > max(
            i for i, name in enumerate(names) if name == vocab.WS_MESSAGE_RECEIVE
        )
        return seen

    assert asyncio.run(play()) == [[], [1, 2], [1, 2, 3]]


def test_a_full_batch_goes_without_waiting_for_its_time() -> None:
    async def play() -> list[int]:
        bench = make_facts_bench()
        record, app = opened(bench)
        for n in range(batches.MAX_WAITING + 2):
            receive(bench, record, app, f"bid {n}")
        emitted = _indexes(bench)  # no sleep: the loop never ran the timer
        end(record, app)  # the last two, as the app returns
        assert _indexes(bench) == list(range(1, batches.MAX_WAITING + 3))
        return emitted

    assert asyncio.run(play()) == list(range(1, batches.MAX_WAITING + 1))


def test_a_connections_batch_reaches_a_processor_that_takes_lists_in_one_list() -> None:
    """A processor with ``on_facts`` (the export pipeline) is handed a connection's waiting
    messages in one call, in their order; one with ``on_fact`` alone, each in turn."""

    class TakingLists(FactCollector):
        def __init__(self) -> None:
            super().__init__()
            self.lists: list[int] = []

        def on_facts(self, given: list[tuple[object, ...]]) -> None:
            self.lists.append(len(given))
            self.facts.extend(given)

    async def play() -> tuple[list[int], list[int]]:
        bench = make_facts_bench()
        lists = TakingLists()
        bench.recorder.sdk.processor.add_span_processor(lists)  # type: ignore[union-attr]
        record, app = opened(bench)
        for n in range(4):
            receive(bench, record, app, f"bid {n}")
            send(bench, app, record, "ok")
        await asyncio.sleep(batches.DELAY_S * 3)
        end(record, app)
        templates = [f for f in lists.facts if facts.is_template(f)]
        return lists.lists, [f[facts.Field.SPAN_ID] for f in templates]

    handed, ids = asyncio.run(play())
    assert handed[0] == 3  # the first three messages, over before the batch went: one list
    assert len(ids) == 4 and len(set(ids)) == 4


def test_with_no_event_loop_running_a_message_goes_at_once() -> None:
    bench = make_facts_bench()
    record, app = opened(bench)
    receive(bench, record, app, "bid 1")
    receive(bench, record, app, "bid 2")
    assert _indexes(bench) == [1]
    end(record, app)


def test_to_the_sdks_processors_a_message_goes_as_soon_as_it_is_over() -> None:
    """Spans built in the server (the user's own processors) do not wait for a batch: they
    reach the processors when the app asks for the next message, as the SDK's would."""

    async def play() -> list[int]:
        bench = make_bench()
        record, app = opened(bench)
        receive(bench, record, app, "bid 1")
        receive(bench, record, app, "bid 2")
        emitted = _indexes(bench)  # no sleep, a loop running: no timer to wait for
        end(record, app)
        return emitted

    assert asyncio.run(play()) == [1]


def test_a_flush_from_another_thread_has_the_loop_emit_what_waits() -> None:
    bench = make_facts_bench()
    waiting = threading.Event()
    release = threading.Event()

    async def play() -> None:
        record, app = opened(bench)
        for text in ("bid 1", "bid 2", "bid 3"):
            receive(bench, record, app, text)
        app.run(record.on_receive_enter, time_ns())  # the third is over too: it waits
        waiting.set()
        while not release.is_set():
            await asyncio.sleep(0.001)  # the loop runs on, as a server's does
        end(record, app)

    loop_thread = threading.Thread(target=asyncio.run, args=(play(),))
    delay, batches.DELAY_S = batches.DELAY_S, 60.0  # no batch's timer goes off in the test
    loop_thread.start()
    try:
        assert waiting.wait(5)
        assert _indexes(bench) == []  # waiting on the loop's thread
        assert batches.flush_waiting(5) is True
        assert _indexes(bench) == [1, 2, 3]  # emitted by that loop, before the flush returned
    finally:
        release.set()
        loop_thread.join(5)
        batches.DELAY_S = delay
    assert batches.flush_waiting(0.1) is True  # nothing waits: nothing to ask


def test_a_flush_does_not_wait_for_a_loop_that_no_longer_runs() -> None:
    bench = make_facts_bench()
    loop = asyncio.new_event_loop()
    played: list[tuple[ConnectionRecord, contextvars.Context]] = []

    async def play() -> None:
        record, app = opened(bench)
        receive(bench, record, app, "bid 1")
        receive(bench, record, app, "bid 2")  # the first waits for a timer that never runs
        played.append((record, app))

    # On a thread of its own, which ends with the loop stopped (not closed).
    loop_thread = threading.Thread(target=loop.run_until_complete, args=(play(),))
    loop_thread.start()
    loop_thread.join(5)
    (record, app), = played
    try:
        # Not asked (asked, it would never answer, and the flush would say False).
        assert batches.flush_waiting(0.5) is True
        assert _indexes(bench) == []
        end(record, app)  # what waits goes with its record: nothing lost
        assert _indexes(bench) == [1, 2]
    finally:
        loop.close()


def test_every_export_pipeline_flush_hands_over_what_waits_first() -> None:
    assert batches.flush_waiting in pipeline._before_flush


@pytest.mark.parametrize("generator", ["sdk", "own"])
def test_a_child_context_is_the_one_the_sdk_would_make(generator: str) -> None:
    """Children's contexts are laid out without SpanContext's checks when the SDK's own ids
    are used: the same six fields, validity included, as SpanContext() makes."""

    class Zeros(RandomIdGenerator):
        """Span ids the API calls invalid."""

        def generate_span_id(self) -> int:
            return 0

    ids = RandomIdGenerator() if generator == "sdk" else Zeros()
    sdk = SdkParts.of(TracerProvider(id_generator=ids).get_tracer("t"))
    assert sdk is not None and (sdk.new_span_id is _random_span_id) == (generator == "sdk")
    state = TraceState([("k", "v")])
    for parent in (
        trace.SpanContext(0x1234, 0x99, False, TraceFlags(TraceFlags.SAMPLED), state),
        trace.SpanContext(0x1234, 0x99, True, TraceFlags(0)),
        trace.INVALID_SPAN_CONTEXT,
    ):
        child = sdk.child_context(parent)
        expected = trace.SpanContext(parent.trace_id, child.span_id, False, parent.trace_flags,
                                     parent.trace_state)  # fmt: skip
        assert type(child) is trace.SpanContext
        assert tuple(child) == tuple(expected)
        assert child.is_valid == (parent.is_valid and generator == "sdk")
