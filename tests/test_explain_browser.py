"""The HTML walkthrough in a real headless Chromium: it renders every step, and values a client
controls (markup, an event handler) stay text — the page's DOM after load is checked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.explain import hostile_sample
from tracer.analysis.explain import explain, to_html_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)
SAMPLE = (
    Path(__file__).resolve().parent.parent
    / "traces"
    / "samples"
    / "demo-httptools-websockets.otlp.jsonl"
)


def dump_dom(page: Path) -> str:
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={page.parent / 'profile'}",
            "--virtual-time-budget=2000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_walkthrough_page_renders_and_keeps_hostile_values_inert(tmp_path: Path) -> None:
    doc = explain(hostile_sample(SAMPLE), 2)
    page = tmp_path / "walkthrough.html"
    page.write_text(to_html_page(doc), encoding="utf-8")
    dom = dump_dom(page)
    assert dom.count("<section id=") == 13
    for step in doc.steps:
        assert f"{step.number}. " in dom
    assert "data-pwned" not in dom.split("<body")[1].split(">")[0]  # the handler never ran
    assert "<img" not in dom and "<script>" not in dom
    assert "&lt;img src=x onerror=" in dom  # shown as text
    assert "xKT2MqJcoayS+AVZ6r8LQeaCv3E=" in dom  # the recorded accept, recomputed
    assert "Sec-WebSocket-Accept" in dom
