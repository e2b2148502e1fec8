"""Build the walkthrough of one connection from a loaded trace.

One function per step, in the order a connection lives through them.  Each reads the spans of
its stage (the span names and attributes of :mod:`tracer.vocab`), looks its code up in the
installed packages (:mod:`.source`) and says what the specification says.  A stage missing from
the trace (e.g. a trace recorded by the ASGI middleware alone has no header parse) keeps its
step, with a note saying why it is empty, so the outline is the same for every trace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from tracer import vocab
from tracer.analysis import fmt
from tracer.analysis.explain import prose
from tracer.analysis.explain.framebits import (
    LENGTH_16,
    HeaderBits,
    bits,
    masked_payload,
    read_header,
    rebuild_header,
)
from tracer.analysis.explain.model import Block, Document, Para, Pre, RfcRef, Step, Table, Val
from tracer.analysis.explain.source import CodeRef, package_label, resolve
from tracer.export.records import EventRecord, SpanRecord
from tracer.export.traceset import Connection, TraceSet
from tracer.wire.codes import Opcode, close_code_meaning
from tracer.wire.handshake import GUID, accept_key, validate_client_key

PAYLOAD_BYTES_SHOWN = 16
"""Masked/unmasked payload bytes shown in the frame step (the XOR is worked for the first 4)."""


# --- Reading spans -------------------------------------------------------------------------------


class Spans:
    """The spans of one connection, by name, in start order."""

    def __init__(self, traces: TraceSet, conn: Connection) -> None:
        self.traces = traces
        self.conn = conn
        self.all = conn.spans

    def first(self, name: str, within: SpanRecord | None = None) -> SpanRecord | None:
        pool = self.all if within is None else [s for s, _ in self.traces.walk(within)]
        return next((s for s in pool if s.name == name), None)

    def named(self, name: str) -> list[SpanRecord]:
        return [s for s in self.all if s.name == name]

    def layers(self) -> list[SpanRecord]:
        return [s for s in self.all if vocab.MIDDLEWARE_LAYER in s.attributes]


def attr(span: SpanRecord | None, key: str, default: Any = None) -> Any:
    return default if span is None else span.attributes.get(key, default)


def integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def code_ref(span: SpanRecord | None) -> CodeRef | None:
    """The installed code of the function a span recorded, or None if it recorded none."""
    function = attr(span, vocab.CODE_FUNCTION_NAME)
    if not isinstance(function, str) or not function:
        return None
    return resolve(function, recorded_line=integer(attr(span, vocab.CODE_LINE_NUMBER)))


def code_refs(*spans: SpanRecord | None) -> list[CodeRef]:
    refs: list[CodeRef] = []
    for span in spans:
        ref = code_ref(span)
        if ref is not None and all(r.function != ref.function for r in refs):
            refs.append(ref)
    return refs


def headers_of(span: SpanRecord | None) -> list[tuple[str, str]]:
    """Recorded request headers (allowlisted and redacted when recorded), in recorded order."""
    found = []
    for key, value in span.attributes.items() if span is not None else ():
        if key.startswith(vocab.HTTP_REQUEST_HEADER_PREFIX):
            name = key[len(vocab.HTTP_REQUEST_HEADER_PREFIX) :]
            values = value if isinstance(value, list) else [value]
            found.extend((name, str(v)) for v in values)
    return found


def field_name(name: str) -> str:
    """``sec-websocket-key`` → ``Sec-WebSocket-Key``: the spelling of RFC 6455's examples."""
    return "-".join(
        "WebSocket" if part == "websocket" else part.title() for part in name.split("-")
    )


def header(span: SpanRecord | None, name: str) -> str | None:
    return next((v for n, v in headers_of(span) if n == name), None)


def facts(*rows: tuple[str, Any]) -> Table:
    """A two-column table of recorded values; rows whose value is None are left out."""
    return Table(["field", "value"], [[label, Val(v)] for label, v in rows if v is not None])


def ms(ns: Any) -> str | None:
    value = integer(ns)
    return None if value is None else fmt.duration(value)


# --- Steps ---------------------------------------------------------------------------------------


