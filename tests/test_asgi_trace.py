"""The application layer: TracingMiddleware, the chain, accept's stack, messages, shapes."""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import time
from typing import Any

import pytest
import websockets
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from websockets.asyncio.client import connect

import tracer
from tests.support.apps import echo_app
from tests.support.server import IMPL_PAIRS, WS_IMPLS, run_server
from tests.support.tracing import (
    Tree,
    assert_all_ended,
    assert_nested,
    closed_connections,
    make_provider,
    traced,
    wait_until,
)
from tracer import vocab
from tracer._contain import errors
from tracer.asgi import chain_layers, is_chain_wrapper, unwrap_chain
from tracer.hooks import ws as ws_hooks
from tracer.hooks.patching import method_form

pairs = pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS, ids=[f"{h}-{w}" for h, w in IMPL_PAIRS])


class StampMiddleware:
    """A user's own pure ASGI middleware: must appear in the chain as its own span."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        scope.setdefault("state", {})["stamped"] = True
        await self.app(scope, receive, send)


@pytest.fixture(autouse=True)
def _restore_chain():
    yield
    unwrap_chain()


def auction_app(tmp_path):
    from demo_app.app import create_app

    app = create_app(str(tmp_path / "auction.db"), seed=False)
    app.add_middleware(StampMiddleware)
    return app


async def create_auction(base: str) -> int:
    import httpx

    async with httpx.AsyncClient(base_url=base) as client:
        reply = await client.post(
            "/auctions", json={"item": "Typewriter", "starting_price": 10, "duration_s": 600}
        )
        assert reply.status_code == 201
        return reply.json()["id"]


def expected_chain(app) -> list[str]:
    """The app's real built stack, walked independently of the tracer's own walk."""
    names = ["ProxyHeadersMiddleware", "FastAPI", "Starlette"]
    node = app.middleware_stack
    while node is not None and not hasattr(node, "routes"):
        names.append(type(node).__name__)
        node = getattr(node, "app", None)
    names.append(type(node).__name__)  # the router (FastAPI's APIRouter)
    return names


@pairs
def test_chain_spans_equal_the_real_stack(http: str, ws: str, tmp_path) -> None:
    app = auction_app(tmp_path)
    with (
        traced() as t,
        run_server(
            tracer.TracingMiddleware(app, tracer_provider=t.provider), http=http, ws=ws
        ) as server,
    ):

        async def join() -> dict:
            auction = await create_auction(server.http_url)
            async with connect(f"{server.ws_url}/ws/auction/{auction}") as client:
                return json.loads(await asyncio.wait_for(client.recv(), 5))

        assert asyncio.run(join())["type"] == "state"
        wait_until(closed_connections(t, 1))
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    (app_span,) = tree.kids(conn, vocab.ASGI_APP)
    chain = []
    node = app_span
    while True:
        layers = [k for k in tree.kids(node) if not k.name.startswith("ws.")]
        if not layers:
            break
        node = layers[-1]
        chain.append(node)
    names = [s.name for s in chain]
    want = expected_chain(app)
    assert "StampMiddleware" in want and "CORSMiddleware" in want
    assert names[: len(want)] == want, names
    route = chain[len(want)]
    assert route.name == "APIWebSocketRoute"
    assert route.attributes[vocab.HTTP_ROUTE] == "/ws/auction/{auctionID}"
    assert [s.name for s in tree.kids(route)][:2] == ["solve_dependencies", "websocket_endpoint"]
    for span in chain:
        assert span.attributes[vocab.CODE_LINE_NUMBER] > 0
    (endpoint,) = tree.kids(route, "websocket_endpoint")
    (accept,) = [s for s in tree.descendants(endpoint) if s.name == vocab.WS_ACCEPT]
    (event,) = accept.events
    functions = list(event.attributes[vocab.STACK_FUNCTIONS])
    wanted = [
        "run_asgi",
        "ProxyHeadersMiddleware.__call__",
        "websocket_endpoint",
        "ConnectionManager.connect",
        "WebSocket.accept",
    ]
    positions = []
    for name in wanted:
        hits = [i for i, f in enumerate(functions) if f.endswith(name)]
        assert hits, (name, functions)
        positions.append(hits[0])
    assert positions == sorted(positions), functions
    assert len(event.attributes[vocab.STACK_FILES]) == len(functions)
    assert_nested(tree)
    assert_all_ended(t)


@pytest.mark.parametrize("ws", WS_IMPLS)
def test_one_bid_three_bidders_is_one_broadcast(ws: str, tmp_path) -> None:
    app = auction_app(tmp_path)
    with (
        traced() as t,
        run_server(tracer.TracingMiddleware(app, tracer_provider=t.provider), ws=ws) as server,
    ):

        async def scenario() -> list[dict]:
            auction = await create_auction(server.http_url)
            url = f"{server.ws_url}/ws/auction/{auction}"
            async with connect(url) as a, connect(url) as b, connect(url) as c:
                for client in (a, b, c):
                    await asyncio.wait_for(client.recv(), 5)  # state
                await asyncio.sleep(0.1)
                await a.send(json.dumps({"type": "bid", "bidder": "ann", "amount": 12}))
                return [json.loads(await asyncio.wait_for(x.recv(), 5)) for x in (a, b, c)]

        replies = asyncio.run(scenario())
        wait_until(closed_connections(t, 3))
    assert [r["type"] for r in replies] == ["bid"] * 3
    tree = Tree(t.spans)
    (broadcast,) = t.named(vocab.WS_BROADCAST)
    assert broadcast.attributes[vocab.BROADCAST_RECIPIENTS] == 3
    sends = tree.kids(broadcast, vocab.WS_MESSAGE_SEND)
    assert len(sends) == 3
    assert len({s.attributes[vocab.CONNECTION_ID] for s in sends}) == 3
    for send in sends:
        (frame,) = tree.kids(send, vocab.WS_FRAME_SEND)
        assert frame.attributes[vocab.WS_OPCODE_NAME] == "text"
    assert_all_ended(t)


@pytest.mark.parametrize("ws", WS_IMPLS)
def test_message_shape_gives_each_message_its_own_linked_trace(ws: str) -> None:
    with traced(shape="message") as t, run_server(echo_app(), ws=ws) as server:

        async def talk() -> None:
            async with connect(server.ws_url + "/echo") as client:
                for text in ("one", "two", "three"):
                    await client.send(text)
                    assert await asyncio.wait_for(client.recv(), 5) == text

        asyncio.run(talk())
        wait_until(closed_connections(t, 1))
    tree = Tree(t.spans)
    (conn,) = tree.connections()
    messages = t.named(vocab.WS_MESSAGE_RECEIVE)
    assert len(messages) == 3
    assert len({m.context.trace_id for m in messages} | {conn.context.trace_id}) == 4
    for message in messages:
        assert message.parent is None
        (link,) = message.links
        assert link.context.span_id == conn.context.span_id
        assert link.context.trace_id == conn.context.trace_id
        assert tree.kids(message, vocab.WS_FRAME_RECEIVE)
        assert tree.kids(message, vocab.WS_MESSAGE_SEND)
    assert not tree.kids(conn, vocab.WS_MESSAGE_RECEIVE)
    assert_all_ended(t)


def test_connection_trace_is_capped(tmp_path) -> None:
    with traced(max_messages_per_trace=2) as t, run_server(echo_app()) as server:

        async def talk() -> None:
            async with connect(server.ws_url + "/echo") as client:
                for n in range(5):
                    await client.send(str(n))
                    await asyncio.wait_for(client.recv(), 5)

        asyncio.run(talk())
        wait_until(closed_connections(t, 1))
    (conn,) = Tree(t.spans).connections()
    messages = t.named(vocab.WS_MESSAGE_RECEIVE)
    inside = [m for m in messages if m.context.trace_id == conn.context.trace_id]
    outside = [m for m in messages if m.context.trace_id != conn.context.trace_id]
    assert (len(inside), len(outside)) == (2, 3)
    assert all(m.attributes[vocab.MESSAGES_OVERFLOWED] for m in outside)
    assert all(m.links[0].context.span_id == conn.context.span_id for m in outside)


def _all_strings(spans) -> list[str]:
    found = []
    for span in spans:
        values = list(span.attributes.values())
        for event in span.events:
            values += list(event.attributes.values())
        for value in values:
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, tuple):
                found += [v for v in value if isinstance(v, str)]
    return found


@pytest.mark.parametrize("capture", [0, 8])
def test_payloads_are_private_unless_asked(capture: int) -> None:
    secret = "SECRET-PAYLOAD-0123456789"
    with traced(capture_payload=capture) as t, run_server(echo_app()) as server:

        async def talk() -> None:
            async with connect(
                server.ws_url + "/echo",
                additional_headers={"Authorization": "Bearer hunter2", "Cookie": "s=hunter2"},
                compression=None,
            ) as client:
                await client.send(secret)
                await asyncio.wait_for(client.recv(), 5)

        asyncio.run(talk())
        wait_until(closed_connections(t, 1))
    strings = _all_strings(t.spans)
    assert not any("hunter2" in s for s in strings)
    if capture == 0:
        assert not any("SECRET" in s for s in strings)
        assert not any(s.attributes.get(vocab.WS_PAYLOAD_PREVIEW) for s in t.spans)
    else:
        previews = [
            s.attributes.get(vocab.WS_PAYLOAD_PREVIEW) for s in t.named(vocab.WS_FRAME_RECEIVE)
        ]
        assert secret[:8] in previews
        assert not any(secret in s for s in strings)


def test_secret_headers_are_redacted_even_when_allowlisted() -> None:
    with (
        traced(capture_headers=["authorization", "user-agent"]) as t,
        run_server(echo_app()) as server,
    ):

        async def talk() -> None:
            async with connect(
                server.ws_url + "/echo", additional_headers={"Authorization": "Bearer hunter2"}
            ) as client:
                await client.send("x")
                await asyncio.wait_for(client.recv(), 5)

        asyncio.run(talk())
        wait_until(closed_connections(t, 1))
    (handshake,) = t.named(vocab.WS_HANDSHAKE)
    assert handshake.attributes["http.request.header.authorization"] == ("[redacted]",)
    assert handshake.attributes["http.request.header.user-agent"][0].startswith("Python")


def test_middleware_alone_under_testclient() -> None:
    provider, exporter, tracker = make_provider()
    errors.reset()
    app = FastAPI(telemetry={"tracing": False})

    @app.websocket("/ws/{room}")
    async def websocket_endpoint(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(text.upper())
        await websocket.close(code=1000)

    with TestClient(tracer.TracingMiddleware(app, tracer_provider=provider)) as client:
        with client.websocket_connect("/ws/7") as ws:
            ws.send_text("bid")
            assert ws.receive_text() == "BID"
        assert client.get("/docs").status_code == 200  # HTTP untouched
    spans = exporter.get_finished_spans()
    tree = Tree(list(spans))
    (conn,) = tree.connections()
    assert conn.attributes[vocab.SOURCE] == vocab.SOURCE_ASGI
    assert conn.attributes[vocab.URL_PATH] == "/ws/7"
    names = {s.name for s in tree.descendants(conn)}
    assert {
        "FastAPI",
        "APIRouter",
        "APIWebSocketRoute",
        vocab.WS_ACCEPT,
        vocab.WS_MESSAGE_RECEIVE,
        vocab.WS_MESSAGE_SEND,
        vocab.WS_CLOSE,
    } <= names
    (close,) = t_close = [s for s in spans if s.name == vocab.WS_CLOSE]
    assert close.attributes[vocab.WS_CLOSE_CODE] == 1000 and t_close
    assert tracker.open == {}
    assert errors.counts == {}


@pytest.mark.parametrize("peer", ["fastapi-native", "otel-fastapi"])
def test_one_coherent_trace_with_other_instrumentation(peer: str, tmp_path) -> None:
    with traced() as t:
        app = FastAPI(
            telemetry={"tracer_provider": t.provider}
            if peer == "fastapi-native"
            else {"tracing": False}
        )

        @app.websocket("/ws")
        async def websocket_endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_text(await websocket.receive_text())
            await websocket.close()

        if peer == "otel-fastapi":
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            FastAPIInstrumentor.instrument_app(app, tracer_provider=t.provider)
        with run_server(tracer.TracingMiddleware(app, tracer_provider=t.provider)) as server:

            async def talk() -> None:
                async with connect(server.ws_url + "/ws") as client:
                    await client.send("hi")
                    await asyncio.wait_for(client.recv(), 5)

            asyncio.run(talk())
            wait_until(closed_connections(t, 1))
    spans = t.spans
    (conn,) = Tree(spans).connections()
    roots = [s for s in spans if s.parent is None]
    assert roots == [conn], [r.name for r in roots]
    assert {s.context.trace_id for s in spans} == {conn.context.trace_id}
    names = [s.name for s in spans]
    for stage in (vocab.WS_HANDSHAKE, vocab.WS_ACCEPT, vocab.ASGI_APP, vocab.WS_CLOSE):
        assert names.count(stage) == 1, (stage, names)
    foreign = [s for s in spans if s.instrumentation_scope.name != vocab.INSTRUMENTATION_NAME]
    assert foreign, "the other instrumentation recorded nothing"
    assert_all_ended(t)


def test_chain_walk_sees_user_middleware(tmp_path) -> None:
    app = auction_app(tmp_path)
    names = [type(layer).__name__ for layer in chain_layers(tracer.TracingMiddleware(app))]
    assert names[:2] == ["TracingMiddleware", "FastAPI"]
    assert "StampMiddleware" in names and names[-1] == "APIRouter"


def test_broadcast_helper_under_the_middleware_alone() -> None:
    provider, exporter, tracker = make_provider()
    errors.reset()
    app = FastAPI(telemetry={"tracing": False})
    room: list[WebSocket] = []

    @app.websocket("/room")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        room.append(websocket)
        try:
            while True:
                text = await websocket.receive_text()
                with tracer.broadcast():
                    for peer in list(room):
                        await peer.send_text(text)
        except Exception:
            room.remove(websocket)

    client = TestClient(tracer.TracingMiddleware(app, tracer_provider=provider))
    with client, client.websocket_connect("/room") as a, client.websocket_connect("/room") as b:
        a.send_text("bid 5")
        assert a.receive_text() == "bid 5"
        assert b.receive_text() == "bid 5"
    tree = Tree(list(exporter.get_finished_spans()))
    (broadcast,) = [s for s in tree.spans if s.name == vocab.WS_BROADCAST]
    assert broadcast.attributes[vocab.BROADCAST_RECIPIENTS] == 2
    sends = tree.kids(broadcast, vocab.WS_MESSAGE_SEND)
    assert len({s.attributes[vocab.CONNECTION_ID] for s in sends}) == 2  # one per recipient
    # The same shape as under the server hooks: the fan-out belongs to the message handled.
    assert tree.parent(broadcast).name == vocab.WS_MESSAGE_RECEIVE
    assert tracker.open == {}
    assert errors.counts == {}


def test_chain_wrappers_leave_other_apps_untouched() -> None:
    """Class-level wrappers must not change how uvicorn sees any app (ASGI 3, no factory)."""
    import uvicorn

    from tracer.asgi import instrument_chain

    instrument_chain(tracer.TracingMiddleware(FastAPI()), force=True)
    other = FastAPI()
    with pytest.raises(TypeError):
        other()  # as without wrappers: uvicorn's factory detection relies on this
    config = uvicorn.Config(other)
    config.load()
    assert config.interface == "asgi3"


class ByName(Sampler):
    """Samples ws.connection roots as told, and every ``every``-th message root."""

    def __init__(self, connections: bool, every: int) -> None:
        self.connections = connections
        self.every = every
        self.seen = 0

    def should_sample(
        self,
        parent_context,
        trace_id,
        name,
        kind=None,
        attributes=None,
        links=None,
        trace_state=None,
    ) -> SamplingResult:
        if name == vocab.CONNECTION:
            sampled = self.connections
        else:
            self.seen += 1
            sampled = self.every > 0 and self.seen % self.every == 0
        return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP)

    def get_description(self) -> str:
        return "ByName"


@pytest.mark.parametrize(
    ("connections", "every", "sampling", "expected_messages"),
    [
        (False, 1, "inherit", 0),  # the connection was not sampled: neither are its messages
        (True, 0, "inherit", 6),  # inherited: the message sampler is not even asked
        (False, 1, "independent", 6),
        (True, 2, "independent", 3),
    ],
)
def test_message_sampling(connections, every, sampling, expected_messages) -> None:
    provider, exporter, _ = make_provider(ByName(connections, every))
    errors.reset()
    tracer.instrument(tracer_provider=provider, shape="message", message_sampling=sampling)
    try:
        with run_server(echo_app()) as server:

            async def talk() -> None:
                async with connect(server.ws_url + "/echo") as client:
                    for n in range(6):
                        await client.send(str(n))
                        await asyncio.wait_for(client.recv(), 5)

            asyncio.run(talk())
    finally:
        tracer.uninstrument()
    spans = exporter.get_finished_spans()
    messages = [s for s in spans if s.name == vocab.WS_MESSAGE_RECEIVE]
    assert len(messages) == expected_messages
    assert len({m.context.trace_id for m in messages}) == expected_messages
    assert bool([s for s in spans if s.name == vocab.CONNECTION]) is connections
    assert errors.counts == {}


def test_unsampled_connection_is_left_alone_by_every_layer() -> None:
    """Not sampled: the server hooks step aside and the middleware records nothing either."""
    provider, exporter, tracker = make_provider(ByName(connections=False, every=1))
    errors.reset()
    tracer.instrument(tracer_provider=provider)
    try:
        app = tracer.TracingMiddleware(echo_app(), tracer_provider=provider)
        with run_server(app) as server:
            assert asyncio.run(_echo(server.ws_url)) == "hello"
    finally:
        tracer.uninstrument()
    assert exporter.get_finished_spans() == ()
    assert tracker.open == {}
    assert errors.counts == {}


@pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS)
@pytest.mark.parametrize("sampled", [False, True])
def test_an_unsampled_connections_messages_pass_no_hook(
    monkeypatch: pytest.MonkeyPatch, http: str, ws: str, sampled: bool
) -> None:
    """Not sampled: the connection's protocol has its own methods back, so its messages run
    as on a server never traced (a sampled one's go through the hooks: the count works)."""
    looked_up: list[object] = []

    def counting(make_hook: Any) -> Any:
        @method_form
        def make_counted(original: Any) -> Any:
            hook = make_hook(original)

            def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
                looked_up.append(self)
                return hook(self, *args, **kwargs)

            return counted

        return make_counted

    # Installed by tracer.instrument() below: a hook that runs is counted.
    for name in ("data_received_hook", "receive_hook", "send_hook"):
        monkeypatch.setattr(ws_hooks, name, counting(getattr(ws_hooks, name)))
    provider, exporter, _ = make_provider(ByName(connections=sampled, every=1))
    tracer.instrument(tracer_provider=provider)
    try:
        app = tracer.TracingMiddleware(echo_app(), tracer_provider=provider)
        with run_server(app, http=http, ws=ws) as server:

            async def talk() -> int:
                async with connect(f"{server.ws_url}/echo") as client:
                    await client.send("warm")
                    assert await client.recv() == "warm"
                    before = len(looked_up)
                    for n in range(20):
                        await client.send(f"m{n}")
                        assert await client.recv() == f"m{n}"
                    return len(looked_up) - before

            hooked = asyncio.run(talk())
    finally:
        tracer.uninstrument()
    if sampled:
        assert hooked >= 20 * 2  # each message's receive and send, at least
        assert exporter.get_finished_spans()
    else:
        assert hooked == 0
        assert exporter.get_finished_spans() == ()


def _protocols_left(app: Any, ws: str, protocol_class: type) -> int:
    """Protocols of ten closed connections to ``app`` still alive with the cyclic garbage
    collector off: those only it would free."""

    def protocols() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is protocol_class)

    gc.collect()
    gc.disable()
    try:
        with run_server(app, ws=ws) as server:
            before = protocols()

            async def talk() -> None:
                for n in range(10):
                    async with connect(f"{server.ws_url}/echo") as client:
                        await client.send(f"m{n}")
                        assert await client.recv() == f"m{n}"

            asyncio.run(talk())
            for _ in range(200):  # the server lets each one go once it has seen it close
                if protocols() <= before:
                    break
                time.sleep(0.01)
            return protocols() - before
    finally:
        gc.enable()


