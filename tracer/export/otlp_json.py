"""Spans → OTLP/JSON, the encoding the OTLP specification defines (not protobuf's JSON).

OTLP/JSON (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding) is protobuf's
JSON mapping of ``ExportTraceServiceRequest`` with three differences that matter:
``traceId`` / ``spanId`` / ``parentSpanId`` are hex (not base64), enums are integers, and keys
are lowerCamelCase.  64-bit integers (``startTimeUnixNano``, ``intValue``) are decimal
strings, fields holding their default value are left out, and keys come in field-number
order.

The encoding is written out directly rather than through protobuf's ``json_format``: it runs in
the exporter for every span, and the direct version is an order of magnitude cheaper.  The
test suite pins it to the ecosystem's protobuf encoder
(``opentelemetry.exporter.otlp.proto.common``): for the same spans, the two agree field for
field once ids are read as hex — and to a golden file, byte for byte.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

E = TypeVar("E")

_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200


def _flags(parent: Any) -> int:
    flags = _FLAG_HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _FLAG_IS_REMOTE
    return flags


def _double(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def encode_value(value: Any) -> dict[str, Any]:
    """One ``AnyValue``: the SDK's attribute types, in protobuf's JSON spelling."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": _double(value)}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence):
        values = [encode_value(v) for v in value]
        return {"arrayValue": {"values": values} if values else {}}
    if isinstance(value, Mapping):
        pairs = [{"key": str(k), "value": encode_value(v)} for k, v in value.items()]
        return {"kvlistValue": {"values": pairs} if pairs else {}}
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not attributes:
        return []
    # The SDK's BoundedAttributes takes a lock per item read; its plain dict is read-only here.
    items = getattr(attributes, "_dict", attributes).items()
    return [{"key": key, "value": encode_value(value)} for key, value in items]


def _with_attributes(obj: dict[str, Any], attributes: Mapping[str, Any] | None) -> None:
    encoded = encode_attributes(attributes)
    if encoded:
        obj["attributes"] = encoded