def step_connection(s: Spans) -> Step:
    root = s.conn.root
    parse = s.first(vocab.HTTP_HEADERS_PARSE)
    handshake = s.first(vocab.WS_HANDSHAKE)
    request_source = parse or handshake
    method = attr(request_source, vocab.HTTP_REQUEST_METHOD, "GET")
    target = attr(request_source, vocab.URL_PATH, attr(root, vocab.URL_PATH, "?"))
    query = attr(request_source, vocab.URL_QUERY)
    version = attr(parse, vocab.NETWORK_PROTOCOL_VERSION, "1.1")
    lines = [f"{method} {target}{'?' + str(query) if query else ''} HTTP/{version}"]
    lines += [f"{field_name(name)}: {value}" for name, value in headers_of(request_source)]
    key = attr(handshake, vocab.WS_KEY)
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    shown = len(lines) - 1
    total = integer(attr(parse, vocab.HTTP_HEADER_COUNT))
    step = Step(
        1,
        "connection",
        "The TCP connection and the HTTP request",
        [RfcRef("RFC 6455", "4.1", "Client Requirements"), RfcRef("RFC 9110", "9.3.1", "GET")],
        prose.CONNECTION,
        code_refs(root),
        root.duration_ns,
        "connection lifetime",
    )
    step.blocks = [
        facts(
            ("client (address:port)", s.conn.peer),
            (
                "server (address:port)",
                f"{attr(root, vocab.SERVER_ADDRESS, '?')}:{attr(root, vocab.SERVER_PORT, '?')}",
            ),
            ("HTTP parser (uvicorn --http)", attr(root, vocab.IMPL_HTTP)),
            ("WebSocket implementation (uvicorn --ws)", attr(root, vocab.IMPL_WS)),
        ),
        Pre("The request head as recorded", lines),
        Para(prose.request_note(shown, total)),
    ]
    return step


def step_parse(s: Spans) -> Step:
    parse = s.first(vocab.HTTP_HEADERS_PARSE)
    parser = attr(s.conn.root, vocab.IMPL_HTTP)
    step = Step(
        2,
        "parse",
        "Parsing the request head",
        [RfcRef("RFC 9112", "3", "Request Line"), RfcRef("RFC 9110", "5", "Fields")],
        prose.parse(str(parser) if parser else None),
        code_refs(parse),
        None if parse is None else parse.duration_ns,
    )
    if parse is None:
        step.missing = prose.MISSING_SERVER_STAGE
        return step
    step.blocks = [
        facts(
            ("parser", parser),
            ("method", attr(parse, vocab.HTTP_REQUEST_METHOD)),
            ("request target", attr(parse, vocab.URL_PATH)),
            ("HTTP version", attr(parse, vocab.NETWORK_PROTOCOL_VERSION)),
            ("header fields", attr(parse, vocab.HTTP_HEADER_COUNT)),
            ("bytes in the head", attr(parse, vocab.HTTP_HEAD_BYTES)),
        )
    ]
    return step


def step_upgrade(s: Spans) -> Step:
    detect = s.first(vocab.HTTP_UPGRADE_DETECT)
    parse = s.first(vocab.HTTP_HEADERS_PARSE) or s.first(vocab.WS_HANDSHAKE)
    step = Step(
        3,
        "upgrade",
        "Detecting the upgrade",
        [RfcRef("RFC 9110", "7.8", "Upgrade"), RfcRef("RFC 9110", "7.6.1", "Connection")],
        prose.UPGRADE,
        code_refs(detect),
        None if detect is None else detect.duration_ns,
    )
    if detect is None:
        step.missing = prose.MISSING_SERVER_STAGE
        return step
    step.blocks = [
        facts(
            ("Connection", header(parse, "connection")),
            ("Upgrade", header(parse, "upgrade")),
            ("decision", attr(detect, vocab.UPGRADE)),
        )
    ]
    return step


def step_switch(s: Spans) -> Step:
    switch = s.first(vocab.WS_PROTOCOL_SWITCH)
    step = Step(
        4,
        "switch",
        "Switching protocols",
        [
            RfcRef("RFC 9110", "15.2.2", "101 Switching Protocols"),
            RfcRef("RFC 6455", "4.2.1", "Reading the Client's Opening Handshake"),
        ],
        prose.SWITCH,
        code_refs(switch),
        None if switch is None else switch.duration_ns,
    )
    if switch is None:
        step.missing = prose.MISSING_SERVER_STAGE
        return step
    step.blocks = [facts(("WebSocket implementation", attr(switch, vocab.IMPL_WS)))]
    return step