@pytest.mark.parametrize("ws", WS_IMPLS)
def test_an_unsampled_connections_protocol_is_freed_as_on_a_server_never_traced(ws: str) -> None:
    """The methods it got back are taken off as it is lost: no reference cycle of wstrace's
    keeps the protocol until the garbage collector's next pass (uvicorn's legacy
    ``websockets`` protocol has cycles of its own: as many are left untraced)."""
    family = ws_hooks.FAMILIES[ws]
    protocol_class = getattr(importlib.import_module(family.module), family.cls)
    untraced = _protocols_left(echo_app(), ws, protocol_class)
    provider, _, _ = make_provider(ByName(connections=False, every=1))
    tracer.instrument(tracer_provider=provider)
    try:
        app = tracer.TracingMiddleware(echo_app(), tracer_provider=provider)
        unsampled = _protocols_left(app, ws, protocol_class)
    finally:
        tracer.uninstrument()
    assert unsampled <= untraced


CLIENT_CONTEXT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _app_reporting_its_context(provider, seen: list[str]):  # type: ignore[no-untyped-def]
    """An endpoint that records the ``traceparent`` it was given and makes a span of its own."""
    app = FastAPI(telemetry={"tracing": False})

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket) -> None:
        seen.append(dict(websocket.scope["headers"]).get(b"traceparent", b"").decode())
        with provider.get_tracer("app").start_as_current_span("app.work"):
            await websocket.accept()
        await websocket.send_text(await websocket.receive_text())

    return app


