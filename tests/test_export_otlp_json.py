"""The direct OTLP/JSON encoder agrees with the ecosystem's protobuf encoder, span for span."""

from __future__ import annotations

import asyncio
import json

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from websockets.asyncio.client import connect

from tests.golden import synthetic
from tests.support.apps import echo_app
from tests.support.otlp_reference import ids_to_base64
from tests.support.server import run_server
from tests.support.tracing import traced
from tracer.export.otlp_json import spans_to_otlp_dict, spans_to_otlp_line


def assert_same_as_protobuf(spans) -> None:
    line = spans_to_otlp_line(spans)
    # The text path is byte for byte the dict path through json.dumps…
    reference_text = json.dumps(
        spans_to_otlp_dict(spans), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    assert line == reference_text + "\n"
    ours = json.loads(line)
    parsed = json_format.ParseDict(ids_to_base64(ours), ExportTraceServiceRequest())
    assert parsed == encode_spans(spans)
    # And protobuf's own JSON of its message is ours with base64 ids: same keys, same order.
    reference = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    assert json.dumps(ids_to_base64(ours)) == json.dumps(reference)


@pytest.mark.parametrize("shape", ["connection", "message"])
@pytest.mark.parametrize("frames", ["spans", "events"])
def test_synthetic_auction_traces(shape: str, frames: str) -> None:
    memory = InMemorySpanExporter()
    synthetic.auction(memory, shape=shape, frames=frames)
    spans = memory.get_finished_spans()
    assert len(spans) > 50
    assert_same_as_protobuf(spans)


def test_spans_recorded_from_a_real_server() -> None:
    with traced(capture_payload=4) as t, run_server(echo_app()) as server:

        async def talk() -> None:
            async with connect(server.ws_url + "/echo") as client:
                await client.send("héllo")
                await asyncio.wait_for(client.recv(), 5)

        asyncio.run(talk())
    spans = t.spans
    assert any(s.events for s in spans)
    assert_same_as_protobuf(spans)


def test_empty_batch() -> None:
    assert spans_to_otlp_dict([]) == {}
    assert spans_to_otlp_line([]) == "{}\n"


def test_awkward_values_survive_the_text_path() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t", "1.0")
    for n in range(3):  # the second and third round hit the fragment cache
        span = tracer.start_span(
            'quote " backslash \\ newline \n',
            attributes={
                "s": "\x1b[31m red \u202e bidi é 🦆",
                "b": n % 2 == 0,
                "i": -(2**63) + n,
                "f": 1.5,
                "nan": float("nan"),
                "arr": ["x", "y"],
                "ints": [1, 2, 3],
                "empty": "",
            },
        )
        span.add_event("e", {"k": True})
        span.set_status(StatusCode.ERROR, 'bad "thing"')
        span.end()
    assert_same_as_protobuf(memory.get_finished_spans())


def test_arrays_kept_as_text_keep_their_element_types() -> None:
    """Arrays of strings and of ints (a handshake's stack) are written once and their text
    kept; an array equal to a kept one but of bools or floats is still written as its own."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t", "1.0")
    for values in ([1, 0], [True, False], [1.0, 0.0], ["1", "0"], [1, 0], [True, False]):
        tracer.start_span("s", attributes={"a": values}).end()
    spans = memory.get_finished_spans()
    (scope,) = spans_to_otlp_dict(spans)["resourceSpans"][0]["scopeSpans"]
    written = [s["attributes"][0]["value"]["arrayValue"]["values"][0] for s in scope["spans"]]
    assert written == [{"intValue": "1"}, {"boolValue": True}, {"doubleValue": 1.0},
                       {"stringValue": "1"}, {"intValue": "1"}, {"boolValue": True}]  # fmt: skip
    assert_same_as_protobuf(spans)