def accept_rows(key: str, recorded: str | None, status: int | None = 101) -> list[list[Any]]:
    """The §4.2.2 computation with every intermediate value."""
    concatenated = key.strip(" \t") + GUID
    digest = hashlib.sha1(concatenated.encode("latin-1", "replace")).digest()
    computed = base64.b64encode(digest).decode("ascii")
    assert computed == accept_key(key) or not key.isascii()
    try:
        nonce = base64.b64decode(key, validate=True).hex(" ")
    except (binascii.Error, ValueError):
        nonce = "(not valid base64)"
    rows: list[list[Any]] = [
        ["1", "the client's `Sec-WebSocket-Key`", Val(key)],
        [
            "",
            "…is base64 of 16 random bytes (§4.1)"
            + ("" if validate_client_key(key) else ": NOT a valid key"),
            Val(nonce),
        ],
        ["2", "append the GUID of §1.3", Val(GUID)],
        ["", "the string hashed", Val(concatenated)],
        ["3", "SHA-1 of that string: 20 bytes", Val(digest.hex(" "))],
        ["4", "base64 of the digest", Val(computed)],
        [
            "5",
            "`Sec-WebSocket-Accept` the server sent",
            Val(_sent(recorded, status)),
        ],
        [
            "6",
            "do they match? (the client checks this, §4.1)",
            Val(_verdict(recorded, computed, status)),
        ],
    ]
    return rows


def _sent(recorded: str | None, status: int | None) -> str:
    if recorded:
        return recorded
    if status is not None and status != 101:
        return f"none: the server answered {status}, refusing the upgrade"
    return "(not recorded)"


def _verdict(recorded: str | None, computed: str, status: int | None) -> str:
    if recorded is not None:
        return "yes" if recorded == computed else "NO: the client must fail the connection"
    if status is not None and status != 101:
        return "no 101, nothing to check: the client fails the WebSocket connection (§4.1)"
    return "NO"