def test_an_unsampled_connection_under_the_middleware_alone_keeps_the_app_unsampled() -> None:
    """Not sampled: the app runs under the connection's unsampled context (in its scope's
    ``traceparent`` too, in place of the client's), so its own spans are not sampled either."""
    provider, exporter, tracker = make_provider(ParentBased(ByName(connections=False, every=1)))
    errors.reset()
    seen: list[str] = []
    app = tracer.TracingMiddleware(_app_reporting_its_context(provider, seen),
                                   tracer_provider=provider)
    with TestClient(app) as client, client.websocket_connect(
        "/ws", headers={"traceparent": CLIENT_CONTEXT}
    ) as ws:
        ws.send_text("x")
        assert ws.receive_text() == "x"
    (traceparent,) = seen
    assert traceparent.endswith("-00") and traceparent.split("-")[1] not in CLIENT_CONTEXT
    assert exporter.get_finished_spans() == ()  # nothing of it, the app's span included
    assert tracker.open == {}
    assert errors.counts == {}


def test_a_tracer_failing_to_set_up_a_connection_leaves_the_app_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tracer.recorder import ConnectionRecord

    def broken(*args, **kwargs):
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(ConnectionRecord, "on_app_start", broken)
    provider, _, tracker = make_provider()
    errors.reset()
    seen: list[str] = []
    app = tracer.TracingMiddleware(_app_reporting_its_context(provider, seen),
                                   tracer_provider=provider)
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("x")
        assert ws.receive_text() == "x"
    assert errors.counts.get("asgi.connection") == 1
    assert tracker.open == {}  # the connection's span was ended all the same


