"""Chrome Trace Event JSON for Perfetto: strict nesting per track, instants, flows, tracks."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.golden import synthetic
from tracer import vocab
from tracer.analysis.perfetto import _us, to_chrome_trace, write_chrome_trace
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.reader import load
from tracer.export.traceset import TraceSet

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

SAMPLES = sorted((Path(__file__).parent.parent / "traces" / "samples").glob("*.otlp.jsonl"))
Event = dict[str, Any]


def written(tmp_path: Path, build: Callable[[OTLPJsonFileExporter], Any]) -> TraceSet:
    path = tmp_path / "p.otlp.jsonl"
    exporter = OTLPJsonFileExporter(path)
    build(exporter)
    exporter.shutdown()
    return load(path)


def truncating(x: float | int) -> int:
    """µs → ns as older Perfetto builds convert (``static_cast<int64_t>(x * 1000.0)``)."""
    return x * 1000 if isinstance(x, int) else int(x * 1000.0)


def rounding(x: float | int) -> int:
    """µs → ns as newer Perfetto builds convert (``llround(x * 1000.0)``)."""
    return x * 1000 if isinstance(x, int) else round(x * 1000.0)


def slices(events: list[Event], to_ns: Callable[[Any], int]) -> dict[int, list[tuple]]:
    by_tid: dict[int, list[tuple]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            start = to_ns(e["ts"])
            by_tid[e["tid"]].append((start, start + to_ns(e["dur"]), e["name"], e))
    for items in by_tid.values():
        items.sort(key=lambda s: (s[0], -s[1]))
    return by_tid


def assert_nested(events: list[Event], to_ns: Callable[[Any], int]) -> None:
    """Per track, sorted by start: each slice is inside the innermost open one or after it."""
    for tid, items in slices(events, to_ns).items():
        stack: list[tuple] = []
        for start, end, name, _ in items:
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack:
                assert end <= stack[-1][1], f"tid {tid}: {name} pokes out of {stack[-1][2]}"
            stack.append((start, end, name))


def assert_nested_float(events: list[Event]) -> None:
    by_tid: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            by_tid[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    eps = 1e-6
    for tid, items in by_tid.items():
        items.sort(key=lambda s: (s[0], -s[1]))
        stack: list[tuple[float, float, str]] = []
        for start, end, name in items:
            while stack and stack[-1][1] <= start + eps:
                stack.pop()
            if stack:
                assert end <= stack[-1][1] + eps, f"tid {tid}: {name} pokes out of {stack[-1]}"
            stack.append((start, end, name))


def innermost(events: list[Event], tid: int, ts: float | int) -> Event:
    t = truncating(ts)
    around = [s for s in slices(events, truncating)[tid] if s[0] <= t <= s[1]]
    assert around, f"nothing open on tid {tid} at {ts}"
    return max(around, key=lambda s: (s[0], -s[1]))[3]


def thread_names(events: list[Event]) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}


def main_tid(events: list[Event], label: str) -> int:
    (tid,) = [tid for tid, name in thread_names(events).items() if name == label]
    return tid


def check_all(data: dict[str, Any]) -> list[Event]:
    """The invariants every export must satisfy."""
    text = json.dumps(data, allow_nan=False)  # no NaN / Infinity anywhere
    assert json.loads(text) == data
    assert data["displayTimeUnit"] == "ms"
    events = data["traceEvents"]
    named = thread_names(events)
    for e in events:
        assert e["pid"] == 1
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)) and math.isfinite(e["ts"]) and e["ts"] >= 0
            assert e["tid"] in named
        if e["ph"] == "X":
            assert e["dur"] >= 0
        if e["ph"] == "i":
            assert e["s"] == "t"
    assert_nested(events, truncating)
    assert_nested(events, rounding)
    assert_nested_float(events)
    return events


@pytest.mark.parametrize("frames", [vocab.FRAMES_SPANS, vocab.FRAMES_EVENTS])
@pytest.mark.parametrize("shape", [vocab.SHAPE_CONNECTION, vocab.SHAPE_MESSAGE])
def test_auction_export(tmp_path: Path, frames: str, shape: str) -> None:
    traces = written(tmp_path, lambda e: synthetic.auction(e, frames=frames, shape=shape))
    events = check_all(to_chrome_trace(traces))
    frame_names = (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND)
    spans = [s for s in traces.spans if s.name not in frame_names]
    assert sum(e["ph"] == "X" for e in events) == len(spans)  # one slice per span
    frame_count = sum(s.name in frame_names for s in traces.spans) + sum(
        ev.name in frame_names for s in traces.spans for ev in s.events
    )
    instants = [e for e in events if e["ph"] == "i" and e["name"] in frame_names]
    # initial sends 3; bid 1: 1 in + 3 out; bid 2: 3 in + 3 out; conn 3's message 1;
    # closes of conn 1 and 2: 2 each (conn 3 drops: no close frames)
    assert len(instants) == frame_count == 18
    first = min(instants, key=lambda e: e["ts"])  # the initial state message's frame
    assert first["args"]["websocket.opcode"] == 1
    assert first["args"]["websocket.opcode.name"] == "text"
    assert first["args"]["websocket.fin"] is True
    assert first["args"]["websocket.mask"] is False
    assert first["args"]["summary"] == "FIN=1 text MASK=0 len=40"
    stack = [e for e in events if e["name"] == vocab.EVENT_HANDSHAKE_STACK]
    assert len(stack) == 3
    assert stack[0]["args"]["stack"][0] == (
        "run_asgi  uvicorn/protocols/websockets/websockets_impl.py:243"
    )


def test_tracks_per_connection(tmp_path: Path) -> None:
    traces = written(tmp_path, synthetic.auction)
    events = check_all(to_chrome_trace(traces))
    names = thread_names(events)
    labels = [f"conn {i} 127.0.0.1:5052{i} /ws/auction/1" for i in (1, 2, 3)]
    # The ASGI app starts inside the handshake and outlives it: it gets a second track.
    assert sorted(names.values()) == sorted(labels + [f"{label} (2)" for label in labels])
    sort_index = {
        e["tid"]: e["args"]["sort_index"] for e in events if e["name"] == "thread_sort_index"
    }
    order = sorted(names, key=sort_index.__getitem__)
    assert [names[t] for t in order] == [x for label in labels for x in (label, f"{label} (2)")]
    for label in labels:
        main, extra = main_tid(events, label), main_tid(events, f"{label} (2)")
        on_main = {e["name"] for e in events if e["ph"] == "X" and e["tid"] == main}
        on_extra = {e["name"] for e in events if e["ph"] == "X" and e["tid"] == extra}
        assert {vocab.CONNECTION, vocab.WS_HANDSHAKE, vocab.WS_CLOSE} <= on_main
        assert {vocab.ASGI_APP, "FastAPI", vocab.WS_ACCEPT} <= on_extra
        assert vocab.CONNECTION not in on_extra


def flows(events: list[Event]) -> list[tuple[Event, Event]]:
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == ends.keys()
    pairs = [(starts[i], ends[i]) for i in sorted(starts)]
    for start, end in pairs:  # Perfetto drops a flow whose end comes before its start
        assert truncating(start["ts"]) < truncating(end["ts"])
    return pairs


def test_broadcast_flows_land_on_recipient_tracks(tmp_path: Path) -> None:
    traces = written(tmp_path, synthetic.auction)
    events = check_all(to_chrome_trace(traces))
    pairs = flows(events)
    assert len(pairs) == 6  # two broadcasts to three bidders
    moved = 0
    for start, end in pairs:
        assert start["cat"] == end["cat"] == "wstrace.broadcast"
        assert end["bp"] == "e"
        source = innermost(events, start["tid"], start["ts"])
        assert source["name"] == vocab.WS_BROADCAST
        target = innermost(events, end["tid"], end["ts"])
        assert target["name"] == vocab.WS_MESSAGE_SEND
        recipient = target["args"][vocab.CONNECTION_ID]
        label = f"conn {recipient} 127.0.0.1:5052{recipient} /ws/auction/1"
        assert end["args"]["recipient"] == label
        if end["tid"] != start["tid"]:
            moved += 1
            # Drawn on the recipient's own track, directly under its ws.connection.
            assert end["tid"] == main_tid(events, label)
            assert innermost(events, end["tid"], target["ts"] - 0.0005)["name"] == vocab.CONNECTION
    assert moved == 4  # each broadcast's two other recipients; the sender's own send stays


def test_busy_recipient_keeps_the_send_on_the_sender_track(tmp_path: Path) -> None:
    def build(exporter: OTLPJsonFileExporter) -> None:
        b = synthetic.TraceBuilder(exporter)
        c1, c2 = b.connection(1, 0, 5000), b.connection(2, 200, 5200)
        # conn 2 handles its own message from 1200 to 1350 µs; the send to it (1210–1290)
        # falls inside: drawing it there would make it look like part of that message.
        b.message(c2, 1200, until=1350)
        b.message(c1, 1000, broadcast_to=[c1, c2])
        b.close(c1)
        b.close(c2)

    traces = written(tmp_path, build)
    events = check_all(to_chrome_trace(traces))
    pairs = flows(events)
    assert len(pairs) == 2
    for start, end in pairs:
        assert end["tid"] == start["tid"]
        assert innermost(events, end["tid"], end["ts"])["name"] == vocab.WS_MESSAGE_SEND


def test_overlapping_messages_get_an_extra_track(tmp_path: Path) -> None:
    def build(exporter: OTLPJsonFileExporter) -> None:
        b = synthetic.TraceBuilder(exporter)
        conn = b.connection(1, 0, 5000)
        b.message(conn, 1000, until=1500)
        b.message(conn, 1400, until=1900)  # arrives while the first is still handled
        b.close(conn)

    events = check_all(to_chrome_trace(written(tmp_path, build)))
    receives = [e for e in events if e["ph"] == "X" and e["name"] == vocab.WS_MESSAGE_RECEIVE]
    assert len({e["tid"] for e in receives}) == 2
    names = thread_names(events)
    assert names[receives[1]["tid"]].startswith("conn 1 127.0.0.1:50521 /ws/auction/1 (")


def test_children_are_clamped_into_their_parent(tmp_path: Path) -> None:
    def build(exporter: OTLPJsonFileExporter) -> None:
        b = synthetic.TraceBuilder(exporter)
        root = b.start(vocab.CONNECTION, 0)
        parent = b.start(vocab.WS_HANDSHAKE, 100.001, root)
        b.span(vocab.WS_HANDSHAKE_VALIDATE, 99.9, 200.002, parent)  # pokes out on both sides
        parent.end(end_time=synthetic.us(200.001))
        root.end(end_time=synthetic.us(300))

    events = check_all(to_chrome_trace(written(tmp_path, build)))
    x = {e["name"]: e for e in events if e["ph"] == "X"}
    parent, child = x[vocab.WS_HANDSHAKE], x[vocab.WS_HANDSHAKE_VALIDATE]
    assert child["ts"] == parent["ts"] and truncating(child["ts"]) == 100_001
    assert child["dur"] == parent["dur"] and truncating(child["dur"]) == 100_000


@given(st.integers(min_value=0, max_value=10**13))
def test_microseconds_convert_back_exactly(ns: int) -> None:
    value = _us(ns)
    assert truncating(value) == ns
    assert rounding(value) == ns


def test_unattached_traces_and_hostile_values(tmp_path: Path) -> None:
    def build(exporter: OTLPJsonFileExporter) -> None:
        b = synthetic.TraceBuilder(exporter, shape=vocab.SHAPE_MESSAGE)
        conn = b.connection(1, 0, 5000)
        b.message(conn, 1000)
        b.span("odd", 1100, 1200, None, attributes={"nan": float("nan"), "inf": float("-inf")})
        b.close(conn)

    traces = written(tmp_path, build)
    lines = (tmp_path / "p.otlp.jsonl").read_text().splitlines()
    only = tmp_path / "no-conn.otlp.jsonl"
    only.write_text("\n".join(line for line in lines if '"ws.connection"' not in line) + "\n")
    data = to_chrome_trace(load(only))
    events = check_all(data)
    assert "other traces" in thread_names(events).values()
    (odd,) = [e for e in events if e["name"] == "odd"]
    assert odd["args"]["nan"] == "nan" and odd["args"]["inf"] == "-inf"
    out = write_chrome_trace(traces, tmp_path / "out.json")
    check_all(json.loads(out.read_text()))


@pytest.mark.skipif(not SAMPLES, reason="no committed sample traces")
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_committed_samples_export_cleanly(sample: Path) -> None:
    traces = load(sample)
    events = check_all(to_chrome_trace(traces))
    for start, end in flows(events):
        assert innermost(events, start["tid"], start["ts"])["name"] == vocab.WS_BROADCAST
        assert innermost(events, end["tid"], end["ts"])["name"] == vocab.WS_MESSAGE_SEND
