"""The middleware alone: ASGI messages turned into the facts the hooks would report, driven by
hand on a record without a server or a wire (the real-server runs are in test_asgi_trace.py
and the pytest plugin's TestClient tests)."""

from __future__ import annotations

import contextvars
from time import time_ns
from typing import Any

import pytest

from tests.support.records import Bench, make_bench
from tracer import vocab
from tracer._contain import errors
from tracer.recorder import ConnectionRecord
from tracer.recorder.phase import Phase

pytestmark = pytest.mark.fast


@pytest.fixture(autouse=True)
def no_tracer_errors() -> Any:
    """Every scenario here is one an app may play: none may count an error of the tracer's
    (an invalid phase transition included)."""
    errors.reset()
    yield
    assert errors.counts == {}


def send(record: ConnectionRecord, message: dict[str, Any]) -> None:
    sent = record.on_asgi_send_enter(time_ns(), message)
    record.on_asgi_send_exit(sent, message, time_ns(), None)


def receive(record: ConnectionRecord, message: dict[str, Any]) -> None:
    asked = time_ns()
    record.on_receive_enter(asked)
    record.on_asgi_receive(asked, time_ns(), message)


def end(record: ConnectionRecord) -> None:
    at = time_ns()
    record.on_app_end(at, None)
    record.on_lost(at, None)


def started(bench: Bench) -> tuple[ConnectionRecord, contextvars.Context]:
    record = bench.asgi_record()
    app = contextvars.Context()
    app.run(record.on_app_start, time_ns(), None, False)
    return record, app


def test_accept_opens_the_connection_and_makes_ws_accept() -> None:
    bench = make_bench()
    record, app = started(bench)
    assert record.phase == Phase.HANDSHAKE
    app.run(send, record, {"type": "websocket.accept", "subprotocol": "chat"})
    assert record.phase == Phase.OPEN and record.status == 101
    (accept,) = bench.named(vocab.WS_ACCEPT)
    assert accept.attributes[vocab.WS_SUBPROTOCOL] == "chat"
    assert accept.attributes[vocab.HTTP_RESPONSE_STATUS_CODE] == 101
    assert accept.end_time >= accept.start_time
    app.run(end, record)
    (conn,) = bench.named(vocab.CONNECTION)
    assert conn.attributes[vocab.SOURCE] == vocab.SOURCE_ASGI
    assert conn.attributes[vocab.HTTP_RESPONSE_STATUS_CODE] == 101
    assert not bench.named(vocab.WS_HANDSHAKE)  # the wire alone shows the handshake itself


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ({"type": "websocket.close"}, 403),  # ASGI: a close before accepting is a 403
        ({"type": "websocket.http.response.start", "status": 401, "headers": []}, 401),
    ],
)
def test_an_answer_before_accept_rejects(message: dict[str, Any], status: int) -> None:
    bench = make_bench()
    record, app = started(bench)
    app.run(send, record, message)
    assert record.phase == Phase.REJECTED and record.status == status
    app.run(end, record)
    (conn,) = bench.named(vocab.CONNECTION)
    assert conn.attributes[vocab.HTTP_RESPONSE_STATUS_CODE] == status
    assert not bench.named(vocab.WS_CLOSE) and not bench.named(vocab.WS_ACCEPT)


def test_messages_and_sends_make_the_same_spans_as_under_the_hooks() -> None:
    bench = make_bench()
    record, app = started(bench)
    app.run(send, record, {"type": "websocket.accept"})
    for text in ("a", "bb"):
        app.run(receive, record, {"type": "websocket.receive", "text": text})
        app.run(send, record, {"type": "websocket.send", "text": text.upper()})
    app.run(receive, record, {"type": "websocket.disconnect", "code": 1001})
    app.run(end, record)
    messages = bench.named(vocab.WS_MESSAGE_RECEIVE)
    assert [m.attributes[vocab.WS_MESSAGE_SIZE] for m in messages] == [1, 2]
    for message in messages:
        (reply,) = [s for s in bench.named(vocab.WS_MESSAGE_SEND) if s.parent == message.context]
        assert reply.attributes[vocab.WS_MESSAGE_SIZE] == message.attributes[vocab.WS_MESSAGE_SIZE]
    (close,) = bench.named(vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1001
    assert close.attributes[vocab.WS_CLOSE_INITIATOR] == vocab.INITIATOR_CLIENT


def test_the_first_close_decides_who_closed() -> None:
    bench = make_bench()
    record, app = started(bench)
    app.run(send, record, {"type": "websocket.accept"})
    app.run(send, record, {"type": "websocket.close", "code": 4000, "reason": "bye"})
    assert record.phase == Phase.CLOSING
    app.run(receive, record, {"type": "websocket.disconnect", "code": 1000})
    app.run(end, record)
    (close,) = bench.named(vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 4000
    assert close.attributes[vocab.WS_CLOSE_REASON] == "bye"
    assert close.attributes[vocab.WS_CLOSE_INITIATOR] == vocab.INITIATOR_SERVER


def test_an_app_that_returns_without_a_close_is_an_abnormal_closure() -> None:
    bench = make_bench()
    record, app = started(bench)
    app.run(send, record, {"type": "websocket.accept"})
    app.run(end, record)
    (close,) = bench.named(vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1006  # RFC 6455 §7.1.5
    assert record.phase == Phase.FINISHED


def test_a_close_before_accept_keeps_the_app_s_code_on_the_connection() -> None:
    bench = make_bench()
    record, app = started(bench)
    app.run(send, record, {"type": "websocket.close", "code": 4001, "reason": "no seat"})
    app.run(end, record)
    (conn,) = bench.named(vocab.CONNECTION)
    assert conn.attributes[vocab.HTTP_RESPONSE_STATUS_CODE] == 403
    assert conn.attributes[vocab.WS_CLOSE_CODE] == 4001  # not 1006: the app said why


def test_a_second_accept_is_the_app_s_mistake_not_a_phase() -> None:
    bench = make_bench()
    record, app = started(bench)
    app.run(send, record, {"type": "websocket.accept"})
    app.run(send, record, {"type": "websocket.accept"})  # a lenient server lets it through
    app.run(end, record)
    assert len(bench.named(vocab.WS_ACCEPT)) == 1
