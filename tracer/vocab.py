"""Every span name, attribute key and event name wstrace records, defined once.

OpenTelemetry has no WebSocket semantic convention yet, so wstrace uses the stable general
conventions where they fit (``network.*``, ``client.*``, ``server.*``, ``url.*``, ``http.*``,
``code.*``, ``error.type``) and Wireshark's WebSocket dissector field names for frames
(``websocket.fin``, ``websocket.opcode`` …), the vocabulary people who read captures already
know.  Everything else is namespaced ``wstrace.``.
"""

from __future__ import annotations

# --- Span names: one per stage of a connection's life ------------------------------------------

CONNECTION = "ws.connection"
"""The TCP connection, from the first byte read to the connection being lost."""
HTTP_HEADERS_PARSE = "http.headers.parse"
"""The HTTP request line and headers, fed to the parser until the head is complete."""
HTTP_UPGRADE_DETECT = "http.upgrade.detect"
"""``Connection: Upgrade`` / ``Upgrade: websocket`` checked by the HTTP protocol."""
WS_PROTOCOL_SWITCH = "ws.protocol.switch"
"""The WebSocket protocol object built, the request replayed into it, the transport handed over."""
WS_HANDSHAKE = "ws.handshake"
"""The opening handshake: request read until the 101 (or a rejection) is written."""
WS_HANDSHAKE_VALIDATE = "ws.handshake.validate"
"""Sec-WebSocket-Key, Sec-WebSocket-Version and Upgrade checked by the WebSocket library."""
WS_HANDSHAKE_RESPONSE = "ws.handshake.response"
"""The response head written: 101 Switching Protocols, or the 4xx that refuses the upgrade."""
ASGI_APP = "asgi.app"
"""The ASGI application called by the server for this connection."""
WS_ACCEPT = "ws.accept"
"""The app's ``accept()``: from ``websocket.accept`` being sent to the 101 on the wire."""
WS_FRAME_RECEIVE = "ws.frame.receive"
WS_FRAME_SEND = "ws.frame.send"
WS_MESSAGE_RECEIVE = "ws.message.receive"
"""A data message, from its first frame's arrival until the app asks for the next message.

The span goes on past the moment ``receive()`` hands the message over (``wstrace.delivered_ns``
after its start) to cover the handler's work, so that what the message caused — sends, a
broadcast and its frames — nests under it: one subtree answers "where did the time between
this bid and the other bidders' screens go".  ``wstrace.queue_wait_ns`` and
``wstrace.handler_ns`` split the time the server held the message."""
WS_MESSAGE_SEND = "ws.message.send"
"""One message sent to one connection, down to the frame it produced."""
WS_BROADCAST = "ws.broadcast"
"""One app message fanned out to N connections."""
WS_CLOSE = "ws.close"
"""The closing handshake (or the abrupt end of the connection)."""

STAGE_SPAN_NAMES: tuple[str, ...] = (
    CONNECTION,
    HTTP_HEADERS_PARSE,
    HTTP_UPGRADE_DETECT,
    WS_PROTOCOL_SWITCH,
    WS_HANDSHAKE,
    WS_HANDSHAKE_VALIDATE,
    WS_HANDSHAKE_RESPONSE,
    ASGI_APP,
    WS_ACCEPT,
    WS_FRAME_RECEIVE,
    WS_FRAME_SEND,
    WS_MESSAGE_RECEIVE,
    WS_MESSAGE_SEND,
    WS_BROADCAST,
    WS_CLOSE,
)

# --- Event names --------------------------------------------------------------------------------

EVENT_HANDSHAKE_STACK = "wstrace.handshake.stack"
"""On ``ws.accept``: the live Python stack when ``websocket.accept`` reached the server."""
EVENT_FRAME_RECEIVE = "ws.frame.receive"
EVENT_FRAME_SEND = "ws.frame.send"
"""With ``frames="events"`` a frame is an event (same name and attributes as the span)."""
EVENT_PROTOCOL_ERROR = "wstrace.protocol_error"
"""Bad bytes seen on the wire: ``wstrace.protocol_error.kind`` and ``.offset``."""

# --- General OpenTelemetry semantic conventions ------------------------------------------------

NETWORK_PROTOCOL_NAME = "network.protocol.name"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
NETWORK_TRANSPORT = "network.transport"
CLIENT_ADDRESS = "client.address"
CLIENT_PORT = "client.port"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
URL_PATH = "url.path"
URL_QUERY = "url.query"
URL_SCHEME = "url.scheme"
HTTP_ROUTE = "http.route"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
USER_AGENT_ORIGINAL = "user_agent.original"
ERROR_TYPE = "error.type"
CODE_FUNCTION_NAME = "code.function.name"
CODE_FILE_PATH = "code.file.path"
CODE_LINE_NUMBER = "code.line.number"
HTTP_REQUEST_HEADER_PREFIX = "http.request.header."
HTTP_RESPONSE_HEADER_PREFIX = "http.response.header."

# --- WebSocket fields (Wireshark's dissector names) ---------------------------------------------

