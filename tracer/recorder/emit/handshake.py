"""The opening handshake as spans: what the HTTP layer did before the upgrade, the handshake
with its validation and response, and ``ws.accept`` with the stack that reached it.

Emitted once, when the handshake is over and its answer is on the wire (or when the connection
finishes without them): every timestamp is known by then, so each span is built complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Status, StatusCode

from tracer import vocab
from tracer.recorder.records import Attributes, HttpStages
from tracer.wire import (
    ProtocolError,
    RequestHead,
    RequestHeadDecoder,
    ResponseHead,
    check_accept,
)

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord


def emit_handshake(record: ConnectionRecord) -> None:
    """``http.headers.parse`` → ``http.upgrade.detect`` → ``ws.protocol.switch`` (when the HTTP
    layer was seen), then ``ws.handshake`` with ``validate`` and ``response`` under it.  The
    middleware alone sees neither: only the accept (:func:`emit_accept`, which the record
    emits after these, once the accept's send has returned)."""
    if record.source == vocab.SOURCE_ASGI:
        return
    if record.http is not None and record.http.parse_start:
        emit_http_stages(record, record.http)
    start = record.handshake_start or record.started
    end = max(record.handshake_end, record.response_end, start)
    request = record.request
    key = request.header("sec-websocket-key") if request else None
    attrs = _handshake_attributes(record, request, key)
    status = record.response.status if record.response else None
    if status is not None:
        attrs[vocab.HTTP_RESPONSE_STATUS_CODE] = status
    error = record.handshake_error
    if status is not None and status != 101:
        error = error or str(status)
    elif status is None:
        error = error or "no-response"
    # Its checks and answer are over when it is: one family (see Recorder.start_family).
    hs = record.recorder.start_family(vocab.WS_HANDSHAKE, record.span, start, attrs)
    _emit_validations(record, hs, request, key)
    if record.response is not None:
        _emit_response(record, hs, record.response, start, key)
    if error is not None:
        hs.set_attribute(vocab.ERROR_TYPE, error)
        hs.set_status(Status(StatusCode.ERROR, error))
    hs.end(end_time=end)


def emit_http_stages(record: ConnectionRecord, http: HttpStages) -> None:
    """What the HTTP protocol did before handing the connection over: parse the head, see
    the upgrade, switch protocols."""
    rec = record.recorder
    conn = record.span
    head_error = None
    parse_attrs: Attributes = dict(record.http_code.get(vocab.HTTP_HEADERS_PARSE, {}))
    if http.head_bytes:
        result = RequestHeadDecoder().feed(b"".join(http.head_bytes))
        if isinstance(result, RequestHead):
            parse_attrs.update(_parsed_head_attributes(record, result))
        elif isinstance(result, ProtocolError):
            head_error = result.kind
    rec.span(
        vocab.HTTP_HEADERS_PARSE,
        conn,
        http.parse_start,
        http.parse_end or http.parse_start,
        parse_attrs,
        error=head_error,
    )
    if http.detect_start:
        rec.span(
            vocab.HTTP_UPGRADE_DETECT,
            conn,
            http.detect_start,
            http.switch_start or http.detect_end,
            {
                **record.http_code.get(vocab.HTTP_UPGRADE_DETECT, {}),
                vocab.UPGRADE: "websocket",
            },
        )
    if http.switch_start:
        rec.span(
            vocab.WS_PROTOCOL_SWITCH,
            conn,
            http.switch_start,
            http.switch_end,
            {**record.http_code.get(vocab.WS_PROTOCOL_SWITCH, {}), vocab.IMPL_WS: record.impl_ws},
        )


def _parsed_head_attributes(record: ConnectionRecord, head: RequestHead) -> Attributes:
    return {
        vocab.HTTP_REQUEST_METHOD: head.method,
        vocab.URL_PATH: head.target.partition("?")[0],
        vocab.NETWORK_PROTOCOL_VERSION: head.http_version,
        vocab.HTTP_HEADER_COUNT: len(head.headers),
        vocab.HTTP_HEAD_BYTES: head.length,
        **record.config.header_attributes(vocab.HTTP_REQUEST_HEADER_PREFIX, head.headers),
    }


def _handshake_attributes(
    record: ConnectionRecord, request: RequestHead | None, key: str | None
) -> Attributes:
    attrs: Attributes = dict(record.ws_code.get(vocab.WS_HANDSHAKE, {}))
    if request is None:
        return attrs
    attrs[vocab.HTTP_REQUEST_METHOD] = request.method
    attrs[vocab.URL_PATH] = record.path or ""
    version = request.header("sec-websocket-version")
    if version is not None:
        attrs[vocab.WS_VERSION] = version
    if key is not None:
        attrs[vocab.WS_KEY] = key
    attrs.update(record.config.header_attributes(vocab.HTTP_REQUEST_HEADER_PREFIX, request.headers))
    return attrs


def _emit_validations(
    record: ConnectionRecord, hs: Any, request: RequestHead | None, key: str | None
) -> None:
    """The server library's checks of the request (RFC 6455 §4.2.1), one span per run."""
    for v_start, v_end, v_error in record.validations:
        v_attrs: Attributes = dict(record.ws_code.get(vocab.WS_HANDSHAKE_VALIDATE, {}))
        if key is not None:
            v_attrs[vocab.WS_KEY] = key
        if request is not None and request.header("sec-websocket-version") is not None:
            v_attrs[vocab.WS_VERSION] = request.header("sec-websocket-version")
        v_attrs[vocab.HANDSHAKE_VALID] = v_error is None
        record.recorder.span(
            vocab.WS_HANDSHAKE_VALIDATE, hs, v_start, v_end, v_attrs, error=v_error
        )


def _emit_response(
    record: ConnectionRecord, hs: Any, response: ResponseHead, start: int, key: str | None
) -> None:
    """The answer as written on the wire, with ``Sec-WebSocket-Accept`` checked against the
    key (RFC 6455 §4.2.2)."""
    r_attrs: Attributes = {
        **record.ws_code.get(vocab.WS_HANDSHAKE_RESPONSE, {}),
        vocab.HTTP_RESPONSE_STATUS_CODE: response.status,
        vocab.HTTP_HEAD_BYTES: response.length,
    }
    accept = response.header("sec-websocket-accept")
    if key is not None:
        r_attrs[vocab.WS_KEY] = key
    if accept is not None:
        r_attrs[vocab.WS_ACCEPT_KEY] = accept
        r_attrs[vocab.WS_ACCEPT_VALID] = check_accept(key, accept)
    extensions = response.header("sec-websocket-extensions")
    if extensions:
        r_attrs[vocab.WS_EXTENSIONS] = extensions
    subprotocol = response.header("sec-websocket-protocol")
    if subprotocol:
        r_attrs[vocab.WS_SUBPROTOCOL] = record.config.subprotocol(subprotocol)
    r_start = min(record.response_start or record.response_end, record.response_end)
    r_error = None if response.status == 101 else str(response.status)
    record.recorder.span(
        vocab.WS_HANDSHAKE_RESPONSE,
        hs,
        max(r_start, start),
        record.response_end,
        r_attrs,
        error=r_error,
    )
    if record.recording:
        record.span.set_attribute(vocab.HTTP_RESPONSE_STATUS_CODE, response.status)


def emit_accept(record: ConnectionRecord) -> None:
    """``ws.accept``: from the app's ``websocket.accept`` to the 101 on the wire, under the
    innermost ASGI layer, with the Python stack that reached the server's ``send``."""
    parent = record.accept_parent or record.app_span or record.span
    attrs: Attributes = dict(record.ws_code.get(vocab.WS_ACCEPT, {}))
    if record.status:
        attrs[vocab.HTTP_RESPONSE_STATUS_CODE] = record.status
    if record.subprotocol:
        attrs[vocab.WS_SUBPROTOCOL] = record.subprotocol
    span = record.recorder.start(vocab.WS_ACCEPT, parent, record.accept_start, attrs)
    if record.accept_stack:
        span.add_event(
            vocab.EVENT_HANDSHAKE_STACK,
            record.accept_stack,
            timestamp=record.accept_start,
        )
    span.end(end_time=max(record.response_end, record.accept_start))
