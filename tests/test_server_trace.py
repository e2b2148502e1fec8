"""The server layer, traced for real: uvicorn on a loopback port, real clients, all six pairs."""

from __future__ import annotations

import asyncio
import linecache
import os
import time
from importlib.metadata import entry_points

import pytest
import websockets
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import connect

import tracer
from tests.support import raw
from tests.support.apps import echo_app
from tests.support.server import IMPL_PAIRS, run_server
from tests.support.tracing import (
    Tree,
    assert_all_ended,
    assert_nested,
    closed_connections,
    traced,
    wait_until,
)
from tracer import vocab
from tracer._contain import errors
from tracer.hooks import http as http_hooks
from tracer.hooks import ws as ws_hooks
from tracer.hooks.patching import import_quietly, resolve
from tracer.wire import accept_key

pairs = pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS, ids=[f"{h}-{w}" for h, w in IMPL_PAIRS])


def assert_code_points_at_function(span) -> None:
    attrs = span.attributes
    path = attrs[vocab.CODE_FILE_PATH]
    line = attrs[vocab.CODE_LINE_NUMBER]
    function = attrs[vocab.CODE_FUNCTION_NAME].rsplit(".", 1)[-1]
    assert os.path.isfile(path), path
    source = "".join(linecache.getline(path, n) for n in range(line, line + 4))
    assert f"def {function}" in source, (span.name, path, line, source)


async def echo_once(url: str) -> str:
    async with connect(url + "/echo") as client:
        await client.send("hello")
        reply = await asyncio.wait_for(client.recv(), 5)
    return reply


