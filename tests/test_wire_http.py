"""HTTP/1.1 head decoding for the opening handshake: real heads, chunking, every error kind."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from tracer.wire.frames import FrameDecoder, ProtocolError, encode_frame
from tracer.wire.handshake import check_accept
from tracer.wire.http import (
    RequestHead,
    RequestHeadDecoder,
    ResponseHead,
    ResponseHeadDecoder,
    is_websocket_upgrade,
    request_target,
)

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

Decoder = RequestHeadDecoder | ResponseHeadDecoder
Outcome = RequestHead | ResponseHead | ProtocolError | None


def websockets_request() -> tuple[Request, bytes]:
    """A real opening handshake request, as the websockets client writes it."""
    client = ClientProtocol(
        parse_uri("ws://auction.example:8000/ws/room-7?user=ada"),
        extensions=[ClientPerMessageDeflateFactory()],
        subprotocols=["bids.v1"],
    )
    request = client.connect()
    return request, request.serialize()


def websockets_response(request: Request) -> bytes:
    server = ServerProtocol(extensions=[ServerPerMessageDeflateFactory()], subprotocols=["bids.v1"])
    return server.accept(request).serialize()


def feed_all(decoder: Decoder, chunks: list[bytes]) -> tuple[Outcome, bytes]:
    """Feed every chunk; return the one non-None outcome and the bytes after the head."""
    outcomes = [decoder.feed(chunk) for chunk in chunks]
    done = [i for i, outcome in enumerate(outcomes) if outcome is not None]
    assert len(done) <= 1, "an outcome is returned exactly once"
    if not done:
        return None, b""
    after = decoder.trailing + b"".join(chunks[done[0] + 1 :])
    return outcomes[done[0]], after


def split(data: bytes, *cuts: int) -> list[bytes]:
    points = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- requests ---------------------------------------------------------------------------------


def test_websockets_client_request() -> None:
    request, data = websockets_request()
    decoder = RequestHeadDecoder()
    head = decoder.feed(data)
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.http_version) == ("GET", "/ws/room-7?user=ada", "1.1")
    assert head.headers == [(name.lower(), value) for name, value in request.headers.raw_items()]
    assert head.length == len(data)
    assert head.header("HOST") == "auction.example:8000"
    assert head.header("sec-websocket-key") == request.headers["Sec-WebSocket-Key"]
    assert head.header("sec-websocket-version") == "13"
    assert head.header("sec-websocket-protocol") == "bids.v1"
    assert head.header("x-missing") is None
    assert is_websocket_upgrade(head)
    assert decoder.result is head and decoder.error is None and decoder.done
    assert decoder.trailing == b""
    assert decoder.feed(b"more") is None
    assert decoder.bytes_fed == len(data) + 4
    assert decoder.eof() is None


def test_pipelined_first_frame_is_trailing() -> None:
    _, data = websockets_request()
    frame = encode_frame(0x1, b'{"bid": 42}', mask=b"\x0a\x0b\x0c\x0d")
    decoder = RequestHeadDecoder()
    head = decoder.feed(data + frame)
    assert isinstance(head, RequestHead) and head.length == len(data)
    assert decoder.trailing == frame
    frames = FrameDecoder(client_side=True).feed(decoder.trailing)
    assert len(frames) == 1 and frames[0].offset == 0


def test_trailing_bytes_are_bytes_whatever_was_fed() -> None:
    _, data = websockets_request()
    decoder = RequestHeadDecoder()
    decoder.feed(bytearray(data + b"\x81\x00"))
    assert type(decoder.trailing) is bytes and decoder.trailing == b"\x81\x00"


def test_every_split_point_with_pipelined_frame() -> None:
    _, data = websockets_request()
    frame = encode_frame(0x2, b"\x00" * 10, mask=b"abcd")
    stream = data + frame
    whole = RequestHeadDecoder().feed(stream)
    assert isinstance(whole, RequestHead)
    for cut in range(len(stream) + 1):
        outcome, after = feed_all(RequestHeadDecoder(), split(stream, cut))
        assert outcome == whole, f"split at {cut}"
        assert after == frame
    for first in range(0, len(stream), 7):
        for second in range(first, len(stream) + 1, 5):
            outcome, after = feed_all(RequestHeadDecoder(), split(stream, first, second))
            assert outcome == whole and after == frame


def test_byte_by_byte() -> None:
    _, data = websockets_request()
    decoder = RequestHeadDecoder()
    outcomes = [decoder.feed(data[i : i + 1]) for i in range(len(data))]
    assert outcomes[:-1] == [None] * (len(data) - 1)
    assert isinstance(outcomes[-1], RequestHead)
    assert outcomes[-1] == RequestHeadDecoder().feed(data)


def test_leading_empty_lines_are_ignored() -> None:
    _, data = websockets_request()
    decoder = RequestHeadDecoder()
    assert decoder.feed(b"\r\n") is None
    assert decoder.feed(b"\n\r") is None
    head = decoder.feed(b"\n" + data)
    assert isinstance(head, RequestHead)
    assert head.method == "GET"
    assert head.length == 5 + len(data)  # the ignored lines count: trailing starts at length


def test_bare_lf_line_endings_are_accepted() -> None:
    head = RequestHeadDecoder().feed(b"GET /a HTTP/1.1\nHost: x\nUpgrade: websocket\n\nrest")
    assert isinstance(head, RequestHead)
    assert head.headers == [("host", "x"), ("upgrade", "websocket")]
    assert head.length == len(b"GET /a HTTP/1.1\nHost: x\nUpgrade: websocket\n\n")


def test_header_values_keep_order_duplicates_and_latin1() -> None:
    data = (
        b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nX-Name:  caf\xe9 \t\r\n"
        b"connection: Upgrade ,, \r\nEmpty:\r\nUpgrade: WebSocket\r\n\r\n"
    )
    head = RequestHeadDecoder().feed(data)
    assert isinstance(head, RequestHead)
    assert head.headers == [
        ("connection", "keep-alive"),
        ("x-name", "café"),
        ("connection", "Upgrade ,,"),
        ("empty", ""),
        ("upgrade", "WebSocket"),
    ]
    assert head.header("connection") == "keep-alive"
    assert head.header_values("Connection") == ["keep-alive", "Upgrade ,,"]
    assert head.header_tokens("Connection") == ["keep-alive", "upgrade"]
    assert head.header_tokens("missing") == []
    assert is_websocket_upgrade(head)


@pytest.mark.parametrize(
    "data",
    [
        b"POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"get / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ],
)
def test_not_a_websocket_upgrade(data: bytes) -> None:
    head = RequestHeadDecoder().feed(data)
    assert isinstance(head, RequestHead)
    assert not is_websocket_upgrade(head)


# --- request errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind", "offset"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "garbage-before-request-line", 0),
        (b"\r\n\x00GET / HTTP/1.1\r\n\r\n", "garbage-before-request-line", 2),
        (b" GET / HTTP/1.1\r\n\r\n", "garbage-before-request-line", 0),
        (b"GET /\r\n\r\n", "bad-request-line", 0),
        (b"GET  / HTTP/1.1\r\n\r\n", "bad-request-line", 0),
        (b"GET / HTTP/1.1 \r\n\r\n", "bad-request-line", 0),
        (b"GET / HTTP/11\r\n\r\n", "bad-request-line", 0),
        (b"GET /a b HTTP/1.1\r\n\r\n", "bad-request-line", 0),
        (b"G(T / HTTP/1.1\r\n\r\n", "bad-request-line", 0),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "bad-header-line", 16),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "bad-header-line", 25),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded\r\n\r\n", "bad-header-line", 25),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "bad-header-line", 16),
        (b"GET / HTTP/1.1\r\n: empty name\r\n\r\n", "bad-header-line", 16),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "bad-header-line", 16),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "bad-header-line", 16),
    ],
)
def test_request_errors(data: bytes, kind: str, offset: int) -> None:
    decoder = RequestHeadDecoder()
    outcome = decoder.feed(data)
    assert isinstance(outcome, ProtocolError)
    assert (outcome.kind, outcome.offset) == (kind, offset)
    assert decoder.error is outcome and decoder.result is None and decoder.done
    assert decoder.feed(b"GET / HTTP/1.1\r\n\r\n") is None  # stopped for good
    assert decoder.eof() is None
    # Every split reports the same error.
    for cut in range(len(data) + 1):
        again, _ = feed_all(RequestHeadDecoder(), split(data, cut))
        assert again == outcome


def test_obsolete_line_folding_is_named() -> None:
    outcome = RequestHeadDecoder().feed(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n")
    assert isinstance(outcome, ProtocolError) and outcome.kind == "bad-header-line"
    assert "folding" in outcome.detail


def test_garbage_is_reported_before_any_line_ends() -> None:
    """A TLS ClientHello on a plain-text port never ends a line: do not wait for one."""
    decoder = RequestHeadDecoder()
    outcome = decoder.feed(b"\x16")
    assert isinstance(outcome, ProtocolError) and outcome.kind == "garbage-before-request-line"


def test_bad_request_line_reported_before_the_head_ends() -> None:
    decoder = RequestHeadDecoder()
    outcome = decoder.feed(b"GET /\r\nHost: x\r\n")
    assert isinstance(outcome, ProtocolError) and outcome.kind == "bad-request-line"


def test_head_too_large_without_end() -> None:
    decoder = RequestHeadDecoder(max_head_bytes=100)
    assert decoder.feed(b"GET / HTTP/1.1\r\n") is None
    assert decoder.feed(b"X-Pad: " + b"a" * 60 + b"\r\n") is None
    outcome = decoder.feed(b"X-More: " + b"b" * 30)
    assert isinstance(outcome, ProtocolError)
    assert (outcome.kind, outcome.offset) == ("head-too-large", 100)


def test_head_too_large_when_complete() -> None:
    data = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 100 + b"\r\n\r\n"
    outcome = RequestHeadDecoder(max_head_bytes=len(data) - 1).feed(data)
    assert isinstance(outcome, ProtocolError) and outcome.kind == "head-too-large"
    assert isinstance(RequestHeadDecoder(max_head_bytes=len(data)).feed(data), RequestHead)


def test_head_too_large_long_request_line_or_endless_empty_lines() -> None:
    outcome = RequestHeadDecoder(max_head_bytes=50).feed(b"GET /" + b"a" * 100)
    assert isinstance(outcome, ProtocolError) and outcome.kind == "head-too-large"
    decoder = RequestHeadDecoder(max_head_bytes=50)
    outcomes = [decoder.feed(b"\r\n" * 10) for _ in range(10)]
    errors = [outcome for outcome in outcomes if outcome is not None]
    assert [error.kind for error in errors if isinstance(error, ProtocolError)] == [
        "head-too-large"
    ]


@pytest.mark.parametrize(
    "data", [b"G", b"GET / HTTP/1.1", b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\nGET / HTTP/1.1\r\n\r"]
)
def test_truncated(data: bytes) -> None:
    decoder = RequestHeadDecoder()
    assert decoder.feed(data) is None
    outcome = decoder.eof()
    assert isinstance(outcome, ProtocolError) and outcome.kind == "truncated"
    assert outcome.offset == (2 if data.startswith(b"\r\n") else 0)
    assert decoder.error is outcome
    assert decoder.eof() is None


def test_eof_before_any_byte_is_not_an_error() -> None:
    assert RequestHeadDecoder().eof() is None
    decoder = RequestHeadDecoder()
    decoder.feed(b"\r\n")
    assert decoder.eof() is None


# --- responses ---------------------------------------------------------------------------------


def test_websockets_101_response() -> None:
    request, _ = websockets_request()
    data = websockets_response(request)
    frame = encode_frame(0x1, b"welcome")
    decoder = ResponseHeadDecoder()
    head = decoder.feed(data + frame)
    assert isinstance(head, ResponseHead)
    assert (head.http_version, head.status, head.reason) == ("1.1", 101, "Switching Protocols")
    assert head.length == len(data)
    assert head.header_tokens("upgrade") == ["websocket"]
    assert head.header_tokens("connection") == ["upgrade"]
    assert head.header("sec-websocket-extensions") == "permessage-deflate"
    assert head.header("sec-websocket-protocol") == "bids.v1"
    assert check_accept(request.headers["Sec-WebSocket-Key"], head.header("sec-websocket-accept"))
    assert decoder.trailing == frame
    for cut in range(len(data) + len(frame) + 1):
        outcome, after = feed_all(ResponseHeadDecoder(), split(data + frame, cut))
        assert outcome == head and after == frame


@pytest.mark.parametrize(("status", "reason"), [(403, "Forbidden"), (400, "Bad Request")])
def test_rejection_responses_keep_their_body_as_trailing(status: int, reason: str) -> None:
    body = f"Failed to open a WebSocket connection: {reason.lower()}.\n"
    data = ServerProtocol().reject(status, body).serialize()
    decoder = ResponseHeadDecoder()
    head = decoder.feed(data)
    assert isinstance(head, ResponseHead)
    assert (head.status, head.reason) == (status, reason)
    assert head.header("content-length") == str(len(body.encode()))
    assert decoder.trailing == body.encode()


def test_status_line_without_reason() -> None:
    head = ResponseHeadDecoder().feed(b"HTTP/1.1 101\r\nUpgrade: websocket\r\n\r\n")
    assert isinstance(head, ResponseHead) and (head.status, head.reason) == (101, "")
    head = ResponseHeadDecoder().feed(b"HTTP/1.1 404 \r\n\r\n")
    assert isinstance(head, ResponseHead) and (head.status, head.reason) == (404, "")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "bad-status-line"),
        (b"\x00", "bad-status-line"),
        (b"HTTP/1.1 1012 Restart\r\n\r\n", "bad-status-line"),
        (b"HTTP/1.1 10 x\r\n\r\n", "bad-status-line"),
        (b"HTTP/2 101 x\r\n\r\n", "bad-status-line"),
        (b"HTTP/1.1 101 Switching\x00\r\n\r\n", "bad-status-line"),
        (b"HTTP/1.1 101 OK\r\nUpgrade websocket\r\n\r\n", "bad-header-line"),
        (b"HTTP/1.1 101 OK\r\nA: b\r\n  c\r\n\r\n", "bad-header-line"),
    ],
)
def test_response_errors(data: bytes, kind: str) -> None:
    outcome = ResponseHeadDecoder().feed(data)
    assert isinstance(outcome, ProtocolError) and outcome.kind == kind
    for cut in range(len(data) + 1):
        assert feed_all(ResponseHeadDecoder(), split(data, cut))[0] == outcome


def test_response_truncated() -> None:
    decoder = ResponseHeadDecoder()
    assert decoder.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgr") is None
    outcome = decoder.eof()
    assert isinstance(outcome, ProtocolError) and outcome.kind == "truncated"


# --- property-based ----------------------------------------------------------------------------

TOKEN = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=12,
)
VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(
    method=TOKEN,
    target=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30
    ),
    headers=st.lists(st.tuples(TOKEN, VALUE), max_size=8),
    tail=st.binary(max_size=20),
    data=st.data(),
)
def test_random_valid_requests_round_trip(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    tail: bytes,
    data: st.DataObject,
) -> None:
    head = f"{method} {target} HTTP/1.1\r\n".encode()
    for name, value in headers:
        head += f"{name}: {value}\r\n".encode("latin-1")
    head += b"\r\n"
    stream = head + tail
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    outcome, after = feed_all(RequestHeadDecoder(), split(stream, *cuts))
    assert outcome == RequestHead(
        method, target, "1.1", [(name.lower(), value) for name, value in headers], len(head)
    )
    assert after == tail


@settings(max_examples=300, deadline=None)
@given(
    stream=st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.sampled_from(
                [
                    b"GET",
                    b" ",
                    b"/",
                    b"HTTP/1.1",
                    b"HTTP/",
                    b"101",
                    b"\r\n",
                    b"\n",
                    b"\r",
                    b":",
                    b"Host",
                    b"\t",
                    b"\x00",
                    b"\xff",
                    b"a",
                ]
            ),
            max_size=60,
        ).map(b"".join),
    ),
    response=st.booleans(),
    limit=st.sampled_from([20, 65536]),
    data=st.data(),
)
def test_random_bytes_never_raise(
    stream: bytes, response: bool, limit: int, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    make = ResponseHeadDecoder if response else RequestHeadDecoder
    decoder = make(max_head_bytes=limit)
    outcome, after = feed_all(decoder, split(stream, *cuts))
    end = decoder.eof()
    assert decoder.bytes_fed == len(stream)
    whole = make(max_head_bytes=limit).feed(stream)
    if outcome is None:
        assert whole is None
        assert end is None or end.kind == "truncated"
    else:
        assert end is None
        assert outcome == whole
    if isinstance(outcome, RequestHead | ResponseHead):
        assert outcome.length <= min(len(stream), limit)
        assert after == stream[outcome.length :]
    if isinstance(outcome, ProtocolError):
        assert 0 <= outcome.offset < len(stream)


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(
        st.lists(
            st.sampled_from(
                [b"Host", b"x-Y", b":", b" ", b"\t", b"a", b"\xe9", b"\r", b"\x00", b"\x7f", b"v"]
            ),
            max_size=8,
        ).map(b"".join),
        max_size=6,
    ),
    crlf=st.booleans(),
    response=st.booleans(),
)
def test_whole_head_check_agrees_with_line_by_line(
    lines: list[bytes], crlf: bool, response: bool
) -> None:
    """The fast path (one check over every field line) decides exactly as the line-by-line
    parser, for heads well-formed or not."""
    eol = b"\r\n" if crlf else b"\n"
    start = b"HTTP/1.1 101 Switching Protocols" if response else b"GET /chat HTTP/1.1"
    head = start + eol + b"".join(line + eol for line in lines)
    make = ResponseHeadDecoder if response else RequestHeadDecoder
    assert make()._parse(head, len(head)) == make()._parse_lines(head, len(head))


@settings(max_examples=400, deadline=None)
@given(
    stream=st.one_of(
        st.binary(max_size=200),
        st.lists(
            st.sampled_from(
                [b"GET", b" ", b"/x?y", b"HTTP/1.1", b"\r\n", b"\n", b"\r", b":", b"Host",
                 b"\t", b"\x00", b"\xe9", b"a"]
            ),
            max_size=40,
        ).map(b"".join),
    ),
    limit=st.sampled_from([20, 65536]),
)
def test_request_target_says_exactly_when_a_chunk_decodes_to_a_head(
    stream: bytes, limit: int
) -> None:
    """What a caller notes now and decodes later is what the decoder would have made."""
    outcome = RequestHeadDecoder(max_head_bytes=limit).feed(stream)
    target = request_target(stream, limit)
    if isinstance(outcome, RequestHead):
        assert target == outcome.target
    else:
        assert target is None
