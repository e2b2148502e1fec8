"""Reading OTLP/JSON Lines back: a round trip through the real SDK, grouping, and errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.golden import synthetic
from tracer import vocab
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.reader import TraceFileError, load, read_file, read_spans
from tracer.export.records import SpanRecord
from tracer.export.traceset import TraceSet

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

GOLDEN = Path(__file__).parent / "golden" / "small.otlp.jsonl"


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def write_auction(tmp_path: Path, **kw: Any) -> tuple[Path, InMemorySpanExporter]:
    path = tmp_path / "auction.otlp.jsonl"
    memory = InMemorySpanExporter()
    exporter = OTLPJsonFileExporter(path)
    synthetic.auction([exporter, memory], **kw)
    exporter.shutdown()
    return path, memory


@pytest.mark.parametrize("frames", [vocab.FRAMES_SPANS, vocab.FRAMES_EVENTS])
def test_round_trip_through_the_sdk(tmp_path: Path, frames: str) -> None:
    path, memory = write_auction(tmp_path, frames=frames)
    finished = memory.get_finished_spans()
    assert len(path.read_text().splitlines()) == len(finished)  # SimpleSpanProcessor: 1 per line
    records = {r.span_id: r for r in read_spans([path])}
    assert len(records) == len(finished)
    for span in finished:
        ctx = span.get_span_context()
        record = records[f"{ctx.span_id:016x}"]
        assert record.trace_id == f"{ctx.trace_id:032x}"
        assert record.parent_span_id == (f"{span.parent.span_id:016x}" if span.parent else None)
        assert record.name == span.name
        assert (record.start_ns, record.end_ns) == (span.start_time, span.end_time)
        assert record.attributes == {k: _plain(v) for k, v in span.attributes.items()}
        assert record.kind == span.kind.value + 1  # SDK enum starts at 0, OTLP at 1
        assert [(e.name, e.time_ns, e.attributes) for e in record.events] == [
            (e.name, e.timestamp, {k: _plain(v) for k, v in e.attributes.items()})
            for e in span.events
        ]
        assert [(li.trace_id, li.span_id, li.attributes) for li in record.links] == [
            (f"{li.context.trace_id:032x}", f"{li.context.span_id:016x}", dict(li.attributes))
            for li in span.links
        ]
        assert record.status.code == span.status.status_code.value
        assert record.resource == {"service.name": "auction-demo"}
        assert record.scope == "wstrace"
        assert record.source.startswith(f"{path}:")


def test_golden_values_decode() -> None:
    spans = {s.name: s for s in read_file(GOLDEN)}
    endpoint = spans["websocket_endpoint"]
    assert endpoint.status.is_error and endpoint.status.message == "handler raised"
    assert endpoint.attributes["wstrace.sample.ratio"] == 0.25
    (event,) = spans["ws.accept"].events
    assert event.attributes[vocab.STACK_LINES] == [243, 161]
    assert spans["ws.frame.send"].attributes[vocab.WS_FIN] is True
    assert spans["ws.connection"].kind == 2
    assert spans["ws.connection"].resource == {"service.name": "golden", "wstrace.sample": True}


def test_connections_are_grouped_and_numbered_by_start(tmp_path: Path) -> None:
    path, _ = write_auction(tmp_path)
    traces = load(path)
    # In the file the connections appear in the order they ended; numbering is by start.
    assert [c.connection_id for c in traces.connections] == [1, 2, 3]
    assert [c.index for c in traces.connections] == [1, 2, 3]
    conn = traces.connection(2)
    assert conn.label == "conn 2 127.0.0.1:50522 /ws/auction/1"
    assert conn.root.name == vocab.CONNECTION
    assert not conn.linked_roots and not traces.unattached
    names = [s.name for s in conn.spans]
    assert names.count(vocab.WS_MESSAGE_RECEIVE) == 1
    assert names.count(vocab.WS_BROADCAST) == 1
    # The broadcast's sends link to each recipient; the link does not move them.
    sends = [
        s
        for s in traces.spans
        if s.name == vocab.WS_MESSAGE_SEND and traces.parent(s).name == vocab.WS_BROADCAST
    ]
    assert len(sends) == 6
    for send in sends:
        target = traces.recipient(send)
        assert target is not None
        assert target.connection_id == send.attributes[vocab.CONNECTION_ID]
        assert traces.connection_of(send) is not target or target.connection_id in (1, 2)
    with pytest.raises(LookupError, match=r"no connection 4: the trace has 3"):
        traces.connection(4)


def test_message_shape_traces_fold_into_their_connection(tmp_path: Path) -> None:
    path, _ = write_auction(tmp_path, shape=vocab.SHAPE_MESSAGE)
    traces = load(path)
    assert len(traces.traces) == 6  # three connection traces, three message traces
    for conn in traces.connections:
        (linked,) = conn.linked_roots
        assert linked.name == vocab.WS_MESSAGE_RECEIVE
        assert linked.trace_id != conn.root.trace_id
        assert linked.links[0].span_id == traces.children(conn.root)[3].span_id  # ws.handshake
        assert traces.children(conn.root)[3].name == vocab.WS_HANDSHAKE
        assert all(traces.connection_of(s) is conn for s in conn.spans)
    assert traces.unattached == []


def test_message_trace_without_its_connection_is_unattached(tmp_path: Path) -> None:
    path, _ = write_auction(tmp_path, shape=vocab.SHAPE_MESSAGE)
    lines = path.read_text().splitlines()
    kept = [line for line in lines if '"ws.message.receive"' in line or "ws.connection" not in line]
    only = tmp_path / "messages.otlp.jsonl"
    only.write_text("\n".join(line for line in kept if '"ws.connection"' not in line) + "\n")
    traces = load(only)
    assert traces.connections == []
    assert {s.name for s in traces.unattached} >= {vocab.WS_MESSAGE_RECEIVE}
    with pytest.raises(LookupError, match=r"no ws\.connection spans"):
        traces.connection(1)


def test_trace_lookup_by_prefix() -> None:
    def span(trace_id: str) -> SpanRecord:
        return SpanRecord(trace_id, "00000000000000a1", None, "x", 0, 1)

    ids = ["abcd" + "0" * 27 + "1", "abce" + "0" * 27 + "2", "abce" + "0" * 27 + "3"]
    traces = TraceSet(span(t) for t in ids)
    assert traces.find_trace(ids[0].upper()) == ids[0]
    assert traces.find_trace("abcd") == ids[0]
    assert traces.find_trace(ids[2][:-1] + "3") == ids[2]
    with pytest.raises(LookupError, match="ambiguous"):
        traces.find_trace("abce")
    with pytest.raises(LookupError, match="no trace 'abc'"):
        traces.find_trace("abc")  # prefixes need 4 digits
    with pytest.raises(LookupError, match=r"no trace 'ffff'.*traces: abcd0000"):
        traces.find_trace("ffff")


def test_directory_and_duplicates(tmp_path: Path) -> None:
    path, memory = write_auction(tmp_path)
    count = len(memory.get_finished_spans())
    assert len(load(tmp_path)) == count
    assert len(load([path, path])) == count  # the same span twice is kept once


def test_accepts_snake_case_base64_ids_numbers_and_enum_names(tmp_path: Path) -> None:
    """What protobuf's JSON mapping (or an older tool) writes still reads the same."""
    canonical = read_file(GOLDEN)
    data = json.loads(GOLDEN.read_text())

    def mangle(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                snake = "".join("_" + c.lower() if c.isupper() else c for c in k)
                if k in ("traceId", "spanId", "parentSpanId"):
                    out[snake] = base64.b64encode(bytes.fromhex(v)).decode()
                elif k in ("startTimeUnixNano", "endTimeUnixNano", "intValue"):
                    out[snake] = int(v)
                elif k == "kind":
                    out[k] = ["", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER"][v]
                else:
                    out[snake] = mangle(v, k)
            return out
        if isinstance(node, list):
            return [mangle(item) for item in node]
        return node

    other = tmp_path / "protobuf-style.otlp.jsonl"
    other.write_text(json.dumps(mangle(data)) + "\n")
    assert read_file(other) == [
        type(s)(**{**s.__dict__, "source": f"{other}:1"}) for s in canonical
    ]


# --- errors: each names the file (and line) and says what to do --------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceFileError, match=r"nope\.otlp\.jsonl: no such file; pass a"):
        load(tmp_path / "nope.otlp.jsonl")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.otlp.jsonl"
    path.write_text(content)
    with pytest.raises(TraceFileError, match=r"empty\.otlp\.jsonl: file is empty; spans are"):
        load(path)


def test_non_json_line_reports_its_number(tmp_path: Path) -> None:
    path = tmp_path / "cut.otlp.jsonl"
    path.write_text(GOLDEN.read_text() + '{"resourceSpans": [\n')
    with pytest.raises(TraceFileError, match=r"cut\.otlp\.jsonl:2: not JSON \("):
        load(path)


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        ('{"hello": "world"}', 'no "resourceSpans" key'),
        ("[1, 2, 3]", "the line is list, expected an object"),
        (
            '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz", "spanId": "0"}]}]}]}',
            "traceId 'xyz' is not 32 hex digits",
        ),
        ('{"resourceSpans": {"not": "a list"}}', "resourceSpans is dict, expected an array"),
    ],
)
def test_json_that_is_not_otlp(tmp_path: Path, content: str, detail: str) -> None:
    path = tmp_path / "other.json"
    path.write_text(content + "\n")
    with pytest.raises(TraceFileError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:1: JSON but not OTLP trace data (")
    assert detail in message
    assert "\n" not in message


def test_metrics_only_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.otlp.jsonl"
    path.write_text('{"resourceMetrics": []}\n')
    with pytest.raises(TraceFileError, match="OTLP logs/metrics but no traces"):
        load(path)


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    path.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00\xff\xfe")
    with pytest.raises(TraceFileError, match=r"capture\.pcap: not UTF-8 text"):
        load(path)


def test_directory_without_trace_files(tmp_path: Path) -> None:
    with pytest.raises(TraceFileError, match=r"no \*\.otlp\.jsonl files in this directory"):
        load(tmp_path)


def _raw_span(span_id: int, parent: int | None, name: str = "x", start: int = 0) -> dict:
    span = {
        "traceId": "ab" * 16,
        "spanId": f"{span_id:016x}",
        "name": name,
        "startTimeUnixNano": str(1000 + start),
        "endTimeUnixNano": str(2000 + start),
    }
    if parent is not None:
        span["parentSpanId"] = f"{parent:016x}"
    return span


def write_raw(path: Path, spans: list[dict]) -> Path:
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}) + "\n")
    return path


def test_parent_cycles_are_broken(tmp_path: Path) -> None:
    """Crafted input: a span that is its own parent, and two that are each other's."""
    spans = [
        _raw_span(1, 1, "self"),
        _raw_span(2, 3, "a", 1),
        _raw_span(3, 2, "b", 2),
        _raw_span(4, 3, "child of b", 3),
    ]
    traces = load(write_raw(tmp_path / "cycle.otlp.jsonl", spans))
    assert [s.name for s in traces.roots] == ["self", "a"]
    assert [s.name for s, _ in traces.walk(traces.roots[1])] == ["a", "b", "child of b"]
    for span in traces.spans:
        assert len(list(traces.ancestors(span))) < 3