@pairs
def test_every_stage_is_recorded_nested_and_located(http: str, ws: str) -> None:
    with traced() as t, run_server(echo_app(), http=http, ws=ws) as server:
        assert asyncio.run(echo_once(server.ws_url)) == "hello"
        wait_until(closed_connections(t, 1))
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    assert conn.attributes[vocab.IMPL_HTTP] == http
    assert conn.attributes[vocab.IMPL_WS] == ws
    assert conn.attributes[vocab.URL_PATH] == "/echo"
    assert conn.attributes[vocab.CLIENT_ADDRESS] == "127.0.0.1"
    assert conn.parent is None

    names = [s.name for s in tree.kids(conn)]
    for stage in (
        vocab.HTTP_HEADERS_PARSE,
        vocab.HTTP_UPGRADE_DETECT,
        vocab.WS_PROTOCOL_SWITCH,
        vocab.WS_HANDSHAKE,
        vocab.ASGI_APP,
        vocab.WS_MESSAGE_RECEIVE,
        vocab.WS_CLOSE,
    ):
        assert stage in names, (stage, names)
    parse, detect, switch = (tree.kids(conn, n)[0] for n in names[:3])
    assert (parse.name, detect.name, switch.name) == (
        vocab.HTTP_HEADERS_PARSE,
        vocab.HTTP_UPGRADE_DETECT,
        vocab.WS_PROTOCOL_SWITCH,
    )
    assert parse.end_time <= detect.start_time <= switch.start_time

    (handshake,) = tree.kids(conn, vocab.WS_HANDSHAKE)
    assert tree.kids(handshake, vocab.WS_HANDSHAKE_VALIDATE)
    (response,) = tree.kids(handshake, vocab.WS_HANDSHAKE_RESPONSE)
    key = response.attributes[vocab.WS_KEY]
    assert response.attributes[vocab.HTTP_RESPONSE_STATUS_CODE] == 101
    assert response.attributes[vocab.WS_ACCEPT_KEY] == accept_key(key)
    assert response.attributes[vocab.WS_ACCEPT_VALID] is True

    (app,) = tree.kids(conn, vocab.ASGI_APP)
    (accept,) = tree.kids(app, vocab.WS_ACCEPT)
    (stack_event,) = [e for e in accept.events if e.name == vocab.EVENT_HANDSHAKE_STACK]
    functions = list(stack_event.attributes[vocab.STACK_FUNCTIONS])
    assert any(f.endswith("run_asgi") for f in functions), functions
    assert functions[-1].rsplit(".", 1)[-1] in ("asgi_send", "send"), functions
    assert any("websocket_endpoint" in f or f == "echo_app.<locals>.echo" for f in functions)

    (message,) = tree.kids(conn, vocab.WS_MESSAGE_RECEIVE)
    assert message.attributes[vocab.WS_MESSAGE_TYPE] == "text"
    assert message.attributes[vocab.WS_MESSAGE_SIZE] == 5
    assert message.attributes[vocab.QUEUE_WAIT_NS] >= 0
    delivered = message.start_time + message.attributes[vocab.DELIVERED_NS]
    handled = delivered + message.attributes[vocab.HANDLER_NS]
    assert message.start_time <= delivered <= handled == message.end_time
    (frame_in,) = tree.kids(message, vocab.WS_FRAME_RECEIVE)
    assert frame_in.attributes[vocab.WS_OPCODE_NAME] == "text"
    assert frame_in.attributes[vocab.WS_MASK] is True
    (send,) = tree.kids(message, vocab.WS_MESSAGE_SEND)
    (frame_out,) = tree.kids(send, vocab.WS_FRAME_SEND)
    assert frame_out.attributes[vocab.WS_MASK] is False

    (close,) = tree.kids(conn, vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1000
    assert close.attributes[vocab.WS_CLOSE_INITIATOR] == vocab.INITIATOR_CLIENT

    assert_nested(tree)
    for span in [conn, *tree.descendants(conn)]:
        assert_code_points_at_function(span)
    assert_all_ended(t)


@pairs
def test_recorded_frames_equal_the_bytes_on_the_wire(http: str, ws: str) -> None:
    """Fragments of non-ASCII text with a ping between them, 126 and 70000 bytes, close 1001
    "bye"."""
    key = bytes([1, 2, 3, 4])
    sent = [
        (0x1, "Hé".encode(), False),
        (0x9, b"ping!", True),
        (0x0, "lo€".encode(), True),
        (0x2, bytes(range(126)), True),
        (0x2, os.urandom(70000), True),
        (0x8, (1001).to_bytes(2, "big") + b"bye", True),
    ]
    with traced() as t, run_server(echo_app(), http=http, ws=ws) as server:
        sock, rest = raw.handshake(server.port, "/echo")
        for opcode, payload, fin in sent[:-1]:
            sock.sendall(raw.client_frame(opcode, payload, fin=fin, key=key))
            time.sleep(0.02)
        # Every echo and the pong are back before the close goes out: no race with the app.
        received, rest = raw.read_frames(sock, rest, count=4)
        opcode, payload, fin = sent[-1]
        sock.sendall(raw.client_frame(opcode, payload, fin=fin, key=key))
        received += raw.read_frames_until_close(sock, rest)
        sock.close()
        wait_until(closed_connections(t, 1))

    tree = Tree(t.spans)
    (conn,) = tree.connections()
    spans = tree.descendants(conn)

    def recorded(name: str) -> list[dict]:
        found = [s.attributes for s in spans if s.name == name]
        return sorted(found, key=lambda a: a[vocab.FRAME_OFFSET])

    inbound = recorded(vocab.WS_FRAME_RECEIVE)
    assert len(inbound) == len(sent)
    for attrs, (opcode, payload, fin) in zip(inbound, sent, strict=True):
        assert attrs[vocab.WS_OPCODE] == opcode
        assert attrs[vocab.WS_FIN] is fin
        assert attrs[vocab.WS_MASK] is True
        assert attrs[vocab.WS_MASKING_KEY] == key.hex()
        assert attrs[vocab.WS_PAYLOAD_LENGTH] == len(payload)
        expected_header = 2 + 4 + (0 if len(payload) < 126 else 2 if len(payload) < 65536 else 8)
        assert attrs[vocab.WS_HEADER_LENGTH] == expected_header
    assert inbound[-1][vocab.WS_CLOSE_CODE] == 1001
    assert inbound[-1][vocab.WS_CLOSE_REASON] == "bye"

    outbound = recorded(vocab.WS_FRAME_SEND)
    assert len(outbound) == len(received)
    for attrs, frame in zip(outbound, received, strict=True):
        assert attrs[vocab.WS_OPCODE] == frame["opcode"]
        assert attrs[vocab.WS_FIN] is frame["fin"]
        assert attrs[vocab.WS_MASK] is False
        assert attrs[vocab.WS_PAYLOAD_LENGTH] == frame["payload_length"]
        assert attrs[vocab.WS_HEADER_LENGTH] == frame["header_length"]
    opcodes = [f["opcode"] for f in received]
    assert opcodes.count(0xA) == 1 and opcodes[-1] == 0x8
    assert sorted(f["payload_length"] for f in received if f["opcode"] == 0x2) == [126, 70000]

    (message_text, *_) = [
        s
        for s in spans
        if s.name == vocab.WS_MESSAGE_RECEIVE and s.attributes[vocab.WS_MESSAGE_TYPE] == "text"
    ]
    assert message_text.attributes[vocab.WS_MESSAGE_FRAMES] == 2
    # Its size is in bytes, as the frames carry it ("Hélo€": 5 characters, 8 bytes of UTF-8),
    # and so is the echo's.
    assert message_text.attributes[vocab.WS_MESSAGE_SIZE] == len("Hélo€".encode()) == 8
    (echo,) = tree.kids(message_text, vocab.WS_MESSAGE_SEND)
    assert echo.attributes[vocab.WS_MESSAGE_SIZE] == 8
    assert [f.attributes[vocab.WS_PAYLOAD_LENGTH] for f in tree.kids(echo, vocab.WS_FRAME_SEND)] \
        == [8]
    (close,) = tree.kids(conn, vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1001
    assert close.attributes[vocab.WS_CLOSE_REASON] == "bye"
    assert_nested(tree)
    assert_all_ended(t)


@pairs
def test_plain_http_gets_no_websocket_spans(http: str, ws: str) -> None:
    import httpx

    with traced() as t, run_server(echo_app(), http=http, ws=ws) as server:
        with httpx.Client(base_url=server.http_url) as client:
            responses = [client.get("/plain") for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert responses[0].json() == {"ok": True}
        assert asyncio.run(echo_once(server.ws_url)) == "hello"  # same server still upgrades
        wait_until(closed_connections(t, 1))
    assert len(t.named(vocab.CONNECTION)) == 1
    assert_all_ended(t)


@pairs
def test_handshake_refused_by_the_app_is_a_403(http: str, ws: str) -> None:
    async def refused(url: str) -> int:
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            async with connect(url + "/reject"):
                pass
        return caught.value.response.status_code

    with traced() as t, run_server(echo_app(), http=http, ws=ws) as server:
        assert asyncio.run(refused(server.ws_url)) == 403
        wait_until(closed_connections(t, 1))
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    (handshake,) = tree.kids(conn, vocab.WS_HANDSHAKE)
    (response,) = tree.kids(handshake, vocab.WS_HANDSHAKE_RESPONSE)
    assert response.attributes[vocab.HTTP_RESPONSE_STATUS_CODE] == 403
    assert handshake.attributes[vocab.ERROR_TYPE]
    assert not tree.kids(conn, vocab.WS_MESSAGE_RECEIVE)
    assert_nested(tree)
    assert_all_ended(t)


@pairs
def test_malformed_upgrade_is_recorded_with_its_400(http: str, ws: str) -> None:
    with traced() as t, run_server(echo_app(), http=http, ws=ws) as server:
        sock = raw.open_socket(server.port)
        sock.sendall(raw.upgrade_request("/echo", key=None))
        status, _, _ = raw.read_head(sock)
        sock.close()
        wait_until(closed_connections(t, 1))
    assert status == 400
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    (handshake,) = tree.kids(conn, vocab.WS_HANDSHAKE)
    (response,) = tree.kids(handshake, vocab.WS_HANDSHAKE_RESPONSE)
    assert response.attributes[vocab.HTTP_RESPONSE_STATUS_CODE] == 400
    assert handshake.status.status_code.name == "ERROR"
    assert not tree.kids(conn, vocab.ASGI_APP)
    assert_nested(tree)
    assert_all_ended(t)


@pairs
def test_client_gone_mid_frame_is_an_abnormal_closure(http: str, ws: str) -> None:
    with traced() as t, run_server(echo_app(), http=http, ws=ws) as server:
        sock, _ = raw.handshake(server.port, "/echo")
        frame = raw.client_frame(0x2, bytes(100))
        sock.sendall(frame[:20])
        time.sleep(0.05)
        sock.close()
        wait_until(closed_connections(t, 1))
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    (close,) = tree.kids(conn, vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1006
    assert close.attributes[vocab.WS_CLOSE_INITIATOR] == vocab.INITIATOR_NONE
    kinds = [e.attributes[vocab.PROTOCOL_ERROR_KIND] for e in conn.events]
    assert "truncated" in kinds
    assert_nested(tree)
    assert_all_ended(t)


@pairs
def test_oversize_message_closes_with_1009(http: str, ws: str) -> None:
    async def oversize(url: str) -> int | None:
        async with connect(url + "/echo", max_size=None) as client:
            await client.send(b"x" * 4096)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as caught:
                await asyncio.wait_for(client.recv(), 5)
        return caught.value.rcvd.code if caught.value.rcvd else None

    with traced() as t, run_server(echo_app(), http=http, ws=ws, ws_max_size=1024) as server:
        assert asyncio.run(oversize(server.ws_url)) == 1009
        wait_until(closed_connections(t, 1))
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    (close,) = tree.kids(conn, vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1009
    assert close.attributes[vocab.WS_CLOSE_INITIATOR] == vocab.INITIATOR_SERVER
    assert_nested(tree)
    assert_all_ended(t)


@pairs
def test_server_shutdown_closes_with_1012(http: str, ws: str) -> None:
    codes: list[int | None] = []

    async def stay(url: str, opened: asyncio.Event) -> None:
        async with connect(url + "/echo") as client:
            opened.set()
            with pytest.raises(websockets.exceptions.ConnectionClosed) as caught:
                await asyncio.wait_for(client.recv(), 10)
            codes.append(caught.value.rcvd.code if caught.value.rcvd else None)

    async def scenario(server) -> None:
        opened = asyncio.Event()
        task = asyncio.create_task(stay(server.ws_url, opened))
        await asyncio.wait_for(opened.wait(), 5)
        server.server.should_exit = True
        await asyncio.wait_for(task, 10)

    with traced() as t, run_server(echo_app(), http=http, ws=ws) as server:
        asyncio.run(scenario(server))
        wait_until(closed_connections(t, 1))
    assert codes == [1012]
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    (close,) = tree.kids(conn, vocab.WS_CLOSE)
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1012
    assert close.attributes[vocab.WS_CLOSE_INITIATOR] == vocab.INITIATOR_SERVER
    assert_nested(tree)
    assert_all_ended(t)


@pairs
def test_fan_out_is_one_broadcast_with_a_send_per_recipient(http: str, ws: str) -> None:
    async def scenario(url: str) -> list[str]:
        async with (
            connect(url + "/room") as a,
            connect(url + "/room") as b,
            connect(url + "/room") as c,
        ):
            await asyncio.sleep(0.1)
            await a.send("bid 10")
            return [await asyncio.wait_for(x.recv(), 5) for x in (a, b, c)]

    with traced() as t, run_server(echo_app(), http=http, ws=ws) as server:
        assert asyncio.run(scenario(server.ws_url)) == ["bid 10"] * 3
        wait_until(closed_connections(t, 3))
    tree = Tree(t.spans)
    (broadcast,) = t.named(vocab.WS_BROADCAST)
    assert broadcast.attributes[vocab.BROADCAST_RECIPIENTS] == 3
    assert tree.parent(broadcast).name == vocab.WS_MESSAGE_RECEIVE
    sends = tree.kids(broadcast, vocab.WS_MESSAGE_SEND)
    assert len(sends) == 3
    connection_ids = {s.context.span_id for s in tree.connections()}
    recipients = {s.attributes[vocab.CONNECTION_ID] for s in sends}
    assert len(recipients) == 3
    for send in sends:
        assert len(tree.kids(send, vocab.WS_FRAME_SEND)) == 1
        for link in send.links:
            assert link.context.span_id in connection_ids
    assert sum(1 for s in sends if s.links) == 2  # the sender's own send needs no link
    assert_nested(tree)
    assert_all_ended(t)


def _targets() -> list[tuple[str, str]]:
    found = []
    for impl, (module, _) in http_hooks.IMPLEMENTATIONS.items():
        if import_quietly(module) is not None:  # zttp only when installed
            found += [(p.module, p.qualname) for p in http_hooks.patches(impl)]
    for name in ws_hooks.FAMILIES:
        found += [(p.module, p.qualname) for p in ws_hooks.patches(name)]
    return found


def test_uninstrument_restores_every_original() -> None:
    def current() -> dict[tuple[str, str], object]:
        out = {}
        for module, qualname in _targets():
            owner, attribute, _, _ = resolve(module, qualname)
            out[(module, qualname)] = owner.__dict__.get(attribute)
        return out

    before = current()
    with traced() as t:
        during = current()
        assert t.instrumentor.missing == []
        assert tracer.instrument() is t.instrumentor  # idempotent
    after = current()
    changed = [k for k in before if during[k] is before[k]]
    assert changed == [], f"not wrapped: {changed}"
    for target, original in before.items():
        assert after[target] is original, target


def test_registered_for_opentelemetry_instrument() -> None:
    (entry,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "wstrace"]
    assert entry.load() is tracer.WebSocketInstrumentor


def test_tracer_failures_are_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracer.recorder import ConnectionRecord

    def broken(self, *args, **kwargs):
        raise RuntimeError("recorder bug")

    monkeypatch.setattr(ConnectionRecord, "on_send_enter", broken)
    monkeypatch.setattr(ConnectionRecord, "on_bytes_in", broken)
    with traced() as t, run_server(echo_app(), http="h11", ws="websockets-sansio") as server:
        assert asyncio.run(echo_once(server.ws_url)) == "hello"
        wait_until(closed_connections(t, 1))
        assert errors.counts.get("ws.send", 0) >= 1
        assert errors.counts.get("ws.data_received", 0) >= 1
    assert t.tracker.open == {}


def test_a_push_only_connection_is_flushed_as_it_goes() -> None:
    """Sends made before any received message are emitted in batches, not hoarded."""

    async def listen(url: str) -> int:
        count = 0
        async with connect(url + "/push?count=300") as client:
            async for _ in client:
                count += 1
        return count

    with traced() as t, run_server(echo_app()) as server:
        assert asyncio.run(listen(server.ws_url)) == 300
        wait_until(closed_connections(t, 1))
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    (app,) = tree.kids(conn, vocab.ASGI_APP)
    sends = [s for s in tree.descendants(app) if s.name == vocab.WS_MESSAGE_SEND]
    assert len(sends) == 300
    assert all(len(tree.kids(s, vocab.WS_FRAME_SEND)) == 1 for s in sends)
    assert_nested(tree)
    assert_all_ended(t)


def test_protocol_errors_are_bounded_and_counted() -> None:
    """A peer sending nothing but bad frames costs a bounded record."""
    with traced() as t, run_server(echo_app(), ws="websockets-sansio") as server:
        sock, _ = raw.handshake(server.port, "/echo")
        # 100 unmasked frames: every one is a protocol violation from a client.
        sock.sendall(b"\x81\x01x" * 100)
        raw.finish_sending(sock)
        wait_until(closed_connections(t, 1))
    (conn,) = Tree(t.spans).connections()
    events = [e for e in conn.events if e.name == vocab.EVENT_PROTOCOL_ERROR]
    # The 300 bytes arrive in one chunk, decoded before the server fails the connection.
    assert len(events) == 64
    assert conn.attributes["wstrace.protocol_errors.dropped"] == 100 - 64
    kinds = {e.attributes[vocab.PROTOCOL_ERROR_KIND] for e in events}
    assert kinds == {"unmasked-client-frame"}
    assert_all_ended(t)


def test_protocol_classes_passed_directly_are_traced_too() -> None:
    """uvicorn accepts the implementations as names or as classes: both reach the hooks."""
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.websockets.wsproto_impl import WSProtocol

    with traced() as t, run_server(echo_app(), http=H11Protocol, ws=WSProtocol) as server:
        assert asyncio.run(echo_once(server.ws_url)) == "hello"
        wait_until(closed_connections(t, 1))
    (conn,) = Tree(t.spans).connections()
    assert conn.attributes[vocab.IMPL_HTTP] == "h11"
    assert conn.attributes[vocab.IMPL_WS] == "wsproto"
    assert {s.name for s in t.spans} >= {vocab.HTTP_HEADERS_PARSE, vocab.WS_HANDSHAKE}
    assert_all_ended(t)


def test_a_broadcast_push_loop_is_flushed_as_it_goes() -> None:
    """tracer.broadcast() blocks before any received message are emitted at once, not held."""
    app = FastAPI(telemetry={"tracing": False})

    @app.websocket("/ticker")
    async def ticker(websocket: WebSocket) -> None:
        await websocket.accept()
        for n in range(200):
            with tracer.broadcast():
                await websocket.send_text(f"tick {n}")
        await websocket.receive_text()  # stay open until the client has looked

    with traced() as t, run_server(app) as server:

        async def listen() -> int:
            async with connect(server.ws_url + "/ticker") as client:
                for _ in range(200):
                    await asyncio.wait_for(client.recv(), 5)
                # The connection is still open: its broadcasts must come out all the same.
                # A block's span ends when the block exits, after its frame left, so the
                # count is waited for rather than read the moment the last frame arrived.
                wait_until(lambda: len(t.named(vocab.WS_BROADCAST)) == 200)
                emitted = len(t.named(vocab.CONNECTION))
                await client.send("bye")
                return emitted

        assert asyncio.run(listen()) == 0  # all 200 were out before the connection ended
        wait_until(closed_connections(t, 1))
    assert len(t.named(vocab.WS_BROADCAST)) == 200
    assert_all_ended(t)


@pytest.mark.parametrize("ws", ["websockets", "websockets-sansio", "wsproto"])
def test_queue_wait_is_kept_apart_from_handler_time(ws: str) -> None:
    """Two messages back to back to a handler that takes 200 ms: the second one waits.

    The bounds are lower bounds set by the handler's own sleep, not by the machine's speed.
    """

    async def talk(url: str) -> None:
        async with connect(url + "/slow") as client:
            await client.send("one")
            await client.send("two")
            for _ in range(2):
                await asyncio.wait_for(client.recv(), 5)

    with traced() as t, run_server(echo_app(), ws=ws) as server:
        asyncio.run(talk(server.ws_url))
        wait_until(closed_connections(t, 1))
    first, second = sorted(t.named(vocab.WS_MESSAGE_RECEIVE), key=lambda s: s.start_time)
    ms = 1_000_000
    assert first.attributes[vocab.HANDLER_NS] >= 190 * ms
    assert second.attributes[vocab.QUEUE_WAIT_NS] >= 150 * ms  # waited for the first handler
    assert second.attributes[vocab.HANDLER_NS] >= 190 * ms
    assert first.attributes[vocab.QUEUE_WAIT_NS] < second.attributes[vocab.QUEUE_WAIT_NS]
    assert_all_ended(t)


def test_frames_of_unread_messages_are_bounded_per_connection() -> None:
    """Tiny fragments sent faster than the app reads: recorded frames stop at the budget,
    and every message still says how many frames it had."""
    messages, fragments = 20, 300
    stream = b"".join(
        raw.client_frame(0x1 if n == 0 else 0x0, b"x", fin=n == fragments - 1)
        for _ in range(messages)
        for n in range(fragments)
    )
    # The legacy implementation buffers all 42 kB (the others pause reading while the app is
    # behind), so every frame reaches the decoder.
    with traced() as t, run_server(echo_app(), ws="websockets") as server:
        sock, _ = raw.handshake(server.port, "/slow")
        sock.sendall(stream)
        raw.finish_sending(sock)
        wait_until(closed_connections(t, 1))
    received = t.named(vocab.WS_MESSAGE_RECEIVE)
    assert sum(m.attributes[vocab.WS_MESSAGE_FRAMES] for m in received) == messages * fragments
    recorded = len(t.named(vocab.WS_FRAME_RECEIVE))
    assert recorded <= 4096 + 2 * 256 < messages * fragments
    assert sum(m.attributes.get(vocab.FRAMES_DROPPED, 0) for m in received) > 0
    assert_all_ended(t)


def test_opentelemetry_instrument_loads_it() -> None:
    """`opentelemetry-instrument python app.py` finds the entry point and installs the hooks."""
    import subprocess
    import sys
    from pathlib import Path

    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    probe = (
        "from tracer import WebSocketInstrumentor\n"
        "from tracer.hooks.patching import is_wrapped\n"
        "import uvicorn.protocols.http.h11_impl as h11_impl\n"
        "print(WebSocketInstrumentor().is_instrumented_by_opentelemetry,"
        " is_wrapped(h11_impl.H11Protocol.__dict__['data_received']))\n"
    )
    result = subprocess.run(
        [str(launcher), sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fastapi,asgi"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_a_missing_hook_target_degrades_one_stage_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An internal name that moved in another version: one warning, the rest still traced."""
    from tracer.hooks.patching import Patch

    real = ws_hooks.patches

    def with_a_moved_target(name: str) -> list[Patch]:
        found = real(name)
        if name == "wsproto":
            found.append(Patch(ws_hooks.FAMILIES[name].module, "WSProtocol.renamed_away", print))
        return found

    monkeypatch.setattr(ws_hooks, "patches", with_a_moved_target)
    with caplog.at_level("WARNING", logger="wstrace"), traced() as t:
        assert t.instrumentor.missing == [
            "uvicorn.protocols.websockets.wsproto_impl:WSProtocol.renamed_away"
        ]
        with run_server(echo_app(), ws="wsproto") as server:
            assert asyncio.run(echo_once(server.ws_url)) == "hello"
            wait_until(closed_connections(t, 1))
    warnings = [r for r in caplog.records if "renamed_away" in r.getMessage()]
    assert len(warnings) == 1
    assert {s.name for s in t.spans} >= {vocab.WS_HANDSHAKE, vocab.WS_MESSAGE_RECEIVE}
    assert_all_ended(t)
