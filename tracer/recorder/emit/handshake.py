"""The opening handshake as spans: what the HTTP layer did before the upgrade, the handshake
with its validation and response, and ``ws.accept`` with the stack that reached it.

Emitted once, when the handshake is over and its answer is on the wire (or when the connection
finishes without them): every timestamp is known by then, so each span is built complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry.trace import SpanKind, Status, StatusCode

from tracer import vocab
from tracer.export import facts, handshake_facts
from tracer.recorder.family import FAMILY_TYPES
from tracer.recorder.records import Attributes, HttpStages
from tracer.wire import (
    ProtocolError,
    RequestHead,
    RequestHeadDecoder,
    check_accept,
)

if TYPE_CHECKING:
    from tracer.recorder.connection import ConnectionRecord

_ERROR = StatusCode.ERROR.value
_INTERNAL = SpanKind.INTERNAL.value


def emit_handshake(record: ConnectionRecord) -> None:
    """``http.headers.parse`` → ``http.upgrade.detect`` → ``ws.protocol.switch`` (when the HTTP
    layer was seen), then ``ws.handshake`` with ``validate`` and ``response`` under it, and
    ``ws.accept`` when the app accepted.  The middleware alone sees only the accept.

    Each span is worked out once, as plain values (:class:`_Made`), then made either as spans
    or, where the processors take facts, straight as one handshake template
    (:mod:`tracer.export.handshake_facts`)."""
    if record.source == vocab.SOURCE_ASGI:
        if record.accept_start and record.status:
            emit_accept(record)
        return
    stages = (
        _http_stages(record, record.http)
        if record.http is not None and record.http.parse_start
        else []
    )
    request = record.request
    key = request.header("sec-websocket-key") if request else None
    handshake = _handshake_span(record, request, key)
    below = _validation_spans(record, request, key) if record.validations else []
    response = _response_span(record, handshake.start, key)
    if response is not None:
        below.append(response)
    worked = Handshake(stages, handshake, below, bool(record.accept_start and record.status))
    if not emit_template(record, worked):
        emit_spans(record, worked)
    if response is not None and record.recording:
        record.span.set_attribute(vocab.HTTP_RESPONSE_STATUS_CODE, record.response.status)


class _Made(NamedTuple):
    """A span of the handshake, worked out: what either way of making it takes."""

    name: str
    start: int
    end: int
    attributes: Attributes
    error: str | None


class Handshake(NamedTuple):
    """The handshake's spans, worked out (see :func:`emit_handshake`)."""

    stages: list[_Made]
    """The HTTP layer's, under the connection."""
    handshake: _Made
    below: list[_Made]
    """Under ``ws.handshake``: its validations, then its response."""
    accepted: bool
    """Whether ``ws.accept`` goes too (worked out by :func:`_accept_span`)."""


def emit_spans(record: ConnectionRecord, worked: Handshake) -> None:
    """The handshake's spans, made as spans (see :meth:`~tracer.recorder.Recorder.start`)."""
    conn = record.span
    rec = record.recorder
    for stage in worked.stages:
        rec.span(stage.name, conn, stage.start, stage.end, stage.attributes, error=stage.error)
    # Its checks and answer are over when it is: one family (see Recorder.start_family).
    handshake = worked.handshake
    hs = rec.start_family(vocab.WS_HANDSHAKE, conn, handshake.start, handshake.attributes)
    for made in worked.below:
        rec.span(made.name, hs, made.start, made.end, made.attributes, error=made.error)
    if handshake.error is not None:
        hs.set_attribute(vocab.ERROR_TYPE, handshake.error)
        hs.set_status(Status(StatusCode.ERROR, handshake.error))
    hs.end(end_time=handshake.end)
    if worked.accepted:
        emit_accept(record)


def _handshake_span(
    record: ConnectionRecord, request: RequestHead | None, key: str | None
) -> _Made:
    start = record.handshake_start or record.started
    end = max(record.handshake_end, record.response_end, start)
    attrs = _handshake_attributes(record, request, key)
    status = record.response.status if record.response else None
    if status is not None:
        attrs[vocab.HTTP_RESPONSE_STATUS_CODE] = status
    error = record.handshake_error
    if status is not None and status != 101:
        error = error or str(status)
    elif status is None:
        error = error or "no-response"
    return _Made(vocab.WS_HANDSHAKE, start, end, attrs, error)


