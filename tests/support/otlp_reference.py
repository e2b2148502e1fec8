"""The reference OTLP/JSON encoder: plain Python and the standard library's ``json``.

The file exporter's encoder (:mod:`tracer.export.otlp_json`) is written for speed, with orjson
and cached fragments.  This one is written to be read: each span becomes plain dicts in the
field order of the OTLP protobuf messages, and ``json.dumps`` writes them.  The tests hold
the fast encoder to these bytes (``tests/test_export_otlp_json_bytes.py``), and its output to
the ecosystem's protobuf encoder and a golden file.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

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


def _with_attributes(obj: dict[str, Any], attributes: Mapping[str, Any] | None) -> None:
    if attributes:
        obj["attributes"] = [
            {"key": key, "value": encode_value(value)} for key, value in attributes.items()
        ]


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


def reference_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """One ``ExportTraceServiceRequest``: spans grouped by resource, then by instrumentation
    scope, in first-seen order — as the SDK's protobuf encoder groups them.  Grouped by
    identity first (hashing a resource serialises its attributes), equal objects merged after,
    as the file exporter does."""
    by_identity: dict[tuple[int, int], tuple[Any, Any, list[dict[str, Any]]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        group = by_identity.setdefault((id(resource), id(scope)), (resource, scope, []))
        group[2].append(encode_span(span))
    grouped: dict[Any, dict[Any, list[dict[str, Any]]]] = {}
    for resource, scope, encoded in by_identity.values():
        grouped.setdefault(resource, {}).setdefault(scope, []).extend(encoded)
    resource_spans = []
    for resource, scopes in grouped.items():
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


def reference_line(spans: Sequence[ReadableSpan]) -> str:
    """The JSON Lines record: compact separators, UTF-8 kept, no bare ``NaN``."""
    text = json.dumps(
        reference_request(spans), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text + "\n"


def ids_to_base64(node: Any) -> Any:
    """OTLP/JSON with hex ids (the file format) as protobuf's JSON mapping wants them: base64."""
    if isinstance(node, dict):
        return {
            k: (
                base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId", "parentSpanId")
                else ids_to_base64(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [ids_to_base64(item) for item in node]
    return node