WS_FIN = "websocket.fin"
WS_RSV = "websocket.rsv"
WS_OPCODE = "websocket.opcode"
WS_OPCODE_NAME = "websocket.opcode.name"
WS_MASK = "websocket.mask"
WS_MASKING_KEY = "websocket.masking_key"
WS_PAYLOAD_LENGTH = "websocket.payload_length"
WS_HEADER_LENGTH = "websocket.header_length"
WS_PAYLOAD_PREVIEW = "websocket.payload.preview"
WS_CLOSE_CODE = "websocket.close.code"
WS_CLOSE_REASON = "websocket.close.reason"
WS_CLOSE_INITIATOR = "websocket.close.initiator"
WS_KEY = "websocket.key"
WS_ACCEPT_KEY = "websocket.accept"
WS_ACCEPT_VALID = "websocket.accept.valid"
WS_VERSION = "websocket.version"
WS_EXTENSIONS = "websocket.extensions"
WS_SUBPROTOCOL = "websocket.subprotocol"
WS_MESSAGE_TYPE = "websocket.message.type"
WS_MESSAGE_SIZE = "websocket.message.size"
WS_MESSAGE_FRAMES = "websocket.message.frames"

# --- wstrace's own ------------------------------------------------------------------------------

IMPL_HTTP = "wstrace.impl.http"
IMPL_WS = "wstrace.impl.ws"
SOURCE = "wstrace.source"
"""Which layer recorded the span: ``server`` (hooks below ASGI) or ``asgi`` (middleware alone)."""
CONNECTION_ID = "wstrace.connection.id"
BROADCAST_RECIPIENTS = "wstrace.broadcast.recipients"
QUEUE_WAIT_NS = "wstrace.queue_wait_ns"
"""Complete message waiting for the app to ask for it (0 when the app was already waiting)."""
DELIVERED_NS = "wstrace.delivered_ns"
"""From the message's first frame arriving to ``receive()`` returning it to the app."""
HANDLER_NS = "wstrace.handler_ns"
"""From delivery to the app asking for the next message: the handler's own time."""
MIDDLEWARE_LAYER = "wstrace.asgi.layer"
STACK_FUNCTIONS = "wstrace.stack.functions"
STACK_FILES = "wstrace.stack.files"
STACK_LINES = "wstrace.stack.lines"
PROTOCOL_ERROR_KIND = "wstrace.protocol_error.kind"
PROTOCOL_ERROR_OFFSET = "wstrace.protocol_error.offset"
FRAMES_DROPPED = "wstrace.frames.dropped"
MESSAGES_OVERFLOWED = "wstrace.messages.overflowed"
MESSAGE_INDEX = "wstrace.message.index"
FRAME_OFFSET = "wstrace.frame.offset"
"""Where the frame starts in its direction's byte stream (after the handshake head)."""

# --- Values -------------------------------------------------------------------------------------

INITIATOR_CLIENT = "client"
INITIATOR_SERVER = "server"
INITIATOR_NONE = "none"
"""An abnormal drop: no close frame from either side (recorded with code 1006)."""

SOURCE_SERVER = "server"
SOURCE_ASGI = "asgi"

SHAPE_CONNECTION = "connection"
SHAPE_MESSAGE = "message"
SHAPES = (SHAPE_CONNECTION, SHAPE_MESSAGE)

FRAMES_SPANS = "spans"
FRAMES_EVENTS = "events"
FRAMES_OFF = "off"
FRAME_MODES = (FRAMES_SPANS, FRAMES_EVENTS, FRAMES_OFF)

INSTRUMENTATION_NAME = "wstrace"

# --- Keys the recorder writes and the walkthrough reads -----------------------------------------

HTTP_HEADER_COUNT = "wstrace.http.header_count"
"""On ``http.headers.parse``: how many header fields the request head had (recorded or not)."""
HTTP_HEAD_BYTES = "wstrace.http.head_bytes"
"""Bytes in the request head (on the parse) or the response head (on the response)."""
UPGRADE = "wstrace.upgrade"
"""On ``http.upgrade.detect``: the protocol the request was upgraded to."""
BROADCAST_DETECTED = "wstrace.broadcast.detected"
"""On ``ws.broadcast``: ``explicit`` (``tracer.broadcast()``) or ``automatic`` (fan-out seen)."""

# --- Keys and values the emitters write (tracer/recorder/emit) ---------------------------------

HANDSHAKE_VALID = "wstrace.handshake.valid"
"""On ``ws.handshake.validate``: whether the library accepted the request."""
SENDS_DROPPED = "wstrace.sends.dropped"
"""On a message: sends made while handling it past the per-message bound (counted, not traced)."""
PROTOCOL_ERRORS_DROPPED = "wstrace.protocol_errors.dropped"
"""On ``ws.connection``: protocol errors past the per-connection bound (counted, not kept)."""
PROTOCOL_ERROR_DETAIL = "wstrace.protocol_error.detail"
LINK = "wstrace.link"
"""On a link: why a span points at another trace."""
LINK_HANDSHAKE = "handshake"
"""From a message in its own trace to its connection (message shape, or past the cap)."""
LINK_RECIPIENT = "recipient"
"""From a send (or a broadcast outside any handler) to the connection it went to."""
LINK_CLIENT = "client"
"""From ``ws.connection`` to the trace context the client sent in ``traceparent``."""

# --- Loss accounting ----------------------------------------------------------------------------

LOSS_MARKER = "wstrace.loss"
"""A span written in place of spans of its trace that were dropped on the way to the file: the
trace is incomplete.  Readers leave it out of the tree and add up its counts."""
LOSS_SPANS = "wstrace.loss.spans"
"""How many spans of the trace this marker stands for."""
LOSS_REASON = "wstrace.loss.reason"
"""Why they were dropped (``buffer_full``, ``evicted``, ``drain_timeout``…)."""

END_REASON = "wstrace.end_reason"
"""Why wstrace ended a span the server never finished (with an error status saying so)."""
END_COLLECTED = "protocol_collected"
"""The connection's objects were garbage-collected without ``connection_lost``."""
END_UNINSTRUMENTED = "uninstrumented"
"""``uninstrument()`` was called while the connection was open."""
