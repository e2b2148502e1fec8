"""Latency statistics checked against percentiles computed by hand (nearest-rank)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.golden import synthetic
from tracer import vocab
from tracer.analysis.stats import Summary, compute_stats, percentile, stats_renderable
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.reader import load
from tracer.export.traceset import TraceSet

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

PARSE_US = [120, 35, 35, 900, 47, 51, 2, 60, 75, 33, 41, 48, 52, 39, 44, 58, 61, 70, 3000, 45]
# sorted: 2 33 35 35 39 41 44 45 47 48 | 51 52 58 60 61 70 75 120 900 3000
# nearest rank, n=20: p50 → rank 10 = 48; p90 → rank 18 = 120; p99 → rank 20 = 3000
QUEUE_NS = [5000, 100, 2500, 900_000, 0, 1200, 700]
# sorted: 0 100 700 1200 2500 5000 900000; n=7: p50 → rank 4 = 1200; p90, p99 → rank 7
HANDLER_NS = [300_000, 250_000, 1_000_000, 40_000, 45_000, 260_000, 310_000]
# sorted: 40000 45000 250000 260000 300000 310000 1000000; p50 → 260000; p90 → 1000000


def written(tmp_path: Path, build: Any) -> TraceSet:
    path = tmp_path / "s.otlp.jsonl"
    exporter = OTLPJsonFileExporter(path)
    build(exporter)
    exporter.shutdown()
    return load(path)


def many_connections(exporter: OTLPJsonFileExporter) -> None:
    b = synthetic.TraceBuilder(exporter)
    for i, parse_us in enumerate(PARSE_US):
        start = i * 10_000
        root = b.start(vocab.CONNECTION, start, attributes={vocab.CONNECTION_ID: i + 1})
        b.span(vocab.HTTP_HEADERS_PARSE, start + 1, start + 1 + parse_us, root)
        if i < len(QUEUE_NS):
            b.span(
                vocab.WS_MESSAGE_RECEIVE,
                start + 5000,
                start + 6000,
                root,
                attributes={vocab.QUEUE_WAIT_NS: QUEUE_NS[i], vocab.HANDLER_NS: HANDLER_NS[i]},
            )
        root.end(end_time=synthetic.us(start + 9000))


def test_nearest_rank_by_hand() -> None:
    values = [15, 20, 35, 40, 50]
    assert [percentile(values, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    values = [3, 6, 7, 8, 8, 10, 13, 15, 16, 20]
    assert [percentile(values, p) for p in (25, 50, 75, 100)] == [7, 8, 15, 20]
    assert percentile([42], 99) == 42
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 0)
    assert Summary.of([]) == Summary(0)


def test_stage_percentiles(tmp_path: Path) -> None:
    stats = compute_stats(written(tmp_path, many_connections))
    parse = stats.stages[vocab.HTTP_HEADERS_PARSE]
    assert parse == Summary(count=20, p50=48_000, p90=120_000, p99=3_000_000, max=3_000_000)
    assert stats.stages[vocab.CONNECTION] == Summary(20, 9_000_000, 9_000_000, 9_000_000, 9_000_000)
    assert stats.queue_wait == Summary(7, 1200, 900_000, 900_000, 900_000)
    assert stats.handler == Summary(7, 260_000, 1_000_000, 1_000_000, 1_000_000)
    assert stats.connections == 20
    assert stats.fanout == Summary(0)


@pytest.mark.parametrize(
    ("frames", "latency"),
    [
        # bid on conn 1: first frame in at 1000 µs; last send (to conn 3) at 1310, its frame
        # span ends 60 µs later → 1370: 370 µs.  Bid 2: 2000 → 2370.
        (vocab.FRAMES_SPANS, 370_000),
        # frame events are instants: the last frame write is at send + 10 µs → 1320: 320 µs.
        (vocab.FRAMES_EVENTS, 320_000),
    ],
)
@pytest.mark.parametrize("shape", [vocab.SHAPE_CONNECTION, vocab.SHAPE_MESSAGE])
def test_fanout_latency(tmp_path: Path, frames: str, latency: int, shape: str) -> None:
    traces = written(tmp_path, lambda e: synthetic.auction(e, frames=frames, shape=shape))
    stats = compute_stats(traces)
    assert stats.fanout == Summary(2, latency, latency, latency, latency)
    assert stats.broadcasts_without_trigger == 0
    # queue waits 40, 60, 10 µs; handler 380, 350, 20 µs
    assert stats.queue_wait == Summary(3, 40_000, 60_000, 60_000, 60_000)
    assert stats.handler == Summary(3, 350_000, 380_000, 380_000, 380_000)
    sends = stats.stages[vocab.WS_MESSAGE_SEND]
    assert sends == Summary(9, 80_000, 80_000, 80_000, 80_000)  # 3 initial + 2 × 3 fan-out


def test_broadcast_without_a_received_message(tmp_path: Path) -> None:
    def build(exporter: OTLPJsonFileExporter) -> None:
        b = synthetic.TraceBuilder(exporter)
        conn = b.connection(1, 0, 3000)
        timer = b.start(vocab.WS_BROADCAST, 1000, conn.root)
        b.send(conn, 1010, length=10, parent=timer, link=True)
        timer.end(end_time=synthetic.us(1100))
        b.close(conn)

    stats = compute_stats(written(tmp_path, build))
    assert stats.fanout == Summary(0)
    assert stats.broadcasts_without_trigger == 1


def test_stage_order_follows_the_connection_life(tmp_path: Path) -> None:
    stats = compute_stats(written(tmp_path, synthetic.auction))
    names = list(stats.stages)
    assert names[:8] == [
        vocab.CONNECTION,
        vocab.HTTP_HEADERS_PARSE,
        vocab.HTTP_UPGRADE_DETECT,
        vocab.WS_PROTOCOL_SWITCH,
        vocab.WS_HANDSHAKE,
        vocab.WS_HANDSHAKE_VALIDATE,
        vocab.WS_HANDSHAKE_RESPONSE,
        vocab.ASGI_APP,
    ]
    assert names[8 : 8 + len(synthetic.MIDDLEWARE_CHAIN)] == list(synthetic.MIDDLEWARE_CHAIN)
    assert names[-1] == vocab.WS_CLOSE


def test_json_and_table(tmp_path: Path) -> None:
    stats = compute_stats(written(tmp_path, many_connections))
    data = json.loads(json.dumps(stats.to_json(), allow_nan=False))
    assert data["percentile_method"] == "nearest-rank" and data["unit"] == "ns"
    (parse,) = [s for s in data["stages"] if s["name"] == vocab.HTTP_HEADERS_PARSE]
    assert parse == {
        "name": vocab.HTTP_HEADERS_PARSE,
        "count": 20,
        "p50_ns": 48_000,
        "p90_ns": 120_000,
        "p99_ns": 3_000_000,
        "max_ns": 3_000_000,
    }
    assert data["fanout"]["count"] == 0 and data["fanout"]["p50_ns"] is None
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(stats_renderable(stats))
    (row,) = [line for line in out.getvalue().splitlines() if vocab.HTTP_HEADERS_PARSE in line]
    assert row.split("│")[1:] == ["    20 ", "  0.048 ", "  0.120 ", "  3.000 ", "  3.000 "]
    assert "nearest-rank" in out.getvalue()
