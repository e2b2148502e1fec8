"""``wstrace show`` and ``wstrace stats`` say "incomplete" for a connection whose spans did not
all reach the file, and ``wstrace demo`` accounts for every span on exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tracer import vocab
from tracer.cli import app
from tracer.export.reader import load

SAMPLE = Path(__file__).parent.parent / "traces" / "samples" / "demo-httptools-wsproto.otlp.jsonl"
runner = CliRunner()


def _without(path: Path, out: Path, name: str, trace_id: str) -> int:
    """``path`` copied to ``out`` without the spans named ``name`` in ``trace_id``."""
    removed = 0
    lines = []
    for line in path.read_text().splitlines():
        data = json.loads(line)
        for rs in data["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                kept = [
                    s for s in ss["spans"] if not (s["name"] == name and s["traceId"] == trace_id)
                ]
                removed += len(ss["spans"]) - len(kept)
                ss["spans"] = kept
        lines.append(json.dumps(data))
    out.write_text("\n".join(lines) + "\n")
    return removed


def _with_marker(out: Path, trace_id: str, lost: int) -> None:
    """A loss marker as the export pipeline writes it, through the real file exporter."""
    from opentelemetry.sdk.resources import Resource

    from tracer.export.accounting import DroppedTrace, loss_marker
    from tracer.export.otlp_file import OTLPJsonFileExporter

    class Carrier:  # what DroppedTrace reads from the first span it drops
        resource = Resource.create({"service.name": "demo"})
        instrumentation_scope = None

    dropping = DroppedTrace("buffer_full", Carrier())  # type: ignore[arg-type]
    exporter = OTLPJsonFileExporter(out)
    exporter.export([loss_marker(int(trace_id, 16), dropping, lost)])
    exporter.shutdown()


def test_show_and_stats_say_incomplete_for_a_connection_with_lost_spans(tmp_path: Path) -> None:
    whole = load([SAMPLE])
    conn = whole.connections[1]
    trace_id = conn.root.trace_id
    out = tmp_path / "partial.otlp.jsonl"
    removed = _without(SAMPLE, out, vocab.WS_MESSAGE_RECEIVE, trace_id)
    assert removed > 0
    _with_marker(out, trace_id, removed)

    shown = runner.invoke(app, ["show", str(out), "--connection", "2"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "incomplete:" in shown.stdout and f"{removed} spans lost" in shown.stdout
    assert "without their parent" in shown.stdout  # the frames the messages held
    assert vocab.LOSS_MARKER not in shown.stdout

    other = runner.invoke(app, ["show", str(out), "--connection", "1"], env={"COLUMNS": "200"})
    assert "incomplete" not in other.stdout  # the others are whole

    stats = runner.invoke(app, ["stats", str(out), "--json"])
    figures = json.loads(stats.stdout)
    assert figures["incomplete_connections"] == 1 and figures["lost_spans"] == removed
    table = runner.invoke(app, ["stats", str(out)], env={"COLUMNS": "200"})
    assert f"1 of {len(whole.connections)} connections" in table.stdout


def test_demo_prints_what_every_output_wrote_and_lost(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracer.cli",
            "demo",
            "--clients",
            "2",
            "--bids",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "300", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("*.otlp.jsonl")
    spans = len(load([path]).spans)
    assert f"file {path}: {spans} spans written, 0 dropped, 0 failed" in result.stdout