def response_head(status: int, recorded: str | None, extensions: Any) -> list[str]:
    """The response's status line and the WebSocket fields wstrace records."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    head = [f"HTTP/1.1 {status} {phrase}".rstrip()]
    if status != 101:
        return head
    head += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {recorded}"]
    if extensions:
        head.append(f"Sec-WebSocket-Extensions: {extensions}")
    return head


def step_handshake(s: Spans) -> Step:
    handshake = s.first(vocab.WS_HANDSHAKE)
    validate = s.first(vocab.WS_HANDSHAKE_VALIDATE)
    response = s.first(vocab.WS_HANDSHAKE_RESPONSE)
    step = Step(
        5,
        "handshake",
        "The opening handshake: Sec-WebSocket-Key → Sec-WebSocket-Accept",
        [
            RfcRef("RFC 6455", "4.2.1", "Reading the Client's Opening Handshake"),
            RfcRef("RFC 6455", "4.2.2", "Sending the Server's Opening Handshake"),
            RfcRef("RFC 6455", "1.3", "Opening Handshake"),
        ],
        prose.HANDSHAKE,
        code_refs(handshake, validate, response),
        None if handshake is None else handshake.duration_ns,
    )
    key = attr(handshake, vocab.WS_KEY) or attr(validate, vocab.WS_KEY)
    if key is None:
        step.missing = prose.MISSING_SERVER_STAGE
        return step
    recorded = attr(response, vocab.WS_ACCEPT_KEY)
    status = integer(attr(response, vocab.HTTP_RESPONSE_STATUS_CODE))
    blocks: list[Block] = [
        facts(
            ("Sec-WebSocket-Version", attr(handshake, vocab.WS_VERSION)),
            ("validated by", attr(validate, vocab.CODE_FUNCTION_NAME)),
            ("validation took", ms(None if validate is None else validate.duration_ns)),
            ("response written by", attr(response, vocab.CODE_FUNCTION_NAME)),
            ("response status", attr(response, vocab.HTTP_RESPONSE_STATUS_CODE)),
            ("bytes in the response head", attr(response, vocab.HTTP_HEAD_BYTES)),
            ("extensions negotiated", attr(response, vocab.WS_EXTENSIONS)),
            ("subprotocol", attr(response, vocab.WS_SUBPROTOCOL)),
        ),
        Para(
            prose.handshake_flow(
                attr(s.conn.root, vocab.IMPL_WS), _handshake_waits_for_app(s, handshake)
            )
        ),
        Para([prose.ACCEPT_INTRO]),
        Table(["#", "computation", "value"], accept_rows(str(key), recorded, status)),
    ]
    if response is not None and status is not None:
        head = response_head(status, recorded, attr(response, vocab.WS_EXTENSIONS))
        blocks.append(Pre("The response head (the fields wstrace records)", head))
    step.blocks = blocks
    return step


def _handshake_waits_for_app(s: Spans, handshake: SpanRecord | None) -> bool:
    accept = s.first(vocab.WS_ACCEPT)
    return bool(handshake and accept and handshake.start_ns <= accept.start_ns < handshake.end_ns)


def step_asgi(s: Spans) -> Step:
    app = s.first(vocab.ASGI_APP)
    step = Step(
        6,
        "asgi",
        "The ASGI application starts",
        [
            RfcRef("ASGI", "", "WebSocket connection scope"),
            RfcRef("RFC 6455", "4.2.2", "Sending the Server's Opening Handshake"),
        ],
        prose.ASGI,
        code_refs(app),
        None if app is None else app.duration_ns,
        "app ran for",
    )
    if app is None:
        step.missing = prose.MISSING_SERVER_STAGE
        return step
    step.blocks = [facts(("scope path", attr(app, vocab.URL_PATH)))]
    return step


def _is_router(span: SpanRecord) -> bool:
    function = str(attr(span, vocab.CODE_FUNCTION_NAME, ""))
    return function.endswith("Router.__call__") or vocab.HTTP_ROUTE in span.attributes


def step_middleware(s: Spans) -> Step:
    layers = []
    for span in s.layers():
        if _is_router(span):
            break
        layers.append(span)
    step = Step(
        7,
        "middleware",
        "The middleware chain",
        [RfcRef("ASGI", "", "WebSocket connection scope")],
        prose.MIDDLEWARE,
        code_refs(*layers),
        None if not layers else layers[0].duration_ns,
        "outermost layer ran for",
    )
    if not layers:
        step.missing = "no middleware layer spans in this trace (TracingMiddleware not used)"
        return step
    rows = []
    for i, span in enumerate(layers, start=1):
        name = str(attr(span, vocab.MIDDLEWARE_LAYER, span.name))
        ref = code_ref(span)
        rows.append(
            [
                str(i),
                Val(name),
                prose.layer_role(name),
                Val(ref.location if ref else "?"),
                Val(ref.package if ref and ref.package else "?"),
            ]
        )
    step.show_source = False
    step.blocks = [
        Table(["#", "layer", "what it does for a WebSocket scope", "file:line", "package"], rows)
    ]
    return step


def _endpoint(s: Spans) -> SpanRecord | None:
    accept = s.first(vocab.WS_ACCEPT)
    if accept is None:
        return None
    for ancestor in s.traces.ancestors(accept):
        if vocab.MIDDLEWARE_LAYER not in ancestor.attributes and code_ref(ancestor) is not None:
            return ancestor
    return None


def step_route(s: Spans) -> Step:
    router = next((span for span in s.layers() if _is_router(span)), None)
    route = next((span for span in s.all if vocab.HTTP_ROUTE in span.attributes), None)
    endpoint = _endpoint(s)
    helpers = (
        []
        if route is None
        else [c for c in s.traces.children(route) if c is not endpoint and code_ref(c) is not None]
    )
    step = Step(
        8,
        "route",
        "The route and the endpoint",
        [RfcRef("ASGI", "", "WebSocket connection scope")],
        prose.ROUTE,
        code_refs(router, route, *helpers, endpoint),
        None if route is None else route.duration_ns,
        "route ran for",
    )
    if route is None and endpoint is None:
        step.missing = "no route or endpoint span in this trace"
        return step
    step.blocks = [
        facts(
            ("route template", attr(route, vocab.HTTP_ROUTE)),
            ("path", attr(s.first(vocab.ASGI_APP), vocab.URL_PATH)),
            ("router", attr(router, vocab.MIDDLEWARE_LAYER)),
            ("route class", attr(route, vocab.MIDDLEWARE_LAYER)),
            ("endpoint", None if endpoint is None else endpoint.name),
            ("endpoint ran for", ms(None if endpoint is None else endpoint.duration_ns)),
        )
    ]
    return step


def stack_event(accept: SpanRecord | None) -> EventRecord | None:
    if accept is None:
        return None
    return next((e for e in accept.events if e.name == vocab.EVENT_HANDSHAKE_STACK), None)


def stack_refs(event: EventRecord) -> list[CodeRef]:
    """The recorded stack, innermost first (as a traceback reads bottom-up), resolved."""
    functions = list(event.attributes.get(vocab.STACK_FUNCTIONS) or [])
    files = list(event.attributes.get(vocab.STACK_FILES) or [])
    lines = list(event.attributes.get(vocab.STACK_LINES) or [])
    refs = []
    for i, function in enumerate(functions):
        file = str(files[i]) if i < len(files) else ""
        line = integer(lines[i]) if i < len(lines) else None
        refs.append(resolve(str(function), recorded_file=file, recorded_line=line, in_body=True))
    return refs[::-1]


def step_accept(s: Spans) -> Step:
    accept = s.first(vocab.WS_ACCEPT)
    response = s.first(vocab.WS_HANDSHAKE_RESPONSE)
    step = Step(
        9,
        "accept",
        "accept() and the stack at that moment",
        [RfcRef("RFC 6455", "4.2.2", "Sending the Server's Opening Handshake")],
        prose.ACCEPT,
        code_refs(accept, response),
        None if accept is None else accept.duration_ns,
    )
    if accept is None:
        step.missing = "no ws.accept span: the app never accepted this connection"
        return step
    event = stack_event(accept)
    if event is None:
        step.missing = "no handshake stack recorded on ws.accept"
        return step
    rows = []
    refs = stack_refs(event)
    for i, ref in enumerate(refs, start=1):
        line = ref.line if ref.found else ref.recorded_line
        rows.append(
            [
                str(i),
                Val(ref.qualname),
                Val(ref.path or "?"),
                Val(line if line is not None else "?"),
                Val(ref.package or "?"),
            ]
        )
    step.blocks = [
        Para(prose.stack_intro(len(refs))),
        Table(["#", "function", "file", "line", "package"], rows),
    ]
    return step


def _frames(s: Spans, name: str) -> list[tuple[int, SpanRecord | EventRecord]]:
    found: list[tuple[int, SpanRecord | EventRecord]] = []
    for span in s.all:
        if span.name == name:
            found.append((span.start_ns, span))
        found.extend((e.time_ns, e) for e in span.events if e.name == name)
    found.sort(key=lambda item: item[0])
    return found


def first_data_frame(s: Spans) -> SpanRecord | EventRecord | None:
    """The first frame the client sent after the handshake (a data frame if there is one)."""
    frames = [f for _, f in _frames(s, vocab.WS_FRAME_RECEIVE)]
    for frame in frames:
        if integer(frame.attributes.get(vocab.WS_OPCODE)) in (Opcode.TEXT, Opcode.BINARY):
            return frame
    return frames[0] if frames else None


def frame_header_bytes(a: dict[str, Any]) -> bytes | None:
    """The header bytes rebuilt from a recorded frame's fields (None if a field is missing)."""
    try:
        key_hex = a.get(vocab.WS_MASKING_KEY)
        return rebuild_header(
            fin=bool(a[vocab.WS_FIN]),
            rsv=int(a.get(vocab.WS_RSV, 0)),
            opcode=int(a[vocab.WS_OPCODE]),
            masking_key=bytes.fromhex(str(key_hex)) if a.get(vocab.WS_MASK) and key_hex else None,
            payload_length=int(a[vocab.WS_PAYLOAD_LENGTH]),
        )
    except (KeyError, TypeError, ValueError):
        return None


