"""``wstrace explain`` on real traces: the demo app and a minimal room app, on every pair of
uvicorn's HTTP parsers and WebSocket implementations, served by a real uvicorn and driven by
real clients (the ``websockets`` client for the demo, raw sockets for the room app, so the exact
bytes of the handshake and the first frame are known)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.support.explain import BID, MASK, assert_points_into_def, room_session
from tests.support.raw import KEY_EXAMPLE
from tests.support.server import IMPL_PAIRS
from tracer import vocab
from tracer.analysis.explain import (
    Document,
    explain,
    markdown_outline,
    to_html_page,
    to_markdown,
)
from tracer.analysis.explain.model import Para, Table
from tracer.analysis.explain.reading import Spans, first_data_frame, stack_event, stack_refs
from tracer.export.reader import load
from tracer.walkthrough import record

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STEP_KEYS = [
    "connection",
    "parse",
    "upgrade",
    "switch",
    "handshake",
    "asgi",
    "middleware",
    "route",
    "accept",
    "first-frame",
    "message",
    "broadcast",
    "close",
]
pair_ids = [f"{http}-{ws}" for http, ws in IMPL_PAIRS]


def facts(step, label: str) -> str:  # type: ignore[no-untyped-def]
    for block in step.blocks:
        if isinstance(block, Table) and block.headers == ["field", "value"]:
            for row in block.rows:
                if row[0] == label:
                    return row[1].text
    raise KeyError(label)


def table_values(step, first_header: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    table = next(b for b in step.blocks if isinstance(b, Table) and b.headers[0] == first_header)
    return {row[1]: row[2].text for row in table.rows}


def check_every_step(doc: Document) -> None:
    assert [s.key for s in doc.steps] == STEP_KEYS
    assert [s.number for s in doc.steps] == list(range(1, 14))
    missing = {s.key: s.missing for s in doc.steps if s.missing}
    assert not missing
    for step in doc.steps:
        assert step.code, f"step {step.key} names no code"
        for ref in step.code:
            assert_points_into_def(ref)


CLASSIC_STACK = [  # the classic walkthrough's table, innermost first, as today's names
    "WebSocket.send",
    "WebSocket.accept",
    "ConnectionManager.connect",
    "<endpoint>",
    "WebSocketRoute.handle",
    "Router.__call__",
    "AsyncExitStackMiddleware.__call__",
    "ExceptionMiddleware.__call__",
    "ServerErrorMiddleware.__call__",
    "Starlette.__call__",
    "FastAPI.__call__",
    "ProxyHeadersMiddleware.__call__",
]


def is_subsequence(wanted: list[str], names: list[str]) -> bool:
    found = iter(names)
    return all(any(name == want for name in found) for want in wanted)


def check_stack(doc: Document, traces, endpoint: str) -> list[str]:  # type: ignore[no-untyped-def]
    spans = Spans(traces, traces.connection(1))
    refs = stack_refs(stack_event(spans.first(vocab.WS_ACCEPT)))
    for ref in refs:
        assert_points_into_def(ref)
    names = [ref.qualname for ref in refs]
    inner = names.index("WebSocket.accept")
    assert names[inner + 1] == "ConnectionManager.connect"
    assert names[inner + 2] == endpoint
    assert names.index("Router.__call__") > inner + 2
    assert any(n.endswith(".run_asgi") for n in names[inner + 2 :])
    classic = [endpoint if n == "<endpoint>" else n for n in CLASSIC_STACK]
    assert is_subsequence(classic, names), names
    rows = next(b for b in doc.step("accept").blocks if isinstance(b, Table)).rows
    assert [row[1].text for row in rows] == names
    return names


def check_accept(doc: Document, traces) -> str:  # type: ignore[no-untyped-def]
    spans = Spans(traces, traces.connection(1))
    key = spans.first(vocab.WS_HANDSHAKE).attributes[vocab.WS_KEY]
    sent = spans.first(vocab.WS_HANDSHAKE_RESPONSE).attributes[vocab.WS_ACCEPT_KEY]
    want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    assert sent == want
    values = list(table_values(doc.step("handshake"), "#").values())
    assert values[0] == key
    assert values[4].replace(" ", "") == hashlib.sha1((key + GUID).encode()).hexdigest()
    assert values[5] == values[6] == want and values[7] == "yes"
    return key


def check_frame_bits(doc: Document, traces, header: bytes | None = None) -> None:  # type: ignore[no-untyped-def]
    """The bits shown are those of the recorded frame (and of the bytes sent, when known)."""
    frame = first_data_frame(Spans(traces, traces.connection(1)))
    a = frame.attributes
    step = doc.step("first-frame")
    byte0 = table_values(step, "bits of byte 0")
    byte1 = table_values(step, "bits of byte 1")
    assert int(byte0["FIN"]) == int(a[vocab.WS_FIN])
    rsv = int(byte0["RSV1"]) << 2 | int(byte0["RSV2"]) << 1 | int(byte0["RSV3"])
    assert rsv == a[vocab.WS_RSV]
    assert int(byte0["opcode"].split("0x")[1], 16) == a[vocab.WS_OPCODE]
    assert int(byte1["MASK"]) == int(a[vocab.WS_MASK]) == 1
    length7 = int(byte1["payload length (7 bits)"].split("= ")[1])
    assert length7 == min(a[vocab.WS_PAYLOAD_LENGTH], 126)
    rest = table_values(step, "bytes")
    assert rest["masking key"].replace(" ", "") == a[vocab.WS_MASKING_KEY]
    shown = next(
        b for b in step.blocks if isinstance(b, Para) and str(b.parts[0]).startswith("The header")
    )
    rebuilt = bytes.fromhex(shown.parts[1].text)
    assert len(rebuilt) == a[vocab.WS_HEADER_LENGTH]
    assert rebuilt[0] >> 7 == int(a[vocab.WS_FIN]) and rebuilt[0] & 0x0F == a[vocab.WS_OPCODE]
    if header is not None:
        assert rebuilt == header


def check_renders(doc: Document) -> None:
    md = to_markdown(doc)
    assert markdown_outline(md) == doc.outline()
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    page = to_html_page(doc)
    assert rendered.count("<table>") >= 10  # every table survived as a table
    for step in doc.steps:
        assert f"{step.number}. {step.title}" in md
        assert f'id="{step.number}-' in page


@pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS, ids=pair_ids)
def test_demo_walkthrough(http: str, ws: str, tmp_path: Path) -> None:
    traces = load(record(http, ws, tmp_path))
    doc = explain(traces, 1)
    check_every_step(doc)
    assert (
        doc.step("route").code[-1].function == "demo_app.app.create_app.<locals>.websocket_endpoint"
    )
    check_stack(doc, traces, "create_app.<locals>.websocket_endpoint")
    check_accept(doc, traces)
    check_frame_bits(doc, traces)
    first_bid = json.dumps({"type": "bid", "bidder": "bidder-1", "amount": 11}).encode()
    masking_key = bytes.fromhex(table_values(doc.step("first-frame"), "bytes")["masking key"])
    assert facts(doc.step("first-frame"), "unmasked payload (first bytes)") == first_bid[:16].hex(
        " "
    )
    masked = bytes(b ^ masking_key[i % 4] for i, b in enumerate(first_bid[:16]))
    assert facts(doc.step("first-frame"), "masked payload on the wire (first bytes)") == masked.hex(
        " "
    )
    assert facts(doc.step("broadcast"), "recipients") == "2"
    assert facts(doc.step("close"), "code") == "1000"
    assert facts(doc.step("close"), "who closed") == "client"
    assert facts(doc.step("connection"), "HTTP parser (uvicorn --http)") == http
    check_renders(doc)


@pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS, ids=pair_ids)
def test_room_app_walkthrough(http: str, ws: str, tmp_path: Path) -> None:
    session = room_session(http, ws, tmp_path)
    traces = load(session.trace_file)
    doc = explain(traces, 1)
    check_every_step(doc)
    assert doc.step("route").code[-1].qualname == "room_app.<locals>.websocket_endpoint"
    check_stack(doc, traces, "room_app.<locals>.websocket_endpoint")
    # The key the raw client sent is RFC 6455's example: its accept is the RFC's.
    assert check_accept(doc, traces) == KEY_EXAMPLE
    accept = table_values(doc.step("handshake"), "#")["`Sec-WebSocket-Accept` the server sent"]
    assert accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    accept_line = rb"(?im)^sec-websocket-accept:[ \t]*" + re.escape(accept.encode()) + rb"\r?$"
    assert re.search(accept_line, session.response_head), session.response_head
    # The header shown is byte for byte the one the client put on the wire.
    check_frame_bits(doc, traces, header=session.first_frame[:6])
    step = doc.step("first-frame")
    assert facts(step, "masked payload on the wire (first bytes)") == session.first_frame[6:22].hex(
        " "
    )
    assert facts(step, "unmasked payload (first bytes)") == BID[:16].hex(" ")
    assert table_values(step, "bytes")["masking key"] == MASK.hex(" ")
    assert facts(doc.step("broadcast"), "recipients") == "2"
    assert facts(doc.step("close"), "code") == "1000"
    assert facts(doc.step("close"), "who closed") == "client"
    check_renders(doc)


VOLATILE = [  # what may change between two runs: times, addresses, keys, masks
    (re.compile(r"\d+(?:\.\d+)? (?:ns|µs|ms|s)\b"), "TIME"),
    (re.compile(r"127\.0\.0\.1:\d+"), "ADDRESS"),
    (re.compile(r"[0-9a-f]{2}(?: [0-9a-f]{2})+"), "BYTES"),
    (re.compile(r"`[0-9a-f]{8}`"), "`MASK`"),
    (re.compile(r"[A-Za-z0-9+/]{22}=="), "KEY"),
    (re.compile(r"[A-Za-z0-9+/]{27}="), "ACCEPT"),
    (re.compile(r"`[01]{8} \([0-9a-f]{2}\)`"), "`BITS`"),
    # A broadcast bid carries its time ("at", Unix seconds): its size may change by a digit.
    (re.compile(r"(/ws/auction/\d+` \| )`\d+`"), r"\1`SIZE`"),
]


def without_volatile(text: str) -> str:
    for pattern, placeholder in VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


def test_two_runs_differ_only_in_times_addresses_and_keys(tmp_path: Path) -> None:
    pages = [
        to_markdown(explain(load(record("httptools", "websockets-sansio", tmp_path / str(n)))))
        for n in (1, 2)
    ]
    assert pages[0] != pages[1]  # keys and times did change
    first, second = (without_volatile(page).splitlines() for page in pages)
    assert len(first) == len(second)
    assert [a for a, b in zip(first, second, strict=True) if a != b] == []
