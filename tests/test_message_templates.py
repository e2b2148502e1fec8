"""Message templates: on ``wstrace serve``'s set-up a received message goes to the pipeline as
its values, and the export process builds its spans (:mod:`tracer.export.message_facts`).
Every template made here is checked against the family the server would have made of the
same handling, with the same ids (:func:`tests.support.templates.templates_checked`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace.span import TraceState

import tracer
from tests.support import facts as support
from tests.support.room_app import room_app
from tests.support.server import IMPL_PAIRS, run_server
from tests.support.templates import Room, TemplateCheck, broadcast_in, templates_checked
from tracer import vocab
from tracer.export import facts, message_facts
from tracer.export.accounting import DropReason
from tracer.export.offload import SubprocessExporter
from tracer.export.otlp_file import SPANS_PER_LINE, OTLPJsonFileExporter
from tracer.export.otlp_json import (
    Written,
    _attributes,
    items_to_otlp_bytes,
    layout_text,
    written_template,
)
from tracer.export.pipeline import ExportPipeline
from tracer.export.reader import load


@pytest.fixture
def check() -> Iterator[TemplateCheck]:
    with templates_checked() as check:
        yield check
    assert check.differences == []


SHAPES = {
    "under its connection": {},
    "past the connection's cap": {"max_messages_per_trace": 1},
    "message shape": {"shape": vocab.SHAPE_MESSAGE},
}
"""Where the messages go: the first under its connection and the rest in traces of their own
(linked to it), or all in traces of their own."""


@pytest.mark.fast
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("frames", [vocab.FRAMES_SPANS, vocab.FRAMES_OFF])
def test_every_kind_of_handling_is_the_family_the_server_would_make(
    check: TemplateCheck, frames: str, shape: str
) -> None:
    room = Room(frames=frames, capture_payload=8, redact_payload=lambda b: b.upper(),
                **SHAPES[shape])  # fmt: skip
    owner, app = room.open()
    others = [room.open()[0] for _ in range(2)]
    room.receive(owner, app, "fragmented bid", pieces=3)  # frames, a reply in two
    room.send(app, owner, "ok", frames=2)
    room.handled(owner, app)
    room.receive(owner, app, "fan out")  # sends to others: a broadcast found by itself
    for to in (*others, owner):
        room.send(app, to, "new bid")
    room.send(app, owner, "and you", error="ClientDisconnected")  # a send that failed
    room.handled(owner, app)
    room.receive(owner, app, "explicit")  # tracer.broadcast(), then nothing at all
    broadcast_in(app, lambda: [room.send_here(to, "price") for to in (owner, *others)])
    broadcast_in(app, lambda: None)
    room.handled(owner, app)
    room.receive(owner, app, "quiet")  # no sends
    room.handled(owner, app)
    assert check.compared == 4 and len(room.templates) == 4
    roots = [t for t in room.templates if t[facts.Field.PARENT] is None]
    assert len(roots) == {"under its connection": 0, "past the connection's cap": 3,
                          "message shape": 4}[shape]  # fmt: skip
    spans = room.collector.get_finished_spans()
    assert len(spans) == sum(facts.span_count(f) for f in room.collector.facts)
    previews = {s.attributes.get(vocab.WS_PAYLOAD_PREVIEW) for s in spans} - {None}
    redacted = {"FRAGM", "ENTED", " BID", "OK", "FAN OUT", "NEW BID", "AND YOU", "EXPLICIT",
                "PRICE", "QUIET"}  # fmt: skip
    assert previews == (redacted if frames == vocab.FRAMES_SPANS else set())


@pytest.mark.fast
def test_a_message_sampled_on_its_own_is_made_in_the_server(check: TemplateCheck) -> None:
    room = Room(shape=vocab.SHAPE_MESSAGE, message_sampling="independent")
    record, app = room.open()
    room.receive(record, app, "bid")
    room.send(app, record, "ok")
    room.handled(record, app)
    assert room.templates == [] and check.compared == 0  # the sampler is asked, given attributes
    assert vocab.WS_MESSAGE_RECEIVE in {s.name for s in room.collector.get_finished_spans()}


@pytest.mark.fast
def test_limits_that_could_cut_a_family_keep_it_in_the_server(check: TemplateCheck) -> None:
    room = Room(SpanLimits(max_span_attributes=8))
    record, app = room.open()
    room.receive(record, app, "bid")
    room.send(app, record, "ok")
    room.handled(record, app)
    assert room.templates == [] and check.compared == 0
    (message,) = [s for s in room.collector.get_finished_spans()
                  if s.name == vocab.WS_MESSAGE_RECEIVE]  # fmt: skip
    assert message.dropped_attributes > 0  # cut in the server, as the SDK would


@pytest.mark.parametrize("room_for", ["all", "one span"])
def test_templates_are_written_and_dropped_span_by_span(tmp_path: Path, room_for: str) -> None:
    """Through wstrace serve's pipeline and export process: every span a template stands for
    is written, or, with room for one span at a time, every one is dropped and counted."""
    room = Room()
    record = room.echoed(3, reply_frames=2)
    templates = room.templates
    spans = sum(facts.span_count(t) for t in templates)
    path = tmp_path / "out.otlp.jsonl"
    tight = {"max_bytes": 1, "span_bytes": 1} if room_for == "one span" else {}
    pipeline = ExportPipeline(SubprocessExporter.otlp_file(path), **tight)
    for template in templates:
        pipeline.on_fact(template)
    pipeline.shutdown()
    counts = pipeline.counts()
    assert counts.as_facts == spans == 15 and counts.failed == 0 and counts.pending == 0
    traces = load([path])
    if room_for == "all":
        assert counts.written == spans and counts.dropped_total == 0
        names = sorted(s.name for s in traces.spans)
        assert names == sorted([vocab.WS_MESSAGE_RECEIVE, vocab.WS_FRAME_RECEIVE,
                                vocab.WS_MESSAGE_SEND, *[vocab.WS_FRAME_SEND] * 2] * 3)  # fmt: skip
    else:  # the first goes whole, as does its trace from then on
        assert counts.dropped == {DropReason.BUFFER_FULL: 5, DropReason.TRACE_DROPPED: 10}
        assert traces.spans == []
        trace_id = format(record.span_context.trace_id, "032x")
        assert traces.lost_spans == {trace_id: spans}


@pytest.mark.fast
def test_fits_only_limits_that_leave_a_family_whole() -> None:
    assert message_facts.fits(None) and message_facts.fits(SpanLimits())
    assert not message_facts.fits(SpanLimits(max_attribute_length=64))
    assert not message_facts.fits(SpanLimits(max_span_attributes=message_facts.MOST_ATTRIBUTES - 1))
    assert not message_facts.fits(SpanLimits(max_links=0))
    assert not message_facts.fits(SpanLimits(max_link_attributes=0))


@pytest.mark.fast
def test_an_unknown_template_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fact template"):
        facts.built((0,) * facts.TEMPLATE + ("ws.nothing",))


@pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS)
def test_a_room_on_a_real_server_makes_the_families_the_server_would(
    check: TemplateCheck, http: str, ws: str
) -> None:
    collector = support.FactCollector()
    provider = support.provider(SpanLimits())
    provider.add_span_processor(collector)
    tracer.instrument(tracer_provider=provider)
    try:
        app = tracer.TracingMiddleware(room_app(), tracer_provider=provider)
        with run_server(app, http=http, ws=ws) as server:
            asyncio.run(_bid_in_a_room(f"{server.ws_url}/ws/auction/7", bidders=3, bids=4))
    finally:
        tracer.uninstrument()
    provider.shutdown()
    templates = [f for f in collector.facts if len(f) > facts.TEMPLATE]
    assert check.compared == len(templates) >= 4  # one a bid (the last may still be open)
    fan_outs = [f for f in templates if any(c[0] == message_facts.BROADCAST for c in f[-2][1])]
    assert fan_outs  # each bid went to the whole room


async def _bid_in_a_room(url: str, bidders: int, bids: int) -> None:
    import websockets

    clients = [await websockets.connect(url) for _ in range(bidders)]
    try:
        for client in clients:
            assert await client.recv() == "joined"
        for n in range(bids):
            await clients[n % bidders].send(json.dumps({"bid": n}))
            for client in clients:
                while json.loads(await asyncio.wait_for(client.recv(), 10)).get("bid") != n:
                    pass  # "joined" of a later bidder, or an earlier bid's copy
    finally:
        for client in clients:
            await client.close()


@pytest.mark.fast
def test_text_from_the_wire_is_written_escaped_whatever_it_holds(check: TemplateCheck) -> None:
    """Previews and errors go into the attributes' text as JSON strings: quotes, backslashes,
    control characters, ``%`` (the text is laid out by ``%`` formatting) and non-ASCII text
    come back as they went in."""
    hostile = '%s %d %(x)s "q" \\ \n\t\x00 é€ 🎉 </script> {}'
    room = Room(capture_payload=256)
    record, app = room.open()
    room.receive(record, app, hostile)
    room.send(app, record, hostile, error='Failed "%s" \\ é')
    room.handled(record, app)
    (template,) = room.templates
    origins = {template[facts.ORIGIN]: facts.origin_parts(template[facts.ORIGIN])}
    line = json.loads(items_to_otlp_bytes([written_template(template)], origins))
    (spans,) = [scope["spans"] for r in line["resourceSpans"] for scope in r["scopeSpans"]]
    values = {
        (span["name"], pair["key"]): pair["value"].get("stringValue")
        for span in spans
        for pair in span["attributes"]
    }
    assert values[vocab.WS_FRAME_RECEIVE, vocab.WS_PAYLOAD_PREVIEW] == hostile
    assert values[vocab.WS_FRAME_SEND, vocab.WS_PAYLOAD_PREVIEW] == hostile
    assert values[vocab.WS_MESSAGE_SEND, vocab.ERROR_TYPE] == 'Failed "%s" \\ é'
    assert check.compared == 1  # and the bytes are those of the family fact (the fixture)


@pytest.mark.fast
@pytest.mark.parametrize(
    "values",
    [
        (True, 0, 1, "text", True, 5, 6, 0, "0a0b0c0d", None, None, "%s"),
        (False, 4, 8, "close", False, 2**70, 2, -1, None, 1000, "bye \"%d\"", None),
        (1.5, (1, 2), None, "", b"raw", {"k": "v"}, 0, 0, None, None, None, None),
    ],
)
def test_attributes_written_as_text_are_those_of_their_dict(values: tuple) -> None:
    """Whatever the types (those a frame has, and others that take the general way), a
    layout's text is what the attribute dict would be written as."""
    code = {vocab.CODE_FUNCTION_NAME: "ws.%s", vocab.CODE_LINE_NUMBER: 7}
    for with_code in (code, {}):
        as_dict = message_facts.laid_out(with_code, message_facts.FRAME_LAYOUT, values)
        text = layout_text(with_code, message_facts.FRAME_LAYOUT, values)
        assert text is not None
        assert orjson.dumps(orjson.Fragment(text)) == orjson.dumps(_attributes(as_dict))
    assert layout_text({}, message_facts.FRAME_LAYOUT, (None,) * 12) is None