def _http_stages(record: ConnectionRecord, http: HttpStages) -> list[_Made]:
    """What the HTTP protocol did before handing the connection over: parse the head, see
    the upgrade, switch protocols."""
    head_error = None
    parse_attrs: Attributes = dict(record.http_code.get(vocab.HTTP_HEADERS_PARSE, {}))
    if http.head_bytes:
        result = RequestHeadDecoder().feed(b"".join(http.head_bytes))
        if isinstance(result, RequestHead):
            parse_attrs.update(_parsed_head_attributes(record, result))
        elif isinstance(result, ProtocolError):
            head_error = result.kind
    stages = [
        _Made(
            vocab.HTTP_HEADERS_PARSE,
            http.parse_start,
            max(http.parse_end or http.parse_start, http.parse_start),
            parse_attrs,
            head_error,
        )
    ]
    if http.detect_start:
        detect_end = http.switch_start or http.detect_end
        stages.append(_Made(
            vocab.HTTP_UPGRADE_DETECT,
            http.detect_start,
            max(detect_end, http.detect_start),
            {**record.http_code.get(vocab.HTTP_UPGRADE_DETECT, {}), vocab.UPGRADE: "websocket"},
            None,
        ))  # fmt: skip
    if http.switch_start:
        stages.append(_Made(
            vocab.WS_PROTOCOL_SWITCH,
            http.switch_start,
            max(http.switch_end, http.switch_start),
            {**record.http_code.get(vocab.WS_PROTOCOL_SWITCH, {}), vocab.IMPL_WS: record.impl_ws},
            None,
        ))  # fmt: skip
    return stages


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


def _validation_spans(
    record: ConnectionRecord, request: RequestHead | None, key: str | None
) -> list[_Made]:
    """The server library's checks of the request (RFC 6455 §4.2.1), one span per run."""
    made = []
    for v_start, v_end, v_error in record.validations:
        v_attrs: Attributes = dict(record.ws_code.get(vocab.WS_HANDSHAKE_VALIDATE, {}))
        if key is not None:
            v_attrs[vocab.WS_KEY] = key
        if request is not None and request.header("sec-websocket-version") is not None:
            v_attrs[vocab.WS_VERSION] = request.header("sec-websocket-version")
        v_attrs[vocab.HANDSHAKE_VALID] = v_error is None
        made.append(
            _Made(vocab.WS_HANDSHAKE_VALIDATE, v_start, max(v_end, v_start), v_attrs, v_error)
        )
    return made


def _response_span(record: ConnectionRecord, start: int, key: str | None) -> _Made | None:
    """The answer as written on the wire, with ``Sec-WebSocket-Accept`` checked against the
    client's ``key`` (RFC 6455 §4.2.2); ``start``: the handshake's."""
    response = record.response
    if response is None:
        return None
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
    r_start = max(min(record.response_start or record.response_end, record.response_end), start)
    r_error = None if response.status == 101 else str(response.status)
    return _Made(
        vocab.WS_HANDSHAKE_RESPONSE, r_start, max(record.response_end, r_start), r_attrs, r_error
    )


def emit_accept(record: ConnectionRecord) -> None:
    """``ws.accept``: from the app's ``websocket.accept`` to the 101 on the wire, under the
    innermost ASGI layer, with the Python stack that reached the server's ``send``."""
    parent, made = _accept_span(record)
    span = record.recorder.start(made.name, parent, made.start, made.attributes)
    if record.accept_stack:
        span.add_event(vocab.EVENT_HANDSHAKE_STACK, record.accept_stack, timestamp=made.start)
    span.end(end_time=made.end)


