"""What the specifications say, step by step: the walkthrough's own text.

Kept apart from the code that reads the trace so the teaching text can be read and corrected
in one place.  Backticks mark code; values from a trace never appear here except through
:class:`~tracer.analysis.explain.model.Val`.
"""

from __future__ import annotations

from tracer.analysis.explain.model import Inline, Val

MISSING_SERVER_STAGE = (
    "not in this trace: this stage is recorded by the server hooks (`tracer.instrument()`), "
    "and the trace was recorded without them"
)


def intro(http: str, ws: str) -> list[Inline]:
    return [
        "This page follows one real WebSocket connection through uvicorn (HTTP parser ",
        Val(http),
        ", WebSocket implementation ",
        Val(ws),
        "), Starlette and FastAPI, from the first byte of the HTTP request to the close frame. "
        "Each step says what the protocol requires, shows the function that did the work in "
        "the installed packages (file, line and the source around it, read when this page was "
        "generated), and how long the step took in the recorded trace. Times, ports, keys and "
        "masks change from run to run; everything else is the same for the same versions.",
    ]


CONNECTION: list[Inline] = [
    "A WebSocket connection begins as an ordinary HTTP/1.1 request on a TCP connection. "
    "The client sends a `GET` whose headers ask for an upgrade: `Upgrade: websocket`, "
    "`Connection: Upgrade`, `Sec-WebSocket-Version: 13` and a fresh random `Sec-WebSocket-Key` "
    "(RFC 6455 §4.1). When the TCP connection is accepted, asyncio creates uvicorn's HTTP "
    "protocol object and calls its `connection_made`; from then on every chunk of bytes the "
    "kernel delivers arrives in `data_received`."
]


def request_note(shown: int, total: int | None) -> list[Inline]:
    counted = f", of the {total} the client sent" if total is not None else ""
    return [
        f"{shown} header fields shown{counted}. wstrace records only an allowlist of "
        "request headers; `Authorization`, `Cookie` and credentials hidden in "
        "`Sec-WebSocket-Protocol` are recorded as `[redacted]`. Header names are shown "
        "capitalised; HTTP field names are case-insensitive (RFC 9110 §5.1)."
    ]


_PARSERS = {
    "httptools": "httptools, a binding of llhttp (the C parser of Node.js). uvicorn feeds it "
    "bytes (`parser.feed_data`) and the parser calls back `on_url`, `on_header` for each field "
    "and `on_headers_complete` at the blank line that ends the head. A request with an "
    "`Upgrade` header makes `feed_data` raise `HttpParserUpgrade`: llhttp stops there, because "
    "what follows is no longer HTTP.",
    "h11": "h11, a pure-Python sans-I/O state machine. uvicorn hands it bytes "
    "(`conn.receive_data`) and pulls events out of it (`conn.next_event()` in "
    "`handle_events`): a `Request` event once the whole head has arrived.",
    "zttp": "zttp, a parser with a compiled core. uvicorn feeds it bytes and reads the parsed "
    "request line and fields back once the head is complete.",
}


def parse(parser: str | None) -> list[Inline]:
    how = _PARSERS.get(parser or "", "the configured parser.")
    return [
        "The request head is the request line (`GET /path HTTP/1.1`, RFC 9112 §3), then one "
        "field per line (`name: value`, RFC 9110 §5), then an empty line. The head may arrive "
        "in any number of TCP segments; the parser must wait for the empty line. Here the "
        "parser is " + how
    ]


UPGRADE: list[Inline] = [
    "HTTP/1.1 lets a client ask to switch protocols on the same connection: it names the "
    "protocol in `Upgrade` and lists `upgrade` in `Connection`, so that proxies do not forward "
    "the request as is (RFC 9110 §7.8, §7.6.1). uvicorn's check is small: `_get_upgrade` "
    "returns the `Upgrade` value only if `Connection` contains the token `upgrade` "
    "(case-insensitively), and `_should_upgrade` accepts it only if that value is "
    "`websocket` and a WebSocket implementation is installed. Any other upgrade is refused "
    "with a warning and the request stays plain HTTP."
]

SWITCH: list[Inline] = [
    "Once the upgrade is accepted, uvicorn builds the protocol object of the configured "
    "WebSocket implementation, gives it the TCP transport (`connection_made`), replays the "
    "request head it has already read (`data_received`), and makes it the transport's "
    "protocol (`transport.set_protocol`): from now on every byte goes to the WebSocket code. "
    "Nothing has been sent yet: the `101 Switching Protocols` response (RFC 9110 §15.2.2) "
    "is only written if the handshake is valid and the application accepts."
]

HANDSHAKE: list[Inline] = [
    "The server checks the opening handshake (RFC 6455 §4.2.1): a `GET` over HTTP/1.1 or "
    "later, `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Version: 13`, and a "
    "`Sec-WebSocket-Key` that is the base64 encoding of 16 bytes. A bad request gets a 400 "
    "(or a 426 with the supported version). To answer, the server proves it understood the "
    "request: it computes `Sec-WebSocket-Accept` from the key (§4.2.2 item 5.4) and sends it "
    "in the 101. The key is not a secret and the computation is not security: it makes sure a "
    "non-WebSocket server (or a cache) cannot accidentally produce a valid answer."
]

