"""``wstrace show`` / ``stats`` / ``export``: output, and one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.golden import synthetic
from tracer import vocab
from tracer.cli import app
from tracer.export.otlp_file import OTLPJsonFileExporter

runner = CliRunner()


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.otlp.jsonl"
    exporter = OTLPJsonFileExporter(path)
    synthetic.auction(exporter, shape=vocab.SHAPE_MESSAGE)
    exporter.shutdown()
    return path


def one_line_error(args: list[str], code: int = 1) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wstrace: error: ")
    return lines[0]


def test_show(trace_file: Path) -> None:
    result = runner.invoke(app, ["show", str(trace_file), "--connection", "3", "--stack"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("conn 3 127.0.0.1:50523 /ws/auction/1")
    assert "code=1006" in out and "by none" in out
    assert "handshake stack on ws.accept (outermost first)" in out
    assert "asgi_send" in out


def test_show_trace_by_prefix_depth_and_no_frames(trace_file: Path) -> None:
    from tracer.export.reader import load

    traces = load(trace_file)
    (linked,) = traces.connection(2).linked_roots
    result = runner.invoke(
        app, ["show", str(trace_file), "-t", linked.trace_id, "-d", "1", "--no-frames"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"trace {linked.trace_id}")
    assert "ws.broadcast" in result.stdout and "ws.message.send" not in result.stdout
    assert "below depth 1 not shown" in result.stdout
    assert "frames hidden; drop --no-frames" in result.stdout


def test_show_reads_traces_directory_by_default(
    trace_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(trace_file.parent)
    (trace_file.parent / "traces").mkdir()
    trace_file.rename(trace_file.parent / "traces" / trace_file.name)
    result = runner.invoke(app, ["show"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("conn 1 ")


def test_stats_table_and_json(trace_file: Path) -> None:
    result = runner.invoke(app, ["stats", str(trace_file)])
    assert result.exit_code == 0, result.output
    assert "nearest-rank" in result.stdout
    assert "fan-out per broadcast │     2 │  0.370 │" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    result = runner.invoke(app, ["stats", str(trace_file), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["fanout"]["count"] == 2 and data["fanout"]["p50_ns"] == 370_000
    assert data["connections"] == 3


def test_export_perfetto(trace_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["export", str(trace_file), "--format", "perfetto", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "open it at https://ui.perfetto.dev" in result.stderr
    data = json.loads(out.read_text())
    assert data["displayTimeUnit"] == "ms"
    assert any(e["ph"] == "X" and e["name"] == vocab.CONNECTION for e in data["traceEvents"])
    result = runner.invoke(app, ["export", str(trace_file), "-o", "-"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == data


# --- errors: one line on stderr, what and what to do; 1 for bad input, 2 for usage -------


def test_missing_file(tmp_path: Path) -> None:
    line = one_line_error(["show", str(tmp_path / "gone.otlp.jsonl")])
    assert "gone.otlp.jsonl: no such file; pass a *.otlp.jsonl file" in line


def test_no_traces_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "traces: no such file" in one_line_error(["stats"])


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.otlp.jsonl"
    path.write_text("")
    assert "empty.otlp.jsonl: file is empty" in one_line_error(["stats", str(path)])


def test_non_json_file(tmp_path: Path, trace_file: Path) -> None:
    path = tmp_path / "bad.otlp.jsonl"
    path.write_text(trace_file.read_text().splitlines()[0] + "\nnot json at all\n")
    line = one_line_error(["export", str(path), "-o", str(tmp_path / "x.json")])
    assert "bad.otlp.jsonl:2: not JSON (" in line
    assert not (tmp_path / "x.json").exists()


def test_json_that_is_not_otlp(tmp_path: Path) -> None:
    path = tmp_path / "package.json"
    path.write_text('{"name": "left-pad", "version": "1.3.0"}\n')
    line = one_line_error(["show", str(path)])
    assert 'package.json:1: JSON but not OTLP trace data (no "resourceSpans" key)' in line


def test_file_without_spans(tmp_path: Path) -> None:
    path = tmp_path / "none.otlp.jsonl"
    path.write_text('{"resourceSpans": []}\n')
    assert "no spans in the file(s)" in one_line_error(["show", str(path)])


def test_unknown_connection(trace_file: Path) -> None:
    line = one_line_error(["show", str(trace_file), "--connection", "7"])
    assert line.endswith("no connection 7: the trace has 3 (use --connection 1..3)")


def test_unknown_trace(trace_file: Path) -> None:
    line = one_line_error(["show", str(trace_file), "--trace", "deadbeef"])
    assert "no trace 'deadbeef' in the file (traces: " in line


def test_unwritable_output(trace_file: Path, tmp_path: Path) -> None:
    line = one_line_error(["export", str(trace_file), "-o", str(tmp_path / "no" / "dir.json")])
    assert "cannot write" in line and "choose another path with -o" in line


@pytest.mark.parametrize(
    "args",
    [
        ["show", "--connection", "0"],
        ["show", "--connection", "1", "--trace", "abcd"],
        ["export", "--format", "svg"],
        ["show", "--depth", "-1"],
    ],
)
def test_usage_errors_exit_2(args: list[str], trace_file: Path) -> None:
    result = runner.invoke(app, [*args, str(trace_file)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_installed_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    """The real console script, as a user runs it."""
    path = tmp_path / "broken.otlp.jsonl"
    path.write_text("{oops\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from tracer.cli import main; main()", "show", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"wstrace: error: {path}:1: not JSON (")
    assert "Traceback" not in proc.stderr


def test_deep_nesting_from_a_crafted_file(tmp_path: Path) -> None:
    """1200 nested spans: every command finishes, without a recursion error."""
    spans = [
        {
            "traceId": "cd" * 16,
            "spanId": f"{i + 1:016x}",
            **({"parentSpanId": f"{i:016x}"} if i else {}),
            "name": vocab.CONNECTION if i == 0 else f"level {i}",
            "startTimeUnixNano": str(1_000_000 + i),
            "endTimeUnixNano": str(9_000_000 - i),
        }
        for i in range(1200)
    ]
    path = tmp_path / "deep.otlp.jsonl"
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}) + "\n")
    result = runner.invoke(app, ["show", str(path), "--depth", "200"])
    assert result.exit_code == 0, result.output
    assert "level 200" in result.stdout and "level 201" not in result.stdout
    assert "999 spans/events below depth 200 not shown" in result.stdout
    assert runner.invoke(app, ["show", str(path), "--depth", "201"]).exit_code == 2
    assert runner.invoke(app, ["stats", str(path), "--json"]).exit_code == 0
    result = runner.invoke(app, ["export", str(path), "-o", str(tmp_path / "deep.json")])
    assert result.exit_code == 0, result.output