async def _echo(url: str) -> str:
    async with connect(url + "/echo") as client:
        await client.send("hello")
        return await asyncio.wait_for(client.recv(), 5)


def test_payload_previews_go_through_the_redaction_hook() -> None:
    def redact(preview: bytes) -> bytes:
        return b"#" * len(preview)

    with traced(capture_payload=4, redact_payload=redact) as t, run_server(echo_app()) as server:
        assert asyncio.run(_echo(server.ws_url)) == "hello"
        wait_until(closed_connections(t, 1))
    previews = [
        s.attributes[vocab.WS_PAYLOAD_PREVIEW]
        for s in t.spans
        if s.name in (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND)
        and s.attributes.get(vocab.WS_OPCODE_NAME) == "text"
    ]
    assert previews and set(previews) == {"####"}


def test_uninstrument_also_restores_the_chain(tmp_path) -> None:
    """After a traced connection went through TracingMiddleware, uninstrument() puts back
    every class, function and endpoint the chain wrappers touched."""
    import fastapi.routing
    import wrapt
    from starlette.applications import Starlette
    from starlette.middleware.cors import CORSMiddleware
    from starlette.routing import WebSocketRoute

    app = auction_app(tmp_path)
    before = (
        Starlette.__dict__["__call__"],
        CORSMiddleware.__dict__["__call__"],
        WebSocketRoute.__dict__["handle"],
        fastapi.routing.solve_dependencies,
    )
    with (
        traced() as t,
        run_server(tracer.TracingMiddleware(app, tracer_provider=t.provider)) as server,
    ):

        async def join() -> None:
            auction = await create_auction(server.http_url)
            async with connect(f"{server.ws_url}/ws/auction/{auction}") as client:
                await asyncio.wait_for(client.recv(), 5)

        asyncio.run(join())
        wait_until(closed_connections(t, 1))
        during = (
            Starlette.__dict__["__call__"],
            CORSMiddleware.__dict__["__call__"],
            WebSocketRoute.__dict__["handle"],
            fastapi.routing.solve_dependencies,
        )
        assert all(is_chain_wrapper(wrapper) for wrapper in during)
        assert all(
            asyncio.iscoroutinefunction(wrapper) and wrapper.__wrapped__ is original
            for wrapper, original in zip(during, before, strict=True)
        )
    assert not any(is_chain_wrapper(original) for original in before)
    after = (
        Starlette.__dict__["__call__"],
        CORSMiddleware.__dict__["__call__"],
        WebSocketRoute.__dict__["handle"],
        fastapi.routing.solve_dependencies,
    )
    assert all(a is b for a, b in zip(after, before, strict=True))
    endpoints = [r.dependant.call for r in app.routes if hasattr(r, "dependant")]
    assert endpoints and not any(
        isinstance(c, wrapt.FunctionWrapper) or is_chain_wrapper(c) for c in endpoints
    )


