"""Trace files that attack the viewer: hostile strings, and records with spans missing.

A trace file is untrusted input: whoever can reach the server writes its paths, headers,
subprotocols and close reasons, and anyone can hand over a crafted file.  This builds one OTLP
JSON line by hand (as any tool could), with markup, script end tags, ``javascript:`` URLs,
control characters and bidi overrides in the places the viewer shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tracer import vocab

PWNED = "window.__pwned=1,alert(1)"
PAYLOADS = {
    "path": f"/ws/<script>{PWNED}</script>\x1b[31m",
    "header": f'<img src=x onerror="{PWNED}">\x00\x08',
    "subprotocol": f"javascript:{PWNED}//</script><!--\x7f",
    "reason": "bye\x07\x1b[2J\u202e</script>\r\n",
    "function": f"<svg onload={PWNED}>\u2028",
    "span": f"</script><script>{PWNED}</script>",
}
T0 = 1_700_000_000_000_000_000
TRACE = "7" * 32


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": value}


def _attrs(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in attrs.items()]


def _span(
    n: int,
    name: str,
    parent: int | None,
    start_us: int,
    end_us: int,
    attrs: dict[str, Any],
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": f"{n:016x}",
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(T0 + start_us * 1000),
        "endTimeUnixNano": str(T0 + end_us * 1000),
        "attributes": _attrs(attrs),
        "events": events or [],
        "status": {},
    }
    if parent is not None:
        span["parentSpanId"] = f"{parent:016x}"
    return span


def write_hostile_trace(path: Path) -> Path:
    """One connection: handshake with hostile headers, accept with a hostile stack, close."""
    p = PAYLOADS
    stack = {
        "name": vocab.EVENT_HANDSHAKE_STACK,
        "timeUnixNano": str(T0 + 300_000),
        "attributes": _attrs(
            {
                vocab.STACK_FUNCTIONS: ["Handle._run", p["function"]],
                vocab.STACK_FILES: ["/usr/lib/python3.11/asyncio/events.py", p["path"]],
                vocab.STACK_LINES: [80, 1],
            }
        ),
    }
    close_frame = {
        vocab.WS_FIN: True,
        vocab.WS_OPCODE: 8,
        vocab.WS_OPCODE_NAME: "close",
        vocab.WS_MASK: True,
        vocab.WS_PAYLOAD_LENGTH: 2 + len(p["reason"].encode()),
        vocab.WS_MASKING_KEY: "01020304",
        vocab.WS_CLOSE_CODE: 4000,
        vocab.WS_CLOSE_REASON: p["reason"],
    }
    spans = [
        _span(
            1,
            vocab.CONNECTION,
            None,
            0,
            1000,
            {
                vocab.CLIENT_ADDRESS: "127.0.0.1",
                vocab.CLIENT_PORT: 5555,
                vocab.URL_PATH: p["path"],
                vocab.IMPL_HTTP: "h11",
                vocab.IMPL_WS: "wsproto",
                vocab.CONNECTION_ID: 1,
                vocab.HTTP_RESPONSE_STATUS_CODE: 101,
            },
        ),
        _span(
            2,
            vocab.WS_HANDSHAKE,
            1,
            10,
            200,
            {
                vocab.URL_PATH: p["path"],
                vocab.HTTP_REQUEST_HEADER_PREFIX + "user-agent": [p["header"]],
                vocab.HTTP_REQUEST_HEADER_PREFIX + "sec-websocket-protocol": [p["subprotocol"]],
                vocab.WS_SUBPROTOCOL: p["subprotocol"],
            },
        ),
        _span(3, vocab.ASGI_APP, 1, 200, 900, {}),
        _span(4, p["span"], 3, 210, 890, {vocab.MIDDLEWARE_LAYER: p["span"]}),
        _span(5, vocab.WS_ACCEPT, 4, 290, 320, {}, [stack]),
        _span(
            6,
            vocab.WS_CLOSE,
            1,
            900,
            1000,
            {
                vocab.WS_CLOSE_CODE: 4000,
                vocab.WS_CLOSE_REASON: p["reason"],
                vocab.WS_CLOSE_INITIATOR: "client",
            },
        ),
        _span(7, vocab.WS_FRAME_RECEIVE, 6, 905, 910, close_frame),
    ]
    request = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}
    path.write_text(json.dumps(request) + "\n", encoding="utf-8")
    return path


def drop_spans(source: Path, target: Path, name: str) -> Path:
    """Copy an OTLP JSON Lines file without the spans called ``name`` (a lossy record)."""
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        for rs in data["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                ss["spans"] = [s for s in ss["spans"] if s["name"] != name]
        lines.append(json.dumps(data))
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target