_ESCAPED_BYTE = re.compile(r"\\x([0-9a-f]{2})")


def preview_bytes(a: dict[str, Any]) -> bytes | None:
    """The captured payload bytes (unmasked).  The recorder stores them as UTF-8 text with
    undecodable bytes written ``\\xNN``; those are turned back into bytes."""
    preview = a.get(vocab.WS_PAYLOAD_PREVIEW)
    if not isinstance(preview, str):
        return None
    out = bytearray()
    position = 0
    for match in _ESCAPED_BYTE.finditer(preview):
        out += preview[position : match.start()].encode("utf-8", "replace")
        out.append(int(match[1], 16))
        position = match.end()
    out += preview[position:].encode("utf-8", "replace")
    return bytes(out)


def _opcode_name(opcode: int) -> str:
    try:
        return Opcode(opcode).name.lower()
    except ValueError:
        return "reserved"


def first_two_bytes(h: HeaderBits) -> list[Table]:
    """Byte 0 (FIN, RSV1-3, opcode) and byte 1 (MASK, 7-bit length), bit by bit."""
    opcode = f"{bits(h.opcode, 4)} = 0x{h.opcode:x}"
    byte0 = Table(
        ["bits of byte 0", "field", "value", "meaning"],
        [
            ["7", "FIN", Val(h.fin), prose.fin(h.fin)],
            ["6", "RSV1", Val(h.rsv1), prose.rsv1(h.rsv1)],
            ["5", "RSV2", Val(h.rsv2), "reserved: 0 unless an extension defines it"],
            ["4", "RSV3", Val(h.rsv3), "reserved: 0 unless an extension defines it"],
            ["3-0", "opcode", Val(opcode), prose.opcode(_opcode_name(h.opcode))],
        ],
    )
    length_meaning = (
        "the payload length itself (0-125)"
        if h.length7 < LENGTH_16
        else f"{h.length7}: the length follows in {len(h.extended)} bytes"
    )
    length = Val(f"{bits(h.length7, 7)} = {h.length7}")
    byte1 = Table(
        ["bits of byte 1", "field", "value", "meaning"],
        [
            ["7", "MASK", Val(h.mask), prose.mask(h.mask)],
            ["6-0", "payload length (7 bits)", length, length_meaning],
        ],
    )
    return [byte0, byte1]


