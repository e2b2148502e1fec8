"""Spans wstrace builds already finished keep the SDK's promises to span processors: a
processor that acts in ``on_start`` (the real ``BaggageSpanProcessor``) sees every one of them
start, and the provider's ``SpanLimits`` hold for them."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from opentelemetry import baggage, context
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.client import connect

import tracer
from tests.support.server import run_server
from tests.support.tracing import wait_until
from tracer import vocab


def baggage_app() -> FastAPI:
    """Echo, with baggage put in the handler's context once accepted."""
    app = FastAPI()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            return

    return app


async def talk(url: str, messages: int) -> None:
    async with connect(url + "/echo") as client:
        for n in range(messages):
            await client.send(f"hello {n}")
            await client.recv()


def _serve_and_talk(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    tracer.instrument(tracer_provider=provider)
    try:
        app = tracer.TracingMiddleware(baggage_app(), tracer_provider=provider)
        with run_server(app) as server:
            asyncio.run(talk(server.ws_url, 3))
            wait_until(
                lambda: any(s.name == vocab.CONNECTION for s in exporter.get_finished_spans())
            )
    finally:
        tracer.uninstrument()


def test_a_processor_acting_in_on_start_sees_spans_built_finished() -> None:
    provider = TracerProvider()
    provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _serve_and_talk(provider, exporter)

    messages = [s for s in exporter.get_finished_spans() if s.name == vocab.WS_MESSAGE_RECEIVE]
    assert len(messages) == 3
    # Built after the fact in the handler's task, whose context carries the baggage.
    assert all(m.attributes.get("tenant") == "acme" for m in messages)
    assert all(
        s.attributes.get("tenant") is None
        for s in exporter.get_finished_spans()
        if s.name == vocab.CONNECTION
    )  # started before the baggage existed


def test_span_limits_hold_for_spans_built_finished() -> None:
    limits = SpanLimits(max_span_attributes=3, max_attribute_length=5, max_events=1)
    provider = TracerProvider(span_limits=limits)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _serve_and_talk(provider, exporter)

    spans = exporter.get_finished_spans()
    frames = [s for s in spans if s.name == vocab.WS_FRAME_RECEIVE]
    assert len(frames) >= 4
    for span in spans:
        assert len(span.attributes) <= 3, span.name
        assert len(span.events) <= 1, span.name
        for value in span.attributes.values():
            assert not isinstance(value, str) or len(value) <= 5, (span.name, value)
    assert all(f.dropped_attributes > 0 for f in frames)  # counted, as the SDK does
