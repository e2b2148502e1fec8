"""Run the traced scenario and explain it: what ``wstrace explain`` and ``make course`` do.

This module sits with the entry points: it drives the writing side (a traced server running
the demo scenario, :mod:`tracer.demo`) and hands the trace file to the reading side
(:mod:`tracer.analysis.explain`), which never imports the server or the SDK itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from tracer.analysis.explain import Document, Run, compare, explain
from tracer.demo import Script, run_demo
from tracer.export.reader import load

SCRIPT = Script(clients=2, bids=2, compression=None)
"""Small and quick: two bidders (so a bid is broadcast), two bids.  No permessage-deflate, so
the first frame's payload reads as text once unmasked."""
CAPTURE_PAYLOAD = 64
"""Payload bytes kept per frame, so the frame step can show masked and unmasked bytes."""
WS_IMPLS = ("websockets", "websockets-sansio", "wsproto")
COMPARE_WS_HTTP = "httptools"
COMPARE_HTTP_WS = "websockets-sansio"


def http_impls() -> tuple[str, ...]:
    """uvicorn's HTTP parsers that are installed (zttp is optional)."""
    import importlib.util

    return tuple(
        name for name in ("httptools", "h11", "zttp") if importlib.util.find_spec(name) is not None
    )


def record(http: str, ws: str, out_dir: Path, step: Callable[[str], None] = lambda _: None) -> Path:
    """Run the scenario on ``http`` × ``ws`` with payload capture; the trace file written."""
    path, _ = run_demo(
        http=http,
        ws=ws,
        script=SCRIPT,
        shape="connection",
        frames="spans",
        out_dir=out_dir,
        step=step,
        capture_payload=CAPTURE_PAYLOAD,
    )
    return path


def scenario_document(http: str, ws: str, connection: int = 1) -> Document:
    with tempfile.TemporaryDirectory() as tmp:
        return explain(load(record(http, ws, Path(tmp))), connection)


def compare_document() -> Document:
    """The scenario on each WebSocket implementation and on each HTTP parser, compared."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ws_runs = [Run(ws, load(record(COMPARE_WS_HTTP, ws, base / f"ws-{ws}"))) for ws in WS_IMPLS]
        http_runs = []
        for http in http_impls():
            existing = next(
                (r for r in ws_runs if http == COMPARE_WS_HTTP and r.label == COMPARE_HTTP_WS),
                None,
            )
            traces = (
                existing.traces
                if existing
                else load(record(http, COMPARE_HTTP_WS, base / f"http-{http}"))
            )
            http_runs.append(Run(http, traces))
        return compare(ws_runs, http_runs)