def _accept_span(record: ConnectionRecord) -> tuple[Any, _Made]:
    """``ws.accept``'s parent, and the span."""
    parent = record.accept_parent or record.app_span or record.span
    attrs: Attributes = dict(record.ws_code.get(vocab.WS_ACCEPT, {}))
    if record.status:
        attrs[vocab.HTTP_RESPONSE_STATUS_CODE] = record.status
    if record.subprotocol:
        attrs[vocab.WS_SUBPROTOCOL] = record.subprotocol
    start = record.accept_start
    return parent, _Made(vocab.WS_ACCEPT, start, max(record.response_end, start), attrs, None)


# --- As one handshake template ---------------------------------------------------------------


def emit_template(record: ConnectionRecord, worked: Handshake) -> bool:
    """Hand the handshake's spans on as one template (:mod:`tracer.export.handshake_facts`),
    each made as its fact straight away, as :meth:`~tracer.recorder.spans.SdkParts.emit`
    would, ids in the order the span path makes them; or False, and nothing made: some
    processor needs spans, or the ``SpanLimits`` could cut one."""
    sdk = record.recorder.sdk
    takers = sdk.template_takers() if sdk is not None else None
    if takers is None or not record.recording or not _within_limits(sdk, record, worked):
        return False
    if worked.accepted:
        accept_parent, accept_made = _accept_span(record)
        parent = accept_parent.get_span_context()
        if type(accept_parent) in FAMILY_TYPES or not accept_parent.is_recording() or parent[2]:
            return False
    origin = sdk.facts.origin
    trace_id, conn_id, _, flags, state = facts.link_context(record.span_context)
    new_id = sdk.new_span_id

    def fact(made: _Made) -> tuple[Any, ...]:  # a child of the connection
        attributes, status = _outcome(made)
        return (origin, made.name, trace_id, new_id(), conn_id, flags, state, made.start,
                made.end, _INTERNAL, status, attributes, (), (), None)  # fmt: skip

    stage_facts = tuple([fact(made) for made in worked.stages])
    head = fact(worked.handshake)
    members = []
    for made in worked.below:
        attributes, status = _outcome(made)  # as FamilyRoot.leaf makes them
        members.append(
            facts.plain_member(new_id(), made.name, made.start, made.end, status, attributes)
        )
    accept = None
    if worked.accepted:
        # A child's context copies its parent's trace, flags and state: its fact names the
        # parent by its span id alone (see facts.make).
        a_trace, a_parent, _, a_flags, a_state = facts.link_context(parent)
        stack = record.accept_stack
        events = ((vocab.EVENT_HANDSHAKE_STACK, accept_made.start, dict(stack)),) if stack else ()
        accept = (origin, accept_made.name, a_trace, new_id(), a_parent, a_flags, a_state,
                  accept_made.start, accept_made.end, _INTERNAL, None, accept_made.attributes,
                  events, (), None)  # fmt: skip
    template = handshake_facts.template(head, tuple(members), stage_facts, accept)
    for take in takers:
        take(template)
    return True


def _outcome(made: _Made) -> tuple[Attributes, tuple[int, str] | None]:
    """A span's attributes and status as a fact holds them: an error adds ``error.type``."""
    if made.error is None:
        return made.attributes, None
    return {**made.attributes, vocab.ERROR_TYPE: made.error}, (_ERROR, made.error)


def _within_limits(sdk: Any, record: ConnectionRecord, worked: Handshake) -> bool:
    """Whether the provider's ``SpanLimits`` leave every span of the handshake as it is (a
    template's facts are not cut: where they could be, the span path makes them).  Templates
    are made only under limits that allow :data:`~tracer.export.message_facts.MOST_ATTRIBUTES`
    attributes and any length; of the handshake's spans, only ``http.headers.parse`` and
    ``ws.handshake``, with the request's headers, may have more."""
    limits = sdk.limits
    if limits is None:
        return True
    most = sdk.max_attributes
    stages = worked.stages
    if len(worked.handshake.attributes) >= most or (stages and len(stages[0].attributes) >= most):
        return False
    stack = record.accept_stack
    return not stack or (
        (limits.max_events is None or limits.max_events >= 1)
        and (limits.max_event_attributes is None or limits.max_event_attributes >= len(stack))
    )