def remaining_header(h: HeaderBits) -> Table:
    """The extended payload length and the masking key, with their byte positions."""
    rows: list[list[Any]] = []
    position = 2
    if h.extended:
        end = position + len(h.extended) - 1
        value = Val(f"{h.extended.hex(' ')} = {h.payload_length}")
        rows.append([f"{position}-{end}", "extended payload length", value, "big-endian (§5.2)"])
        position = end + 1
    else:
        rows.append(["-", "extended payload length", Val("none"), "the 7-bit length was enough"])
    if h.mask:
        key = Val(h.masking_key.hex(" "))
        rows.append([f"{position}-{position + 3}", "masking key", key, prose.MASKING_KEY])
    else:
        rows.append(["-", "masking key", Val("none"), "MASK is 0: server frames are not masked"])
    return Table(["bytes", "field", "value", "meaning"], rows)


def frame_tables(header: bytes, a: dict[str, Any]) -> list[Block]:
    h = read_header(header)
    shown = Para(
        [
            "The header on the wire, rebuilt from the recorded fields: ",
            Val(header.hex(" ")),
            f" ({len(header)} bytes; byte 0 = ",
            Val(bits(header[0], 8)),
            ", byte 1 = ",
            Val(bits(header[1], 8)),
            ").",
        ]
    )
    return [
        shown,
        *first_two_bytes(h),
        remaining_header(h),
        *payload_blocks(h.masking_key, a, h.rsv1),
    ]


def payload_blocks(key: bytes, a: dict[str, Any], compressed: int) -> list[Block]:
    unmasked = preview_bytes(a)
    if unmasked is None:
        return [Para([prose.NO_PAYLOAD])]
    shown = unmasked[:PAYLOAD_BYTES_SHOWN]
    masked = masked_payload(shown, key)
    rows: list[list[Any]] = []
    for i in range(min(4, len(shown))):
        k = key[i % 4] if key else 0
        char = chr(shown[i]) if 32 <= shown[i] < 127 else "·"
        rows.append(
            [
                str(i),
                Val(f"{masked[i]:08b} ({masked[i]:02x})"),
                Val(f"{k:08b} ({k:02x})"),
                Val(f"{shown[i]:08b} ({shown[i]:02x}) {char!r}"),
            ]
        )
    blocks: list[Block] = [
        facts(
            ("masked payload on the wire (first bytes)", masked.hex(" ")),
            ("unmasked payload (first bytes)", shown.hex(" ")),
            ("as text", shown.decode("utf-8", "replace")),
        ),
        Para([prose.XOR_INTRO]),
        Table(["payload byte", "masked (wire)", "XOR key byte", "= unmasked"], rows),
    ]
    if compressed:
        blocks.append(Para([prose.COMPRESSED_PAYLOAD]))
    return blocks