ACCEPT_INTRO = (
    "The computation of §4.2.2, redone here with the recorded values, and compared with what "
    "the server really sent:"
)


_HANDSHAKE_FLOWS = {
    "websockets": "With the legacy `websockets` protocol the library drives: its `handshake()` "
    "coroutine reads the request (`read_http_request`) and calls the `process_request` hook, "
    "which uvicorn overrides to check the headers (`check_request`), start the ASGI app and "
    "wait for its `accept` or `close`. When the app accepts, `handshake()` checks the request "
    "again, computes `Sec-WebSocket-Accept` and writes the 101 itself "
    "(`write_http_response`).",
    "websockets-sansio": "With `websockets-sansio` uvicorn drives and the library does no "
    "I/O: uvicorn's `handle_connect` gets the parsed request and calls "
    "`ServerProtocol.accept(request)`, which validates the headers and builds the response "
    "(a 101 with `Sec-WebSocket-Accept`, or a 4xx) without sending it. A 4xx goes out at "
    "once; a 101 is held while the ASGI app runs, and sent (`send_response`, then "
    "`transport.write`) when the app accepts.",
    "wsproto": "With `wsproto` uvicorn drives and the library does no I/O: wsproto's "
    "`H11Handshake` parses the request with h11 and validates it "
    "(`_process_connection_request`), then hands uvicorn a `Request` event; `handle_connect` "
    "starts the ASGI app. When the app accepts, uvicorn sends wsproto an `AcceptConnection` "
    "event, `_accept` computes `Sec-WebSocket-Accept` and builds the 101, and uvicorn writes "
    "the bytes.",
}


def handshake_flow(ws: str | None, waits_for_app: bool) -> list[Inline]:
    flow = _HANDSHAKE_FLOWS.get(ws or "", "")
    timing = (
        " The `ws.handshake` span runs from the request to the 101; since the 101 waits for "
        "the app's `accept()`, its time includes steps 6 to 9."
        if waits_for_app
        else ""
    )
    return [(flow + timing).strip() or "The response is written when the app accepts (step 9)."]


ASGI: list[Inline] = [
    "After a valid handshake the server calls the ASGI application with a `websocket` scope "
    "(path, headers, query string, client and server addresses, subprotocols). The first "
    "call to `receive()` returns `websocket.connect`; the app answers with "
    "`websocket.accept` (the server sends the 101) or `websocket.close` before accepting "
    "(the server answers 403). RFC 6455 §4.2.2 allows exactly this: the server may apply "
    "its own checks (the path, the `Origin`, authentication) before accepting."
]

MIDDLEWARE: list[Inline] = [
    "Every ASGI middleware is an application that wraps the next one, so the scope passes "
    "through each layer in turn, outermost first. Most layers were written for HTTP and let "
    "a `websocket` scope through; the table says what each one does with it. Each layer's "
    "time includes everything inside it, so the outermost layer runs for the whole life of "
    "the connection."
]

_LAYER_ROLES = {
    "ProxyHeadersMiddleware": "uvicorn's: if the peer is a trusted proxy, takes the client "
    "address and scheme from `X-Forwarded-For` / `X-Forwarded-Proto` (`ws` becomes `wss`)",
    "FastAPI": "FastAPI's entry point: sets `scope['root_path']` and calls Starlette",
    "Starlette": "puts the app in `scope['app']` and calls the middleware stack built on the "
    "first request",
    "ServerErrorMiddleware": "passes a WebSocket scope straight through: its 500 error page "
    "exists only for `http`",
    "ExceptionTelemetryMiddleware": "FastAPI's telemetry: observes an exception raised below "
    "it, then re-raises it",
    "AppBodyLimitMiddleware": "FastAPI's request body limit: applies to HTTP bodies, a "
    "WebSocket scope passes through",
    "CORSMiddleware": "acts only on `http` scopes: CORS does not apply to WebSockets, so a "
    "server must check `Origin` itself (RFC 6455 §10.2)",
    "ExceptionMiddleware": "maps exceptions raised by the endpoint to handlers; a "
    "`WebSocketException` becomes a close frame with its code",
    "AsyncExitStackMiddleware": "opens an `AsyncExitStack` in the scope, closed when the "
    "connection's handling ends (files, dependency clean-up)",
    "TracingMiddleware": "wstrace's own layer: records the chain, `accept()`, messages and "
    "broadcasts",
}


def layer_role(name: str) -> list[Inline]:
    role = _LAYER_ROLES.get(name)
    if role is None:
        return ["a layer of this application; wstrace has no description of it"]
    return [role]


