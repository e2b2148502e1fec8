"""``WsTrace`` (what the ``ws_trace`` fixture yields) used directly: bounded waits, the views
of a fan-out across connections, and an instrumentation already in place set aside."""

from __future__ import annotations

import contextlib

import pytest
from websockets.sync.client import connect

import tracer
from tests.support.apps import echo_app, joined_room_app
from tests.support.tracing import make_provider
from tracer.analysis.query import TraceAssertionError
from tracer.hooks.context import Active
from tracer.instrumentor import WebSocketInstrumentor
from tracer.testing import WsTrace


def test_a_closed_connection_reads_complete(ws_server, ws_trace) -> None:
    url = ws_server(echo_app(), http="h11", ws="websockets-sansio")
    with connect(url + "/echo", compression=None) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
    conn = ws_trace.connection("/echo")
    conn.assert_accepted().assert_closed(code=1000, initiator="client")
    assert conn.handshake.header("upgrade") == "websocket"
    assert conn.handshake.duration is not None and conn.handshake.duration > 0
    assert any(frame.file.endswith("starlette/routing.py") for frame in conn.stack)
    assert [(m.direction, m.type, m.size) for m in conn.messages] == [
        ("receive", "text", 5),
        ("send", "text", 5),
    ]
    assert "ws.close" in conn.tree() and "\x1b[" not in conn.tree()
    with pytest.raises(TraceAssertionError, match="no ping frame recorded") as failed:
        conn.assert_ping_answered()
    assert "└── ws.close" in str(failed.value)  # the tree explains the failure
    with pytest.raises(TraceAssertionError, match=r"handshake accepted \(101\)"):
        conn.assert_handshake_refused()
    with pytest.raises(TraceAssertionError, match="reason None, expected 'bye'"):
        conn.assert_closed(code=1000, reason="bye")
    with pytest.raises(TraceAssertionError, match=r"one connection on '/nowhere', found 0"):
        ws_trace.connection("/nowhere")


def test_reading_while_a_connection_is_open_fails_within_the_bound(ws_server, ws_trace) -> None:
    url = ws_server(echo_app(), http="h11", ws="wsproto")
    ws_trace.timeout = 0.3
    with connect(url + "/echo") as ws:
        ws.send("x")
        ws.recv()
        with pytest.raises(TraceAssertionError, match=r"1 connection\(s\) still open after 0.3 s"):
            ws_trace.connections  # noqa: B018 - the property is what waits
    assert len(ws_trace.connections) == 1


def test_wait_for_connections_counts_finished_ones(ws_server, ws_trace) -> None:
    url = ws_server(echo_app(), http="httptools", ws="websockets")
    for _ in range(2):
        with connect(url + "/push?count=2") as ws:
            assert [ws.recv(), ws.recv()] == ["tick 0", "tick 1"]
    found = ws_trace.wait_for_connections(2, path="/push")
    assert [c.close.code for c in found if c.close] == [1000, 1000]
    with pytest.raises(TraceAssertionError, match=r"expected 3 finished connection\(s\)"):
        ws_trace.wait_for_connections(3, timeout=0.2)
    ws_trace.clear()
    assert len(ws_trace.connections) == 0


def test_a_fan_out_is_seen_from_the_sender_and_on_each_recipient_wire(ws_server, ws_trace) -> None:
    url = ws_server(joined_room_app(), http="h11", ws="wsproto") + "/room"
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(connect(url, compression=None, subprotocols=[f"bids.v{n}"]))
            for n in range(3)
        ]
        assert [client.recv(timeout=5) for client in clients] == ["joined"] * 3
        clients[0].send("bid")
        assert [client.recv(timeout=5) for client in clients] == ["bid"] * 3
    conns = ws_trace.connections.where("/room")
    assert sorted(conn.handshake.subprotocol for conn in conns) == ["bids.v0", "bids.v1", "bids.v2"]
    [sender] = conns.where(predicate=lambda conn: bool(conn.broadcasts))
    sender.assert_broadcast_reached(3)
    [broadcast] = sender.broadcasts
    assert sorted(broadcast.recipient_numbers) == sorted(conn.number for conn in conns)
    for conn in conns:
        sent = [(f.opcode_name, f.length) for f in conn.frames if f.direction == "send"]
        assert sent == [("text", 6), ("text", 3), ("close", 2)], conn.label
    with pytest.raises(TraceAssertionError, match="broadcasts reached 3 connection"):
        sender.assert_broadcast_reached(2)


def test_an_instrumentation_in_place_is_set_aside_and_restored() -> None:
    provider, exporter, _ = make_provider()
    tracer.instrument(tracer_provider=provider)
    try:
        prior = Active.recorder
        with WsTrace() as recording:
            assert Active.recorder is not prior
            app = echo_app()
            with recording.serve(app, http="h11", ws="websockets-sansio") as url, connect(
                url + "/echo"
            ) as ws:
                ws.send("x")
                ws.recv()
            assert len(recording.connections) == 1
        assert Active.recorder is prior
        assert WebSocketInstrumentor().is_instrumented_by_opentelemetry
        assert not [s for s in exporter.get_finished_spans() if s.name == "ws.connection"]
    finally:
        tracer.uninstrument()
    with WsTrace():
        assert WebSocketInstrumentor().is_instrumented_by_opentelemetry
    assert not WebSocketInstrumentor().is_instrumented_by_opentelemetry


def test_testclient_connections_are_seen_by_the_middleware_alone(ws_trace) -> None:
    client = ws_trace.test_client(joined_room_app())
    with client.websocket_connect("/room", subprotocols=["bids.v1"]) as ws:
        assert ws.receive_text() == "joined"
        ws.send_text("bid")
        assert ws.receive_text() == "bid"
    conn = ws_trace.connection("/room")
    assert (conn.source, conn.wire_visible) == ("asgi", False)
    assert (conn.handshake.status, conn.handshake.subprotocol) == (101, "bids.v1")
    assert [(m.direction, m.size) for m in conn.messages] == [
        ("send", 6),
        ("receive", 3),
        ("send", 3),
    ]
    conn.assert_closed(code=1000, initiator="client")
    with pytest.raises(TraceAssertionError, match="sees messages, not frames"):
        conn.assert_ping_answered()


@pytest.mark.wstrace(shape="message")
def test_message_shape_traces_fold_into_their_connection(ws_server, ws_trace) -> None:
    url = ws_server(echo_app(), http="httptools", ws="websockets-sansio")
    with connect(url + "/echo", compression=None) as ws:
        for text in ("one", "two"):
            ws.send(text)
            assert ws.recv() == text
    conn = ws_trace.connection()
    assert len({span.trace_id for span in conn.spans}) == 3  # the connection's, one per message
    assert [(m.direction, m.size) for m in conn.messages] == [
        ("receive", 3),
        ("send", 3),
        ("receive", 3),
        ("send", 3),
    ]
    assert [f.opcode_name for f in conn.frames if f.direction == "receive"] == [
        "text",
        "text",
        "close",
    ]


@pytest.mark.wstrace(frames="off")
def test_frame_assertions_refuse_a_recording_without_frames(ws_server, ws_trace) -> None:
    with connect(ws_server(echo_app(), http="h11", ws="wsproto") + "/echo") as ws:
        ws.send("x")
        ws.recv()
    conn = ws_trace.connection()
    assert conn.frames == [] and len(conn.messages) == 2
    with pytest.raises(TraceAssertionError, match=r"frames were not recorded \(frames='off'\)"):
        ws_trace.assert_no_frame_larger_than(65536)