CLIENT_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("server_hooks", [True, False])
def test_client_trace_context_is_linked_and_native_telemetry_joins_ours(server_hooks) -> None:
    provider, exporter, _ = make_provider()
    app = FastAPI(telemetry={"tracer_provider": provider})

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())

    if server_hooks:
        tracer.instrument(tracer_provider=provider)
    try:
        with run_server(tracer.TracingMiddleware(app, tracer_provider=provider)) as server:

            async def talk() -> None:
                async with connect(
                    server.ws_url + "/ws", additional_headers={"traceparent": CLIENT_TRACEPARENT}
                ) as client:
                    await client.send("hi")
                    await asyncio.wait_for(client.recv(), 5)

            asyncio.run(talk())
            wait_until(
                lambda: any(s.name == vocab.CONNECTION for s in exporter.get_finished_spans())
            )
    finally:
        tracer.uninstrument()
    spans = exporter.get_finished_spans()
    (conn,) = [s for s in spans if s.name == vocab.CONNECTION]
    assert {s.context.trace_id for s in spans} == {conn.context.trace_id}
    assert [s for s in spans if s.parent is None] == [conn]
    (link,) = [link for link in conn.links if link.attributes.get("wstrace.link") == "client"]
    assert format(link.context.trace_id, "032x") == CLIENT_TRACEPARENT.split("-")[1]
    native = [s for s in spans if s.instrumentation_scope.name.startswith("fastapi")]
    assert native, "FastAPI's native telemetry recorded nothing"