def step_frame(s: Spans) -> Step:
    frame = first_data_frame(s)
    ref = code_ref(frame) if isinstance(frame, SpanRecord) else None
    step = Step(
        10,
        "first-frame",
        "The first frame received, bit by bit",
        [
            RfcRef("RFC 6455", "5.2", "Base Framing Protocol"),
            RfcRef("RFC 6455", "5.3", "Client-to-Server Masking"),
        ],
        prose.FRAME,
        [ref] if ref else [],
        frame.duration_ns if isinstance(frame, SpanRecord) else None,
        "decoding took",
    )
    if frame is None:
        step.missing = "no frame received in this trace (frames recorded with --frames off?)"
        return step
    a = frame.attributes
    header = frame_header_bytes(a)
    step.blocks = [
        facts(
            ("FIN", a.get(vocab.WS_FIN)),
            ("RSV", a.get(vocab.WS_RSV)),
            ("opcode", f"{a.get(vocab.WS_OPCODE)} ({a.get(vocab.WS_OPCODE_NAME)})"),
            ("MASK", a.get(vocab.WS_MASK)),
            ("payload length", a.get(vocab.WS_PAYLOAD_LENGTH)),
            ("header length", a.get(vocab.WS_HEADER_LENGTH)),
            ("masking key", a.get(vocab.WS_MASKING_KEY)),
        )
    ]
    if header is not None:
        step.blocks.extend(frame_tables(header, a))
    return step


def message_of(s: Spans, frame: SpanRecord | EventRecord | None) -> SpanRecord | None:
    if isinstance(frame, SpanRecord):
        parent = s.traces.parent(frame)
        if parent is not None and parent.name == vocab.WS_MESSAGE_RECEIVE:
            return parent
    if isinstance(frame, EventRecord):
        for span in s.named(vocab.WS_MESSAGE_RECEIVE):
            if frame in span.events:
                return span
    return s.first(vocab.WS_MESSAGE_RECEIVE)


def step_message(s: Spans) -> Step:
    message = message_of(s, first_data_frame(s))
    step = Step(
        11,
        "message",
        "The message delivered to the app",
        [
            RfcRef("RFC 6455", "6.2", "Receiving Data"),
            RfcRef("ASGI", "", "Receive - receive event"),
        ],
        prose.MESSAGE,
        code_refs(message),
        None if message is None else message.duration_ns,
        "first frame in → the app ready for the next message:",
    )
    if message is None:
        step.missing = "the client sent no data message on this connection"
        return step
    a = message.attributes
    step.blocks = [
        facts(
            ("message type", a.get(vocab.WS_MESSAGE_TYPE)),
            ("size (bytes)", a.get(vocab.WS_MESSAGE_SIZE)),
            ("frames", a.get(vocab.WS_MESSAGE_FRAMES)),
            ("first frame in → receive() returned it", ms(a.get(vocab.DELIVERED_NS))),
            ("of which queue wait", ms(a.get(vocab.QUEUE_WAIT_NS))),
            (
                "handler time (until the app asked for the next message)",
                ms(a.get(vocab.HANDLER_NS)),
            ),
        ),
        Para([prose.QUEUE_VS_HANDLER]),
    ]
    return step


def step_broadcast(s: Spans) -> Step:
    message = message_of(s, first_data_frame(s))
    broadcast = (s.first(vocab.WS_BROADCAST, within=message) if message else None) or s.first(
        vocab.WS_BROADCAST
    )
    sends = (
        []
        if broadcast is None
        else [c for c in s.traces.children(broadcast) if c.name == vocab.WS_MESSAGE_SEND]
    )
    step = Step(
        12,
        "broadcast",
        "The broadcast and its recipients",
        [RfcRef("RFC 6455", "6.1", "Sending Data"), RfcRef("RFC 6455", "5.1", "Overview")],
        prose.BROADCAST,
        code_refs(*sends[:1]),
        None if broadcast is None else broadcast.duration_ns,
        "fan-out took",
    )
    if broadcast is None:
        step.missing = "this connection's messages caused no broadcast"
        return step
    rows = []
    for i, send in enumerate(sends, start=1):
        recipient = s.traces.recipient(send)
        frames = [f for f, _ in s.traces.walk(send) if f.name == vocab.WS_FRAME_SEND]
        rows.append(
            [
                str(i),
                Val(recipient.label if recipient else attr(send, vocab.CONNECTION_ID, "?")),
                Val(attr(send, vocab.WS_MESSAGE_SIZE, "?")),
                Val(len(frames) or attr(send, vocab.WS_MESSAGE_FRAMES, "?")),
                Val(fmt.duration(send.duration_ns)),
            ]
        )
    step.blocks = [
        facts(
            ("recipients", attr(broadcast, vocab.BROADCAST_RECIPIENTS)),
            ("detected", attr(broadcast, vocab.BROADCAST_DETECTED)),
        ),
        Table(["#", "recipient", "bytes", "frames", "send took"], rows),
    ]
    return step


