"""``wstrace explain`` as a command: formats, output file, the scenario run, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tracer.analysis.explain import markdown_outline
from tracer.cli import app

runner = CliRunner()
SAMPLE = (
    Path(__file__).resolve().parent.parent
    / "traces"
    / "samples"
    / "demo-httptools-wsproto.otlp.jsonl"
)


def test_markdown_to_stdout_from_a_file() -> None:
    result = runner.invoke(app, ["explain", str(SAMPLE), "--connection", "3"])
    assert result.exit_code == 0, result.output
    outline = markdown_outline(result.stdout)
    assert outline[0] == "# A WebSocket connection, step by step (httptools + wsproto)"
    assert sum(line.startswith("## ") for line in outline) == 13
    assert "where: wsproto.handshake.H11Handshake._accept" in outline


def test_html_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "walkthrough.html"
    result = runner.invoke(app, ["explain", str(SAMPLE), "-f", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "Content-Security-Policy" in page
    assert page.count("<section id=") == 13
    assert f"wrote {out}" in result.stderr


def test_unknown_connection_is_one_line_error() -> None:
    result = runner.invoke(app, ["explain", str(SAMPLE), "--connection", "99"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "wstrace: error: no connection 99: the trace has 6 (use --connection 1..6)"
    ]


def test_compare_takes_no_file() -> None:
    result = runner.invoke(app, ["explain", str(SAMPLE), "--compare"])
    assert result.exit_code == 2
    assert "--compare runs the scenario itself" in result.output


def test_without_a_file_it_runs_the_scenario(tmp_path: Path) -> None:
    """The real command in its own process: a traced server, real clients, then the page."""
    out = tmp_path / "w.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracer.cli",
            "explain",
            "--http",
            "h11",
            "--ws",
            "wsproto",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert "(h11 + wsproto)" in text.splitlines()[0]
    assert "unmasked payload (first bytes)" in text  # payload capture is on for this run
    assert "| 6 | do they match? (the client checks this, §4.1) | `yes` |" in text