def test_propagation_can_be_switched_off() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope, receive, send) -> None:
        if scope["type"] == "websocket":
            seen.append(list(scope["headers"]))
            await receive()
            await send({"type": "websocket.close", "code": 1000})

    provider, _, _ = make_provider()
    wrapped = tracer.TracingMiddleware(app, tracer_provider=provider, propagate_context=False)
    with traced(), run_server(wrapped) as server:

        async def knock() -> None:
            with pytest.raises(websockets.exceptions.InvalidStatus):
                async with connect(server.ws_url + "/", additional_headers={"X-Probe": "1"}):
                    pass

        asyncio.run(knock())
    (headers,) = seen
    names = [name for name, _ in headers]
    assert b"x-probe" in names and b"traceparent" not in names


def test_credentials_in_subprotocols_are_redacted() -> None:
    token = "3f9a2c1e8b7d4f6a9c0e1b2d3a4f5e6c"
    with traced() as t, run_server(echo_app()) as server:

        async def talk() -> None:
            async with connect(
                server.ws_url + "/echo", subprotocols=["graphql-ws", "access_token", token]
            ) as client:
                await client.send("x")
                await asyncio.wait_for(client.recv(), 5)

        asyncio.run(talk())
        wait_until(closed_connections(t, 1))
    (handshake,) = t.named(vocab.WS_HANDSHAKE)
    (offered,) = handshake.attributes["http.request.header.sec-websocket-protocol"]
    assert offered == "graphql-ws, access_token, [redacted]"
    assert not any(token in s for s in _all_strings(t.spans))


