"""The terminal tree: content, timing bars, depth/frame elision, and escaping of recorded text."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console, RenderableType

from tests.golden import synthetic
from tracer import vocab
from tracer.analysis.escape import neutralise, safe_markup
from tracer.analysis.tree import (
    TreeOptions,
    bar,
    connection_tree,
    handshake_stack,
    marker,
    trace_tree,
)
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.reader import load
from tracer.export.traceset import TraceSet

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

NASTY = "\x1b[31mred[bold]x\x07\r\u202eevil\x9b2J[/]"


def render(renderable: RenderableType, *, color: bool = False) -> str:
    out = io.StringIO()
    console = Console(
        file=out,
        width=400,
        color_system="truecolor" if color else None,
        force_terminal=color,
        highlight=False,
    )
    console.print(renderable)
    return out.getvalue()


def auction_traces(tmp_path: Path, **kw: Any) -> TraceSet:
    path = tmp_path / "t.otlp.jsonl"
    exporter = OTLPJsonFileExporter(path)
    synthetic.auction(exporter, **kw)
    exporter.shutdown()
    return load(path)


def line_of(text: str, needle: str) -> str:
    (line,) = [line for line in text.splitlines() if needle in line]
    return line


def test_bar_and_marker() -> None:
    assert bar(0, 100, 0, 100, 10) == "██████████"
    assert bar(0, 10, 0, 100, 10) == "█·········"
    assert bar(50, 100, 0, 100, 10) == "·····█████"
    assert bar(41, 42, 0, 100, 10) == "····█·····"  # 1 % of the axis still gets a cell
    assert bar(100, 100, 0, 100, 10) == "·········█"
    assert marker(55, 0, 100, 10) == "·····◆····"


def test_connection_tree_content(tmp_path: Path) -> None:
    traces = auction_traces(tmp_path)
    text = render(connection_tree(traces, traces.connection(1)))
    lines = text.splitlines()
    assert lines[0].startswith("conn 1 127.0.0.1:50521 /ws/auction/1  5.000 ms")
    root = line_of(text, "ws.connection")
    assert "5.000 ms" in root and "█" * 24 in root
    assert "127.0.0.1:50521 → :8000 /ws/auction/1  httptools + websockets  id=1" in root
    parse = line_of(text, "http.headers.parse")
    # 30 µs at 10 µs into a 5 ms connection: first cell; file shortened after site-packages/
    assert "30.0 µs  █···" in parse
    assert "uvicorn/protocols/http/httptools_impl.py:250" in parse
    assert "site-packages" not in text
    assert "101  accept=s3pPLMBiTxaQ9kYGzzhZRbK+xOo=  ✓ valid" in text
    assert "key=dGhlIHNhbXBsZSBub25jZQ1=  version=13" in text
    assert "route=/ws/auction/{auction_id}" in text
    message = line_of(text, "ws.message.receive")
    assert "text  24 B  1 frame  queue 40.0 µs  handler 380.0 µs" in message
    assert "FIN=1 text MASK=1 len=24" in text
    assert "→ 3 recipients" in text
    assert "→ conn 3 127.0.0.1:50523 /ws/auction/1" in text
    close = line_of(text, "ws.close")
    assert 'code=1000  reason="bye"  by client' in close
    assert close.split("45.0 µs  ")[1].startswith("·" * 23 + "█")  # at the very end
    assert "FIN=1 close MASK=1 len=5" in text
    assert "◆ wstrace.handshake.stack" in text and "12 Python frames" in text
    # Columns after the names line up: every span's bar starts at the same column.
    bars = [re.search("[·█◆]{24}", line) for line in lines[1:]]
    assert all(bars)
    assert len({m.start() for m in bars if m and "◆" not in m.group()}) == 1
    assert "…" not in text  # nothing elided at the default depth


def test_frames_as_events(tmp_path: Path) -> None:
    traces = auction_traces(tmp_path, frames=vocab.FRAMES_EVENTS)
    text = render(connection_tree(traces, traces.connection(2)))
    frames = [line for line in text.splitlines() if "◆ ws.frame.receive" in line]
    # three frames of bid 2, then the close frame
    assert len(frames) == 4
    assert "@+1.800 ms" in frames[0] and "FIN=0 text MASK=1 len=10" in frames[0]
    assert "FIN=1 continuation MASK=1 len=10" in frames[2]


def test_depth_limit_and_frame_filter_say_what_they_hide(tmp_path: Path) -> None:
    traces = auction_traces(tmp_path)
    conn = traces.connection(1)
    text = render(connection_tree(traces, conn, TreeOptions(depth=2)))
    # Hidden below depth 2: FastAPI … endpoint (9 spans), ws.accept, its stack event (11);
    # the broadcast's 3 sends and their 3 frames (6).
    assert "… 17 spans/events below depth 2 not shown (3 of them frames); raise --depth" in text
    assert "FastAPI" not in text and "ProxyHeadersMiddleware" in text
    text = render(connection_tree(traces, conn, TreeOptions(frames=False)))
    assert "ws.frame" not in text
    # initial send 1, bid 1 + broadcast 1 + 3, close 2
    assert "… 7 frames hidden; drop --no-frames to see them" in text


def test_message_shape_trace_and_its_connection(tmp_path: Path) -> None:
    traces = auction_traces(tmp_path, shape=vocab.SHAPE_MESSAGE)
    conn = traces.connection(1)
    text = render(connection_tree(traces, conn))
    assert "↪ linked trace" in line_of(text, "ws.message.receive")
    (linked,) = conn.linked_roots
    text = render(trace_tree(traces, linked.trace_id))
    assert text.splitlines()[0].startswith(f"trace {linked.trace_id}  450.0 µs  9 spans")
    assert "(part of conn 1 127.0.0.1:50521 /ws/auction/1; --connection 1)" in text
    assert line_of(text, "ws.message.receive").split("450.0 µs  ")[1].startswith("█" * 24)


def test_handshake_stack_table(tmp_path: Path) -> None:
    traces = auction_traces(tmp_path)
    text = render(handshake_stack(traces, traces.connection(1).spans))
    rows = [line for line in text.splitlines() if "│" in line]
    assert len(rows) == 12
    assert (
        "run_asgi" in rows[0] and "uvicorn/protocols/websockets/websockets_impl.py:243" in rows[0]
    )
    assert "websocket_endpoint" in rows[9] and "/srv/demo_app/main.py:58" in rows[9]
    assert "asgi_send" in rows[11]
    none = render(handshake_stack(traces, [traces.connection(1).root]))
    assert "no handshake stack recorded" in none


# --- recorded strings are untrusted -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain", "plain"),
        ("\x1b[31m", "\\x1b[31m"),
        ("a\rb\x07\x00", "a\\x0db\\x07\\x00"),
        ("\x9b", "\\x9b"),  # C1 CSI
        ("\u202eabc\u2066", "\\u202eabc\\u2066"),  # bidi override / isolate
        ("line\u2028sep", "line\\u2028sep"),
        ("\ud800", "\\ud800"),  # lone surrogate
        ("día ✓ 日本", "día ✓ 日本"),
    ],
)
def test_neutralise(raw: str, shown: str) -> None:
    assert neutralise(raw) == shown


def test_safe_markup_is_inert() -> None:
    assert render(safe_markup("[bold]x[/bold] [link=http://e]y")).strip() == (
        "[bold]x[/bold] [link=http://e]y"
    )


@pytest.mark.parametrize("color", [False, True])
def test_hostile_strings_are_shown_not_executed(tmp_path: Path, color: bool) -> None:
    path = tmp_path / "hostile.otlp.jsonl"
    exporter = OTLPJsonFileExporter(path)
    builder = synthetic.TraceBuilder(exporter)
    conn = builder.connection(1, 0, 1000, path="/ws/[bold]" + NASTY)
    builder.close(conn, reason=NASTY)
    exporter.shutdown()
    traces = load(path)
    conn_view = traces.connection(1)
    text = render(connection_tree(traces, conn_view), color=color)
    text += render(handshake_stack(traces, conn_view.spans), color=color)
    visible = "\\x1b[31mred[bold]x\\x07\\x0d\\u202eevil\\x9b2J[/]"
    assert f'reason="{visible}"' in text
    assert f"/ws/[bold]{visible}" in text  # the path in the header and on the root line
    assert "\x07" not in text and "\r" not in text and "\u202e" not in text
    assert "\x9b" not in text
    if color:
        assert "\x1b[31mred" not in text  # Rich's own styling is there, the data's is not
    else:
        assert "\x1b" not in text


def test_narrow_terminal_keeps_durations_with_their_units() -> None:
    """At 80 columns the name column shrinks so that shallow rows keep duration and bar."""
    import io
    import re
    from pathlib import Path

    from rich.console import Console

    from tracer.analysis.tree import connection_tree
    from tracer.export.reader import load

    sample = Path(__file__).resolve().parent.parent / "traces/samples"
    traces = load([sample / "demo-httptools-websockets-sansio.otlp.jsonl"])
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(
        connection_tree(traces, traces.connection(2))
    )
    lines = out.getvalue().splitlines()
    for stage in ("ws.handshake", "ws.protocol.switch", "ws.message.receive", "ws.close"):
        (line,) = [ln for ln in lines if re.search(rf"── {re.escape(stage)}\s", ln)][:1]
        assert re.search(r"\d (ms|µs|ns|s)\s+[█·]", line), line
        assert len(line) <= 80