ROUTE: list[Inline] = [
    "The router tries each route's `matches(scope)` in order. A WebSocket route matches when "
    "the scope type is `websocket` and the path fits its template; the path parameters go to "
    "`scope['path_params']`. FastAPI then solves the endpoint's dependencies "
    "(`solve_dependencies`) and calls the endpoint with a `WebSocket` object, still in the "
    "`CONNECTING` state. A path with no matching route is closed before any 101 (a 403)."
]

ACCEPT: list[Inline] = [
    "`await websocket.accept()` sends the ASGI message `websocket.accept` down through the "
    "same layers, to the server's send function. That is the moment the server writes "
    "`101 Switching Protocols` (RFC 6455 §4.2.2 item 5) and the connection is OPEN (§4.1): "
    "both sides may now send frames. Starlette moves the `WebSocket` to `CONNECTED`."
]


def stack_intro(depth: int) -> list[Inline]:
    return [
        f"The Python call stack when `websocket.accept` reached the server ({depth} frames, "
        "innermost first, as recorded on the `ws.accept` span). Read it bottom-up: the event "
        "loop runs the server's task, which calls the application, whose layers call each "
        "other down to the endpoint, which calls `accept()`, which calls back into the "
        "server. Lines are the line running in each function; the files are those of the "
        "installed packages."
    ]


FRAME: list[Inline] = [
    "After the 101, both sides speak in frames (RFC 6455 §5.2). A frame starts with two "
    "bytes: byte 0 holds FIN (last fragment of a message), three reserved bits for "
    "extensions and a 4-bit opcode; byte 1 holds the MASK bit and a 7-bit payload length. "
    "A length of 126 or 127 means the real length follows in 2 or 8 bytes. Every frame a "
    "client sends is masked (§5.1): 4 random bytes follow, and the payload is XORed with "
    "them (§5.3), so that a cache or proxy in the path cannot be tricked into reading "
    "attacker-chosen bytes as HTTP."
]


def fin(value: int) -> list[Inline]:
    return [
        "this is the last (or only) frame of its message"
        if value
        else "more fragments of this message follow (§5.4)"
    ]


def rsv1(value: int) -> list[Inline]:
    if value:
        return ["set: the payload is compressed (permessage-deflate, RFC 7692 §6)"]
    return ["0: no extension applied to this frame"]


def opcode(name: str) -> list[Inline]:
    meanings = {
        "text": "a text message: the payload is UTF-8",
        "binary": "a binary message",
        "continuation": "a continuation fragment",
        "close": "a close frame (§5.5.1)",
        "ping": "a ping (§5.5.2)",
        "pong": "a pong (§5.5.3)",
    }
    return [meanings.get(name, "a reserved opcode: the connection must fail (§5.2)")]


def mask(value: int) -> list[Inline]:
    if value:
        return ["1: the payload is masked, as every client frame must be (§5.1)"]
    return ["0: not masked; a server MUST close the connection on an unmasked client frame"]


MASKING_KEY = "chosen at random by the client for each frame (§5.3)"
NO_PAYLOAD = (
    "The payload bytes were not captured: wstrace keeps payloads only when asked "
    "(`capture_payload`), because they are the application's data. `wstrace explain` without "
    "a FILE turns capture on for its own run."
)
XOR_INTRO = (
    "Unmasking byte i: `unmasked[i] = masked[i] XOR key[i mod 4]` (§5.3). The same "
    "operation masks and unmasks. The first bytes, worked out:"
)
COMPRESSED_PAYLOAD = (
    "RSV1 is set, so these unmasked bytes are still DEFLATE-compressed (RFC 7692): the "
    "implementation inflates them before handing the message to the app."
)

MESSAGE: list[Inline] = [
    "A message is one or more frames: a text or binary frame, then continuation frames until "
    "one has FIN set (§5.4, §6.2). When it is complete the implementation queues it; the "
    "app gets it by calling `receive()`, which returns the ASGI event `websocket.receive` "
    "with `text` or `bytes`."
]

QUEUE_VS_HANDLER = (
    "Queue wait is the time a complete message waited for the app to call `receive()` (0 "
    "when the app was already waiting); handler time is from delivery until the app asks "
    "for the next message. They call for different fixes: a long queue wait means the "
    "handler of an earlier message was slow."
)

BROADCAST: list[Inline] = [
    "WebSocket has no broadcast: the protocol joins exactly two endpoints. An app that sends "
    "one message to a room loops over its connections and sends each its own message, "
    "framed and written separately on each connection (§6.1); server frames are not "
    "masked (§5.1). wstrace groups those sends under one `ws.broadcast` span."
]

CLOSE: list[Inline] = [
    "Either side starts the closing handshake with a close frame (opcode 0x8) whose payload "
    "is an optional 2-byte status code and a UTF-8 reason (§5.5.1). The other side answers "
    "with its own close frame, and the server then closes the TCP connection (§7.1.1). A "
    "connection that drops without close frames is reported with code 1006, which is never "
    "sent on the wire (§7.1.5, §7.4.1)."
]