def test_middleware_failures_never_reach_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracer.chain import Chain, RecordedChain
    from tracer.recorder import ConnectionRecord, connection

    def broken(*args, **kwargs):
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(ConnectionRecord, "on_send_enter", broken)
    monkeypatch.setattr(connection, "emit_handshake", broken)
    monkeypatch.setattr(RecordedChain, "enter", broken)
    monkeypatch.setattr(Chain, "enter", broken)  # the chain of spans, without the SDK
    provider, _, tracker = make_provider()
    errors.reset()
    with run_server(tracer.TracingMiddleware(echo_app(), tracer_provider=provider)) as server:
        assert asyncio.run(_echo(server.ws_url)) == "hello"
    assert errors.counts.get("asgi.send", 0) >= 1
    assert errors.counts.get("recorder.emit_handshake", 0) == 1
    assert errors.counts.get("asgi.layer", 0) >= 1
    assert tracker.open == {}


@pytest.mark.parametrize(
    ("options", "inside", "outside"),
    [({"shape": "message"}, 0, 3), ({"max_messages_per_trace": 2}, 2, 1), ({}, 3, 0)],
)
def test_middleware_alone_follows_the_trace_shape(options, inside, outside) -> None:
    provider, exporter, tracker = make_provider()
    app = FastAPI(telemetry={"tracing": False})

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in range(3):
            await websocket.send_text(await websocket.receive_text())

    client = TestClient(tracer.TracingMiddleware(app, tracer_provider=provider, **options))
    with client, client.websocket_connect("/ws") as ws:
        for n in range(3):
            ws.send_text(str(n))
            assert ws.receive_text() == str(n)
    spans = exporter.get_finished_spans()
    (conn,) = [s for s in spans if s.name == vocab.CONNECTION]
    messages = [s for s in spans if s.name == vocab.WS_MESSAGE_RECEIVE]
    mine = [m for m in messages if m.context.trace_id == conn.context.trace_id]
    own = [m for m in messages if m.context.trace_id != conn.context.trace_id]
    assert (len(mine), len(own)) == (inside, outside)
    for message in own:
        assert message.parent is None
        assert message.links[0].context.span_id == conn.context.span_id
        sends = [s for s in spans if s.parent and s.parent.span_id == message.context.span_id]
        assert [s.name for s in sends] == [vocab.WS_MESSAGE_SEND]
    assert tracker.open == {}


def test_handshake_stacks_are_per_app(tmp_path) -> None:
    """Stacks are reused only for the same app: another app running the same endpoint code
    through a different middleware stack gets its own, walked live."""
    from demo_app.app import create_app

    stamped = auction_app(tmp_path)  # with StampMiddleware
    plain = create_app(str(tmp_path / "plain.db"), seed=False)

    def stacks(app) -> list[list[str]]:
        with traced() as t, run_server(app) as server:

            async def join_twice() -> None:
                auction = await create_auction(server.http_url)
                for _ in range(2):
                    async with connect(f"{server.ws_url}/ws/auction/{auction}") as client:
                        await asyncio.wait_for(client.recv(), 5)

            asyncio.run(join_twice())
            wait_until(closed_connections(t, 2))
        return [
            list(e.attributes[vocab.STACK_FUNCTIONS])
            for s in t.named(vocab.WS_ACCEPT)
            for e in s.events
        ]

    first, second = stacks(stamped)
    assert first == second
    assert any(f.endswith("StampMiddleware.__call__") for f in first)
    (plain_first, plain_second) = stacks(plain)
    assert plain_first == plain_second
    assert not any(f.endswith("StampMiddleware.__call__") for f in plain_first)


