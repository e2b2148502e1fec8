"""Handshake templates: on ``wstrace serve``'s set-up a connection's handshake spans go to the
pipeline as one item, taken apart where they are exported
(:mod:`tracer.export.handshake_facts`).  Every template made here is checked against the facts
the server's span path makes of the same spans, with the same ids
(:func:`tests.support.templates.handshakes_checked`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from opentelemetry.sdk.trace import SpanLimits

import tracer
from tests.support import facts as support
from tests.support.apps import echo_app
from tests.support.server import IMPL_PAIRS, run_server
from tests.support.templates import HandshakeCheck, handshakes_checked
from tracer import vocab
from tracer.export import facts
from tracer.export.offload import SubprocessExporter
from tracer.export.pipeline import ExportPipeline
from tracer.export.reader import load

STAGES = {vocab.HTTP_HEADERS_PARSE, vocab.HTTP_UPGRADE_DETECT, vocab.WS_PROTOCOL_SWITCH}


@pytest.fixture
def check() -> Iterator[HandshakeCheck]:
    with handshakes_checked() as made:
        yield made
    assert made.differences == []


def _serve(provider: object, http: str, ws: str) -> None:
    """One accepted connection (an echo, with permessage-deflate) and one refused handshake,
    on a real server with the hooks and the middleware."""
    tracer.instrument(tracer_provider=provider)
    try:
        app = tracer.TracingMiddleware(echo_app(), tracer_provider=provider)
        with run_server(app, http=http, ws=ws) as server:

            async def talk() -> None:
                async with websockets.connect(f"{server.ws_url}/echo") as client:
                    await client.send("hello")
                    assert await client.recv() == "hello"
                with pytest.raises(websockets.InvalidStatus):
                    await websockets.connect(f"{server.ws_url}/reject")

            asyncio.run(talk())
    finally:
        tracer.uninstrument()


@pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS)
def test_handshakes_on_a_real_server_are_the_facts_the_server_would_make(
    check: HandshakeCheck, http: str, ws: str
) -> None:
    provider, collector = support.collecting(SpanLimits())
    _serve(provider, http, ws)
    provider.shutdown()
    handshakes = [f for f in collector.facts if facts.is_handshake(f)]
    assert check.compared == len(handshakes) == 2
    spans = collector.get_finished_spans()
    assert len(spans) == sum(facts.span_count(f) for f in collector.facts)
    names = [s.name for s in spans]
    assert names.count(vocab.WS_HANDSHAKE) == 2 and names.count(vocab.WS_ACCEPT) == 1
    assert set(names) >= STAGES
    refused = [s for s in spans if s.name == vocab.WS_HANDSHAKE and s.status.is_ok is False]
    assert len(refused) == 1  # the refused one, with its error


def test_limits_that_could_cut_a_span_keep_the_handshake_in_the_server(
    check: HandshakeCheck,
) -> None:
    provider, collector = support.collecting(SpanLimits(max_span_attributes=4))
    _serve(provider, "h11", "websockets-sansio")
    provider.shutdown()
    assert check.compared == 0
    assert not any(facts.is_handshake(f) for f in collector.facts)
    handshakes = [s for s in collector.get_finished_spans() if s.name == vocab.WS_HANDSHAKE]
    assert len(handshakes) == 2
    assert all(len(s.attributes) <= 4 and s.dropped_attributes for s in handshakes)


def test_the_export_process_writes_every_span_a_template_stands_for(
    check: HandshakeCheck, tmp_path: Path
) -> None:
    path = tmp_path / "out.otlp.jsonl"
    pipeline = ExportPipeline(SubprocessExporter.otlp_file(path))
    provider = support.provider(SpanLimits())
    provider.add_span_processor(pipeline)
    _serve(provider, "httptools", "websockets")
    provider.shutdown()
    assert check.compared == 2
    counts = pipeline.counts()
    assert counts.written == counts.as_facts and counts.dropped_total == 0
    traces = load([path])
    names = [s.name for s in traces.spans]
    assert len(names) == counts.written
    assert names.count(vocab.WS_HANDSHAKE) == 2 and set(names) >= STAGES