def step_close(s: Spans) -> Step:
    close = s.first(vocab.WS_CLOSE)
    frames = [
        (name, f)
        for name in (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND)
        for _, f in _frames(s, name)
        if integer(f.attributes.get(vocab.WS_OPCODE)) == Opcode.CLOSE
    ]
    step = Step(
        13,
        "close",
        "The closing handshake",
        [
            RfcRef("RFC 6455", "5.5.1", "Close"),
            RfcRef("RFC 6455", "7.1.2", "Start the WebSocket Closing Handshake"),
            RfcRef("RFC 6455", "7.4.1", "Defined Status Codes"),
        ],
        prose.CLOSE,
        code_refs(close),
        None if close is None else close.duration_ns,
    )
    if close is None:
        step.missing = "no ws.close span: the trace ended before the connection did"
        return step
    code = integer(attr(close, vocab.WS_CLOSE_CODE))
    rows = [
        [
            "client → server" if name == vocab.WS_FRAME_RECEIVE else "server → client",
            Val(f.attributes.get(vocab.WS_CLOSE_CODE, "(no code)")),
            Val(f.attributes.get(vocab.WS_CLOSE_REASON, "")),
            Val(f.attributes.get(vocab.WS_PAYLOAD_LENGTH, "?")),
        ]
        for name, f in frames
    ]
    step.blocks = [
        facts(
            ("who closed", attr(close, vocab.WS_CLOSE_INITIATOR)),
            ("code", code),
            ("what the code means", None if code is None else close_code_meaning(code)),
            ("reason", attr(close, vocab.WS_CLOSE_REASON) or "(empty)"),
        )
    ]
    if rows:
        step.blocks.append(Table(["close frame", "code", "reason", "payload bytes"], rows))
    return step


STEPS: tuple[Callable[[Spans], Step], ...] = (
    step_connection,
    step_parse,
    step_upgrade,
    step_switch,
    step_handshake,
    step_asgi,
    step_middleware,
    step_route,
    step_accept,
    step_frame,
    step_message,
    step_broadcast,
    step_close,
)


def versions_table(conn: Connection) -> Table:
    root = conn.root
    tops = ["uvicorn", "starlette", "fastapi"]
    tops += {"websockets": ["websockets"], "websockets-sansio": ["websockets"]}.get(
        str(attr(root, vocab.IMPL_WS)),
        ["wsproto"] if attr(root, vocab.IMPL_WS) == "wsproto" else [],
    )
    parser = attr(root, vocab.IMPL_HTTP)
    if parser in ("httptools", "h11", "zttp"):
        tops.append(str(parser))
    rows = [[Val(top), Val(package_label(top))] for top in tops]
    rows.append([Val("Python"), Val(sys.version.split()[0])])
    return Table(["package", "installed version (read when this page was generated)"], rows)


def explain_connection(traces: TraceSet, conn: Connection) -> Document:
    """The walkthrough of one connection."""
    spans = Spans(traces, conn)
    http = attr(conn.root, vocab.IMPL_HTTP, "?")
    ws = attr(conn.root, vocab.IMPL_WS, "?")
    intro: list[Block] = [
        Para(prose.intro(str(http), str(ws))),
        versions_table(conn),
    ]
    return Document(
        title=f"A WebSocket connection, step by step ({http} + {ws})",
        intro=intro,
        steps=[build(spans) for build in STEPS],
    )


def explain(traces: TraceSet, connection: int = 1) -> Document:
    """The walkthrough of the ``connection``-th connection (1-based) of a trace set."""
    return explain_connection(traces, traces.connection(connection))


__all__ = ["STEPS", "Spans", "explain", "explain_connection", "frame_header_bytes", "stack_refs"]