class AnnotatingMiddleware:
    """A user middleware that uses the current span, as instrumented middleware does."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        from opentelemetry import trace

        if scope["type"] == "websocket":
            trace.get_current_span().set_attribute("app.annotated", True)
            with trace.get_tracer("user").start_as_current_span("user.work"):
                pass
        await self.app(scope, receive, send)


@pytest.mark.parametrize("hooks", [True, False], ids=["server-hooks", "middleware-alone"])
def test_the_current_span_inside_a_layer_is_that_layer(hooks: bool) -> None:
    provider, exporter, tracker = make_provider()
    errors.reset()
    app = echo_app()
    app.add_middleware(AnnotatingMiddleware)
    if hooks:
        tracer.instrument(tracer_provider=provider)
    from opentelemetry import trace

    trace_api_provider = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = provider  # the user's tracer comes from the global provider
    try:
        with run_server(tracer.TracingMiddleware(app, tracer_provider=provider)) as server:
            assert asyncio.run(_echo(server.ws_url)) == "hello"
            wait_until(lambda: any(s.name == vocab.WS_CLOSE for s in exporter.get_finished_spans()))
    finally:
        trace._TRACER_PROVIDER = trace_api_provider
        if hooks:
            tracer.uninstrument()
    tree = Tree(list(exporter.get_finished_spans()))
    (layer,) = [s for s in tree.spans if s.name == "AnnotatingMiddleware"]
    (work,) = [s for s in tree.spans if s.name == "user.work"]
    assert layer.attributes["app.annotated"] is True
    assert tree.parent(work) is layer
    (inner,) = [s for s in tree.kids(layer) if s is not work]  # the next layer
    assert vocab.MIDDLEWARE_LAYER in inner.attributes
    # FastAPI's native telemetry span sits inside the chain: the next layer nests under it.
    (native,) = [s for s in tree.spans if s.name == "WS /echo"]
    assert [vocab.MIDDLEWARE_LAYER in s.attributes for s in tree.kids(native)] == [True]
    # Its own parent comes from the traceparent the middleware hands the app.
    assert tree.parent(native) is not None
    assert all(s.context.trace_id == layer.context.trace_id for s in tree.spans)
    assert tracker.open == {}
    assert errors.counts == {}


@pytest.mark.parametrize("hooks", [True, False], ids=["server-hooks", "middleware-alone"])
def test_a_failing_endpoint_marks_the_layers_it_went_through(hooks: bool) -> None:
    provider, exporter, tracker = make_provider()
    errors.reset()
    app = FastAPI(telemetry={"tracing": False})

    @app.websocket("/boom")
    async def boom(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise RuntimeError("handler bug")

    if hooks:
        tracer.instrument(tracer_provider=provider)
    try:
        with run_server(tracer.TracingMiddleware(app, tracer_provider=provider)) as server:

            async def poke() -> None:
                async with connect(server.ws_url + "/boom") as client:
                    await client.send("x")
                    with pytest.raises(websockets.ConnectionClosed):
                        await asyncio.wait_for(client.recv(), 5)

            asyncio.run(poke())
            wait_until(lambda: any(s.name == "boom" for s in exporter.get_finished_spans()))
    finally:
        if hooks:
            tracer.uninstrument()
    tree = Tree(list(exporter.get_finished_spans()))
    (endpoint,) = [s for s in tree.spans if s.name == "boom"]
    path = [endpoint]
    parent = tree.parent(endpoint)
    while parent is not None and vocab.MIDDLEWARE_LAYER in parent.attributes:
        path.append(parent)
        parent = tree.parent(parent)
    names = [s.name for s in path]
    expected = ["boom", "APIWebSocketRoute", "APIRouter", "AsyncExitStackMiddleware"]
    outer = ["FastAPI", "ProxyHeadersMiddleware"] if hooks else ["FastAPI"]  # uvicorn's, hooked
    assert names[:4] == expected and names[-len(outer) :] == outer, names
    assert "ServerErrorMiddleware" in names
    for span in path:
        assert span.attributes[vocab.ERROR_TYPE] == "RuntimeError", span.name
        assert span.status.status_code.name == "ERROR"
    assert tracker.open == {}