def test_a_template_that_cannot_be_written_fails_alone(tmp_path: Path) -> None:
    """In the export process, a template whose values cannot be written (a span id wider than
    its 8 bytes, deep in its frames) counts all its spans failed; the one beside it is
    written."""
    room = Room()
    room.echoed(2)
    good, bad = room.templates
    frames, children = bad[facts.TEMPLATE - 1]
    broken_frame = (2**70, *frames[0][1:])
    broken = (*bad[: facts.TEMPLATE - 1], ((broken_frame,), children), bad[facts.TEMPLATE])
    exporter = SubprocessExporter.otlp_file(tmp_path / "out.otlp.jsonl")
    assert exporter.export([broken, good]).name == "SUCCESS"
    exporter.shutdown()
    spans = facts.span_count(good)
    assert exporter.outcome() == (spans, spans, 2 * spans)
    assert len(load([tmp_path / "out.otlp.jsonl"]).spans) == spans


@pytest.mark.fast
def test_templates_written_already_are_lined_up_as_many_spans(tmp_path: Path) -> None:
    """A file line holds at most SPANS_PER_LINE spans whether they came as facts or as
    templates written already (a template stands for several)."""
    room = Room()
    room.echoed(40)
    templates = room.templates
    origins = {t[facts.ORIGIN]: facts.origin_parts(t[facts.ORIGIN]) for t in templates}
    path = tmp_path / "out.otlp.jsonl"
    exporter = OTLPJsonFileExporter(path=str(path))
    items = [one for t in templates for one in exporter.expand_fact(t, origins)]
    assert all(isinstance(item, Written) for item in items)
    assert exporter.export_facts(items, origins).name == "SUCCESS"
    exporter.shutdown()
    per_line = [
        sum(len(scope["spans"]) for r in request["resourceSpans"] for scope in r["scopeSpans"])
        for request in map(json.loads, path.read_text().splitlines())
    ]
    assert sum(per_line) == sum(facts.span_count(t) for t in templates) == 160
    assert max(per_line) <= SPANS_PER_LINE and len(per_line) == -(-160 // SPANS_PER_LINE)


class _StatefulSampler(Sampler):
    """Samples everything and gives each root a trace state (as a vendor's sampler may)."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None,
                      trace_state: Any = None) -> SamplingResult:  # fmt: skip
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, TraceState([("k", "v1")]))

    def get_description(self) -> str:
        return "stateful"


@pytest.mark.fast
def test_a_connection_with_a_trace_state_hands_it_to_its_messages(check: TemplateCheck) -> None:
    """Under a connection whose trace has a state, every span of a message carries it, as the
    server's span path writes them (the fixture compares the bytes).  Past the cap, in a trace
    of its own, none does: that trace is new, sampled as its connection was, its sampler not
    asked."""
    room = Room(sampler=_StatefulSampler(), max_messages_per_trace=2)
    room.echoed(4, reply_frames=2)
    assert check.compared == 4
    states = []
    for template in room.templates:
        origins = {template[facts.ORIGIN]: facts.origin_parts(template[facts.ORIGIN])}
        line = items_to_otlp_bytes([written_template(template)], origins)
        states.append(line.count(b'"traceState":"k=v1"'))
    assert states == [5, 5, 0, 0]
