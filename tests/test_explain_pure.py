"""The walkthrough's pure parts: the accept computation, frame bits, code lookup, escaping,
and the golden outline of a committed sample trace.  No server is started here."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.support.explain import HOSTILE, assert_points_into_def, hostile_sample
from tracer import vocab
from tracer.analysis.explain import explain, markdown_outline, prose, to_html_fragment, to_markdown
from tracer.analysis.explain.framebits import masked_payload, read_header, rebuild_header
from tracer.analysis.explain.model import Pre, Table, Val
from tracer.analysis.explain.reading import frame_header_bytes
from tracer.analysis.explain.render_md import code_span, fenced, table
from tracer.analysis.explain.source import module_of_path, resolve
from tracer.analysis.explain.steps_request import accept_rows
from tracer.export.reader import load
from tracer.wire.codes import CloseCode, Opcode, close_code_meaning

pytestmark = pytest.mark.fast

SAMPLE = Path(__file__).resolve().parent.parent / "traces" / "samples"
SAMPLE_WEBSOCKETS = SAMPLE / "demo-httptools-websockets.otlp.jsonl"


# --- The accept computation (RFC 6455 §1.3, §4.2.2) ----------------------------------------------


def test_accept_rows_work_through_the_rfc_example() -> None:
    rows = accept_rows("dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    values = [row[2].text for row in rows]
    assert values[0] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert bytes.fromhex(values[1].replace(" ", "")) == b"the sample nonce"
    assert values[3] == "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert values[4].replace(" ", "") == "b37a4f2cc0624f1690f64606cf385945b2bec4ea"
    assert values[5] == values[6] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert values[7] == "yes"


def test_accept_rows_say_no_for_a_wrong_accept() -> None:
    rows = accept_rows("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert rows[-1][2].text.startswith("NO")
    refused = accept_rows("dGhlIHNhbXBsZSBub25jZQ==", None, 403)
    assert refused[6][2].text.startswith("none: the server answered 403")
    assert refused[7][2].text.startswith("no 101")
    assert rows[1][1].endswith("(§4.1)")


# --- Frame bits (RFC 6455 §5.2, §5.7) ------------------------------------------------------------


def test_read_header_of_the_rfc_masked_hello() -> None:
    frame = bytes.fromhex("818537fa213d7f9f4d5158")  # §5.7: a masked text "Hello"
    h = read_header(frame[:6])
    assert (h.fin, h.rsv, h.opcode, h.mask, h.length7, h.payload_length) == (1, 0, 1, 1, 5, 5)
    assert h.masking_key == bytes.fromhex("37fa213d") and h.extended == b""
    assert masked_payload(b"Hello", h.masking_key) == frame[6:]
    rebuilt = rebuild_header(fin=True, rsv=0, opcode=1, masking_key=h.masking_key, payload_length=5)
    assert rebuilt == frame[:6]


@pytest.mark.parametrize(
    ("length", "length7", "extended"),
    [(125, 125, b""), (126, 126, b"\x00\x7e"), (65536, 127, b"\x00\x00\x00\x00\x00\x01\x00\x00")],
)
def test_extended_lengths(length: int, length7: int, extended: bytes) -> None:
    header = rebuild_header(fin=False, rsv=0b100, opcode=2, masking_key=None, payload_length=length)
    h = read_header(header)
    assert (h.fin, h.rsv1, h.rsv2, h.rsv3, h.opcode, h.mask) == (0, 1, 0, 0, 2, 0)
    assert (h.length7, h.extended, h.payload_length) == (length7, extended, length)
    assert len(header) == 2 + len(extended)


def test_frame_header_bytes_from_recorded_attributes() -> None:
    attrs = {
        vocab.WS_FIN: True,
        vocab.WS_RSV: 0,
        vocab.WS_OPCODE: 1,
        vocab.WS_MASK: True,
        vocab.WS_MASKING_KEY: "37fa213d",
        vocab.WS_PAYLOAD_LENGTH: 5,
    }
    assert frame_header_bytes(attrs) == bytes.fromhex("818537fa213d")
    assert frame_header_bytes({vocab.WS_FIN: True}) is None


# --- Enums ---------------------------------------------------------------------------------------


def test_close_code_meanings_shown_in_the_close_step() -> None:
    assert close_code_meaning(CloseCode.NORMAL_CLOSURE).startswith("normal closure")
    assert "never sent" in close_code_meaning(1006)
    assert "too big" in close_code_meaning(1009)
    assert "private use" in close_code_meaning(4403)
    assert "libraries" in close_code_meaning(3001)
    assert all(close_code_meaning(code) for code in CloseCode)


def test_opcode_meanings_name_every_opcode() -> None:
    for op in Opcode:
        assert "reserved" not in prose.opcode(op.wire_name)[0]
    assert "reserved" in prose.opcode("reserved-0x3")[0]


# --- Code locations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "function",
    [
        "uvicorn.protocols.http.h11_impl.H11Protocol.handle_events",
        "websockets.legacy.handshake.check_request",
        "starlette.routing.Router.__call__",
        "wsproto.handshake.H11Handshake._accept",
        "demo_app.app.create_app.<locals>.websocket_endpoint",
    ],
)
def test_resolve_finds_the_installed_def(function: str) -> None:
    ref = resolve(function, recorded_line=1)
    assert_points_into_def(ref)
    assert ref.source and ref.source[0][0] == ref.line
    assert re.match(r"^[\w.-]+ \S+", ref.package or "")


def test_resolve_a_stack_frame_keeps_the_running_line() -> None:
    ref = resolve(
        "WebSocket.accept",
        recorded_file="/elsewhere/venv/lib/python3.12/site-packages/starlette/websockets.py",
        recorded_line=None,
        in_body=True,
    )
    assert ref.module == "starlette.websockets" and ref.path == "starlette/websockets.py"
    assert ref.line is not None and ref.def_line is not None
    inside = ref.def_line + 1
    ref2 = resolve(
        "WebSocket.accept",
        recorded_file="/x/site-packages/starlette/websockets.py",
        recorded_line=inside,
        in_body=True,
    )
    assert ref2.line == inside
    assert_points_into_def(ref2)


def test_unknown_functions_say_so() -> None:
    assert resolve("no_such_package.mod.f").problem == "not found among the installed packages"
    missing = resolve("starlette.routing.NoSuchClass.method")
    assert missing.problem and "no def" in missing.problem
    assert module_of_path("/tmp/not-python.txt") is None


# --- Escaping untrusted values -------------------------------------------------------------------


def test_markdown_code_span_is_inert() -> None:
    span = code_span(HOSTILE, in_table=True)
    assert "\n" not in span and "\x1b" not in span and "\u202e" not in span
    assert span.startswith("```") and span.endswith("```")  # longer than the `` inside
    assert "\\|" in span and "|" not in span.replace("\\|", "")
    row = table(Table(["a", "b"], [["k", Val(HOSTILE)]]))[2]
    assert row.count("|") - row.count("\\|") == 3  # one row, two cells: the table holds


def test_markdown_fence_outgrows_the_content() -> None:
    lines = fenced(["GET / HTTP/1.1", "X: ```` end"])
    assert lines[0] == "`````" and lines[-1] == "`````"


def test_hostile_values_stay_text_in_markdown_and_html() -> None:
    doc = explain(hostile_sample(SAMPLE_WEBSOCKETS), 2)
    md = to_markdown(doc)
    # Rendered by a CommonMark renderer (the one Rich uses), with tables as on GitHub: the
    # value is text in code, never an element, and no table row is split by its pipes.
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert "<script>" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    assert "\x1b" not in md and "\\x1b" in md  # the escape is shown, not sent
    request = next(b for b in doc.step("connection").blocks if isinstance(b, Pre))
    assert any(HOSTILE.splitlines()[0] in line for line in request.lines)
    fragment = to_html_fragment(doc)
    assert "<script>" not in fragment
    assert html.escape("<script>alert(1)</script>") in fragment
    assert "\x1b" not in fragment and "\u202e" not in fragment


# --- The golden outline --------------------------------------------------------------------------

GOLDEN_OUTLINE = [
    "# A WebSocket connection, step by step (httptools + websockets)",
    "## 1. The TCP connection and the HTTP request",
    "where: uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.connection_made",
    "## 2. Parsing the request head",
    "where: uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.on_headers_complete",
    "## 3. Detecting the upgrade",
    "where: uvicorn.protocols.http.httptools_impl.HttpToolsProtocol._should_upgrade",
    "## 4. Switching protocols",
    "where: uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.handle_websocket_upgrade",
    "## 5. The opening handshake: Sec-WebSocket-Key → Sec-WebSocket-Accept",
    "where: websockets.legacy.server.WebSocketServerProtocol.handshake",
    "where: websockets.legacy.handshake.check_request",
    "where: websockets.legacy.server.WebSocketServerProtocol.write_http_response",
    "## 6. The ASGI application starts",
    "where: uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.run_asgi",
    "## 7. The middleware chain",
    "where: uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware.__call__",
    "where: fastapi.applications.FastAPI.__call__",
    "where: starlette.applications.Starlette.__call__",
    "where: starlette.middleware.errors.ServerErrorMiddleware.__call__",
    "where: fastapi.telemetry._asgi.ExceptionTelemetryMiddleware.__call__",
    "where: fastapi._body_limit.AppBodyLimitMiddleware.__call__",
    "where: starlette.middleware.cors.CORSMiddleware.__call__",
    "where: starlette.middleware.exceptions.ExceptionMiddleware.__call__",
    "where: fastapi.middleware.asyncexitstack.AsyncExitStackMiddleware.__call__",
    "## 8. The route and the endpoint",
    "where: starlette.routing.Router.__call__",
    "where: starlette.routing.WebSocketRoute.handle",
    "where: fastapi.dependencies.utils.solve_dependencies",
    "where: demo_app.app.create_app.<locals>.websocket_endpoint",
    "## 9. accept() and the stack at that moment",
    "where: uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.asgi_send",
    "where: websockets.legacy.server.WebSocketServerProtocol.write_http_response",
    "## 10. The first frame received, bit by bit",
    "where: websockets.legacy.protocol.WebSocketCommonProtocol.data_received",
    "## 11. The message delivered to the app",
    "where: uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.asgi_receive",
    "## 12. The broadcast and its recipients",
    "where: uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.asgi_send",
    "## 13. The closing handshake",
    "where: uvicorn.protocols.websockets.websockets_impl.WebSocketProtocol.connection_lost",
]


def test_golden_outline_of_the_committed_sample() -> None:
    """The function names come from the trace, so this outline is fixed for the file."""
    doc = explain(load(SAMPLE_WEBSOCKETS), 2)
    assert doc.outline() == GOLDEN_OUTLINE
    assert markdown_outline(to_markdown(doc)) == GOLDEN_OUTLINE
    assert all(step.missing is None for step in doc.steps)


def test_the_sample_accept_is_recomputed() -> None:
    doc = explain(load(SAMPLE_WEBSOCKETS), 2)
    table_ = next(
        b for b in doc.step("handshake").blocks if isinstance(b, Table) and len(b.headers) == 3
    )
    key = table_.rows[0][2].text
    want = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()
    assert table_.rows[5][2].text == table_.rows[6][2].text == want
