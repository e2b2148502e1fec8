"""Steps 1-5 of the walkthrough: the TCP connection and the request, the header parse, the
upgrade, the protocol switch, and the opening handshake with its Sec-WebSocket-Accept."""

from __future__ import annotations

import base64
import binascii
import hashlib
from http import HTTPStatus
from typing import Any

from tracer import vocab
from tracer.analysis.explain import prose
from tracer.analysis.explain.model import Block, Para, Pre, RfcRef, Step, Table, Val
from tracer.analysis.explain.reading import (
    Spans,
    attr,
    code_refs,
    facts,
    field_name,
    header,
    headers_of,
    integer,
    ms,
)
from tracer.export.records import SpanRecord
from tracer.wire.handshake import GUID, accept_key, validate_client_key


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
    """The §4.2.2 computation with every intermediate value.

    The result is :func:`tracer.wire.handshake.accept_key`'s; the digest is computed again
    here only to show it (the key's surrounding whitespace is not part of it, RFC 9110 §5.5).
    """
    concatenated = key.strip(" \t") + GUID
    digest = hashlib.sha1(concatenated.encode("latin-1", "replace")).digest()
    computed = accept_key(key)
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