def _scope(scope: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    if scope is None:
        return obj
    if scope.name:
        obj["name"] = scope.name
    if scope.version:
        obj["version"] = scope.version
    _with_attributes(obj, getattr(scope, "attributes", None))
    return obj


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    obj: dict[str, Any] = {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
    }
    trace_state = context.trace_state
    if trace_state:
        obj["traceState"] = ",".join(f"{k}={v}" for k, v in trace_state.items())
    parent = span.parent
    if parent is not None:
        obj["parentSpanId"] = format(parent.span_id, "016x")
    if span.name:
        obj["name"] = span.name
    obj["kind"] = span.kind.value + 1
    if span.start_time:
        obj["startTimeUnixNano"] = str(span.start_time)
    if span.end_time:
        obj["endTimeUnixNano"] = str(span.end_time)
    _with_attributes(obj, span.attributes)
    if span.dropped_attributes:
        obj["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        events = []
        for event in span.events:
            encoded: dict[str, Any] = {}
            if event.timestamp:
                encoded["timeUnixNano"] = str(event.timestamp)
            if event.name:
                encoded["name"] = event.name
            _with_attributes(encoded, event.attributes)
            if event.dropped_attributes:
                encoded["droppedAttributesCount"] = event.dropped_attributes
            events.append(encoded)
        obj["events"] = events
    if span.dropped_events:
        obj["droppedEventsCount"] = span.dropped_events
    if span.links:
        links = []
        for link in span.links:
            encoded = {
                "traceId": format(link.context.trace_id, "032x"),
                "spanId": format(link.context.span_id, "016x"),
            }
            _with_attributes(encoded, link.attributes)
            if link.dropped_attributes:
                encoded["droppedAttributesCount"] = link.dropped_attributes
            encoded["flags"] = _flags(link.context)
            links.append(encoded)
        obj["links"] = links
    if span.dropped_links:
        obj["droppedLinksCount"] = span.dropped_links
    status: dict[str, Any] = {}
    if span.status.description:
        status["message"] = span.status.description
    if span.status.status_code.value:
        status["code"] = span.status.status_code.value
    obj["status"] = status
    obj["flags"] = _flags(parent)
    return obj


def _grouped(
    spans: Sequence[ReadableSpan], encode: Callable[[ReadableSpan], E]
) -> dict[Any, dict[Any, list[E]]]:
    """Encoded spans by resource, then by instrumentation scope, in first-seen order — as the
    SDK's protobuf encoder groups them.

    Grouped by identity first: Resource and InstrumentationScope hash by serialising their
    attributes, far too slow per span; equal objects that are not identical merge after.
    """
    by_identity: dict[tuple[int, int], tuple[Any, Any, list[E]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        key = (id(resource), id(scope))
        group = by_identity.get(key)
        if group is None:
            group = by_identity[key] = (resource, scope, [])
        group[2].append(encode(span))
    grouped: dict[Any, dict[Any, list[E]]] = {}
    for resource, scope, encoded in by_identity.values():
        grouped.setdefault(resource, {}).setdefault(scope, []).extend(encoded)
    return grouped


def spans_to_otlp_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Encode finished SDK spans as one OTLP/JSON ``ExportTraceServiceRequest`` object.

    Spans are grouped by resource, then by instrumentation scope, in first-seen order — as the
    SDK's protobuf encoder does.
    """
    resource_spans = []
    for resource, scopes in _grouped(spans, encode_span).items():
        resource_obj: dict[str, Any] = {}
        _with_attributes(resource_obj, resource.attributes)
        scope_spans = []
        for scope, encoded in scopes.items():
            entry: dict[str, Any] = {"scope": _scope(scope), "spans": encoded}
            if scope is not None and scope.schema_url:
                entry["schemaUrl"] = scope.schema_url
            scope_spans.append(entry)
        item: dict[str, Any] = {"resource": resource_obj, "scopeSpans": scope_spans}
        if resource.schema_url:
            item["schemaUrl"] = resource.schema_url
        resource_spans.append(item)
    return {"resourceSpans": resource_spans} if resource_spans else {}


# --- The text path: the same bytes as ``json.dumps(spans_to_otlp_dict(...))``, built directly --

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_CACHE_LIMIT = 8192
_text_cache: dict[Any, str] = {}
"""(key, value) → the JSON text of a ``KeyValue``.  Most attributes repeat from span to span
(stage names, ``code.*``, opcode names); the cache stops growing at its limit."""


def _string(value: str) -> str:
    text = _text_cache.get(value)
    if text is None:
        text = _dumps(value)
        if len(_text_cache) < _CACHE_LIMIT and len(value) < 512:
            _text_cache[value] = text
    return text


def _value_text(value: Any) -> str:
    if value.__class__ is str:
        return '{"stringValue":' + _string(value) + "}"
    if value.__class__ is int:
        return '{"intValue":"' + str(value) + '"}'
    return _dumps(encode_value(value))


_key_texts: dict[str, str] = {}
"""key → ``{"key":"…","value":`` for keys whose values are not cached (numbers, long text)."""


def _key_text(key: str) -> str:
    text = _key_texts.get(key)
    if text is None:
        text = '{"key":' + _string(key) + ',"value":'
        if len(_key_texts) < _CACHE_LIMIT and len(key) < 512:
            _key_texts[key] = text
    return text


def _attributes_text(attributes: Any) -> str:
    parts = []
    for key, value in getattr(attributes, "_dict", attributes).items():
        cls = value.__class__
        if cls is str or cls is bool:
            cache_key = (key, value)
            text = _text_cache.get(cache_key)
            if text is None:
                text = (
                    '{"key":'
                    + _string(key)
                    + ',"value":'
                    + (
                        _value_text(value)
                        if cls is str
                        else ('{"boolValue":true}' if value else '{"boolValue":false}')
                    )
                    + "}"
                )
                if len(_text_cache) < _CACHE_LIMIT and (cls is bool or len(value) < 512):
                    _text_cache[cache_key] = text
        else:
            text = _key_text(key) + _value_text(value) + "}"
        parts.append(text)
    return ",".join(parts)


_KIND_TEXT = {kind: str(kind.value + 1) for kind in SpanKind}
"""``SpanKind`` → its OTLP number as text (the API's enum is one less)."""


def _fields(span: ReadableSpan) -> tuple[Any, Any, Any, int, int, int]:
    """A span's attributes, events and links and their dropped counts, as its properties give
    them.  The SDK's properties copy (a tuple per read, a mapping proxy) and its dropped counts
    run ``isinstance`` against ABCs; on a plain ``ReadableSpan`` the fields are read directly."""
    if span.__class__ is ReadableSpan:
        fields = span.__dict__
        attributes, events, links = fields["_attributes"], fields["_events"], fields["_links"]
        return (
            attributes,
            events,
            links,
            getattr(attributes, "dropped", 0),  # only BoundedAttributes and BoundedList count
            getattr(events, "dropped", 0),
            getattr(links, "dropped", 0),
        )
    return (
        span.attributes,
        span.events,
        span.links,
        span.dropped_attributes,
        span.dropped_events,
        span.dropped_links,
    )


def encode_span_text(span: ReadableSpan) -> str:
    """One span as JSON text, field for field what :func:`encode_span` gives to json.dumps."""
    attributes, events, links, dropped_attributes, dropped_events, dropped_links = _fields(span)
    context = span.context
    out = [
        '{"traceId":"',
        format(context.trace_id, "032x"),
        '","spanId":"',
        format(context.span_id, "016x"),
        '"',
    ]
    trace_state = context.trace_state
    if trace_state:
        out += [',"traceState":', _string(",".join(f"{k}={v}" for k, v in trace_state.items()))]
    parent = span.parent
    if parent is not None:
        out += [',"parentSpanId":"', format(parent.span_id, "016x"), '"']
    if span.name:
        out += [',"name":', _string(span.name)]
    kind = span.kind
    out += [',"kind":', _KIND_TEXT.get(kind) or str(kind.value + 1)]
    if span.start_time:
        out += [',"startTimeUnixNano":"', str(span.start_time), '"']
    if span.end_time:
        out += [',"endTimeUnixNano":"', str(span.end_time), '"']
    if attributes:
        out += [',"attributes":[', _attributes_text(attributes), "]"]
    if dropped_attributes:
        out += [',"droppedAttributesCount":', str(dropped_attributes)]
    if events:
        event_texts = []
        for event in events:
            parts = []
            if event.timestamp:
                parts.append('"timeUnixNano":"' + str(event.timestamp) + '"')
            if event.name:
                parts.append('"name":' + _string(event.name))
            if event.attributes:
                parts.append('"attributes":[' + _attributes_text(event.attributes) + "]")
            if event.dropped_attributes:
                parts.append('"droppedAttributesCount":' + str(event.dropped_attributes))
            event_texts.append("{" + ",".join(parts) + "}")
        out += [',"events":[', ",".join(event_texts), "]"]
    if dropped_events:
        out += [',"droppedEventsCount":', str(dropped_events)]
    if links:
        link_texts = []
        for link in links:
            text = (
                '{"traceId":"'
                + format(link.context.trace_id, "032x")
                + '","spanId":"'
                + format(link.context.span_id, "016x")
                + '"'
            )
            if link.attributes:
                text += ',"attributes":[' + _attributes_text(link.attributes) + "]"
            if link.dropped_attributes:
                text += ',"droppedAttributesCount":' + str(link.dropped_attributes)
            link_texts.append(text + ',"flags":' + str(_flags(link.context)) + "}")
        out += [',"links":[', ",".join(link_texts), "]"]
    if dropped_links:
        out += [',"droppedLinksCount":', str(dropped_links)]
    status = span.status
    if status.description or status.status_code is not StatusCode.UNSET:
        status_obj: dict[str, Any] = {}
        if status.description:
            status_obj["message"] = status.description
        if status.status_code.value:
            status_obj["code"] = status.status_code.value
        out += [',"status":', _dumps(status_obj)]
    else:
        out.append(',"status":{}')
    out += [',"flags":', str(_flags(parent)), "}"]
    return "".join(out)


def spans_to_otlp_line(spans: Sequence[ReadableSpan]) -> str:
    """One JSON Lines record: compact, UTF-8 text kept as is, newline-terminated.

    Byte for byte ``json.dumps(spans_to_otlp_dict(spans))`` (compact separators, UTF-8 kept),
    assembled from cached fragments: this runs for every exported span.  Non-finite doubles
    are spelled ``"NaN"`` / ``"Infinity"`` as protobuf's JSON does, so no bare ``NaN`` token
    (invalid JSON) can ever be written.
    """
    grouped = _grouped(spans, encode_span_text)
    if not grouped:
        return "{}\n"
    resources = []
    for resource, scopes in grouped.items():
        resource_obj: dict[str, Any] = {}
        _with_attributes(resource_obj, resource.attributes)
        scope_texts = []
        for scope, texts in scopes.items():
            text = '{"scope":' + _dumps(_scope(scope)) + ',"spans":[' + ",".join(texts) + "]"
            if scope is not None and scope.schema_url:
                text += ',"schemaUrl":' + _string(scope.schema_url)
            scope_texts.append(text + "}")
        text = (
            '{"resource":' + _dumps(resource_obj) + ',"scopeSpans":[' + ",".join(scope_texts) + "]"
        )
        if resource.schema_url:
            text += ',"schemaUrl":' + _string(resource.schema_url)
        resources.append(text + "}")
    return '{"resourceSpans":[' + ",".join(resources) + "]}\n"
