"""Spans → OTLP/JSON, the encoding the OTLP specification defines (not protobuf's JSON).

OTLP/JSON (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding) is protobuf's
JSON mapping of ``ExportTraceServiceRequest`` with three differences that matter:
``traceId`` / ``spanId`` / ``parentSpanId`` are hex (not base64), enums are integers, and keys
are lowerCamelCase.  64-bit integers (``startTimeUnixNano``, ``intValue``) are decimal
strings, fields holding their default value are left out, and keys come in field-number
order.

This runs in the exporter for every span, so it is written for speed: Python only lays each
span out as plain dicts and lists, and orjson (compiled) writes the text.  Attributes, which
repeat from span to span (stage names, ``code.*``, opcode names, a handshake's stack), are
cached as ready-made JSON fragments; a received message's spans are written straight from
their values (:func:`written_template`).  The bytes are those of the plain objects through
``json.dumps(..., separators=(",", ":"), ensure_ascii=False, allow_nan=False)``: orjson
escapes strings as that does (UTF-8 kept; ``"``, ``\\`` and C0 controls escaped,
``\\n``-style where JSON has a short form) but spells some doubles differently (``1e-05`` as
``0.00001``), so finite doubles go in as fragments of Python's ``repr``.  The test suite
pins the bytes to a pure-Python reference encoder, to the ecosystem's protobuf encoder and to
a golden file.

What OTLP cannot carry fails the line (the exporter counts its spans as failed) instead of
writing a file no reader accepts: a string with a lone surrogate (no UTF-8 form) and an id
wider than its 16 or 8 bytes.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tracer.export.facts import Fact
from tracer.export.message_facts import Layout, message_fact, spans_below

E = TypeVar("E")
_TEXT = orjson.Fragment
_INTERNAL_KIND = SpanKind.INTERNAL.value + 1

_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200
_KIND_NUMBER = {kind: kind.value + 1 for kind in SpanKind}
"""``SpanKind`` → its OTLP number (the API's enum is one less)."""


def _flags(parent: Any) -> int:
    flags = _FLAG_HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _FLAG_IS_REMOTE
    return flags


def _double(value: float) -> Any:
    """A double as protobuf's JSON spells it: non-finite values as strings (bare ``NaN`` is not
    JSON), finite ones as Python's shortest round-trip ``repr`` (what ``json.dumps`` writes)."""
    if math.isfinite(value):
        return orjson.Fragment(float.__repr__(value))
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode_value(value: Any) -> dict[str, Any]:
    """One ``AnyValue``: the SDK's attribute types, in protobuf's JSON spelling (for orjson)."""
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


# --- Attributes: cached fragments -------------------------------------------------------------

_CACHE_LIMIT = 8192
"""Entries each cache holds at most; past it, new texts are made and not kept."""
_CACHED_LENGTH = 512
"""Strings longer than this (payload previews, long URLs) are not worth keeping."""
_pair_texts: dict[tuple[str, Any], str] = {}
"""(key, str or bool value) → the JSON text of its ``KeyValue``."""
_int_texts: dict[tuple[str, int], str] = {}
"""(key, small int) → the JSON text of its ``KeyValue``: opcodes, line numbers, header sizes.
Kept apart from the pairs above, where ``(key, 1)`` would find ``(key, True)``."""
_SMALL_INT = 1024
"""Integers below this in size repeat (enumerations, line numbers); larger ones (offsets,
nanoseconds) rarely do, and are not kept."""
_int_prefixes: dict[str, str] = {}
"""key → ``{"key":"…","value":{"intValue":"`` (the number and ``"}}`` follow)."""


def _pair_text(key: str, value: str | bool) -> str:
    text = _pair_texts.get((key, value))
    if text is None:
        text = orjson.dumps({"key": key, "value": encode_value(value)}).decode()
        short = value.__class__ is bool or len(value) < _CACHED_LENGTH
        if short and len(_pair_texts) < _CACHE_LIMIT:
            _pair_texts[key, value] = text
    return text


def _int_prefix(key: str) -> str:
    text = _int_prefixes.get(key)
    if text is None:
        text = orjson.dumps({"key": key}).decode()[:-1] + ',"value":{"intValue":"'
        if len(_int_prefixes) < _CACHE_LIMIT and len(key) < _CACHED_LENGTH:
            _int_prefixes[key] = text
    return text


def _attributes(attributes: Mapping[str, Any]) -> orjson.Fragment:
    """An attribute mapping as the JSON text of a ``KeyValue`` list."""
    return orjson.Fragment("[" + ",".join(_attribute_texts(attributes)) + "]")


def _attribute_texts(attributes: Mapping[str, Any]) -> list[str]:
    """Each attribute's ``KeyValue`` as JSON text."""
    parts: list[str] = []
    add = parts.append
    # The SDK's BoundedAttributes takes a lock per item read; its plain dict is read-only here.
    for key, value in getattr(attributes, "_dict", attributes).items():
        cls = value.__class__
        if cls is str or cls is bool:
            add(_pair_texts.get((key, value)) or _pair_text(key, value))
        elif cls is int:
            text = _int_texts.get((key, value))
            if text is None:
                text = (_int_prefixes.get(key) or _int_prefix(key)) + str(value) + '"}}'
                if -_SMALL_INT < value < _SMALL_INT and len(_int_texts) < _CACHE_LIMIT:
                    _int_texts[key, value] = text
            add(text)
        elif cls is tuple:
            add(_array_text(key, value))
        else:
            add(orjson.dumps({"key": key, "value": encode_value(value)}).decode())
    return parts


_array_texts: dict[tuple[str, tuple[Any, ...]], str] = {}
"""(key, an array all of strings or all of ints) → the JSON text of its ``KeyValue``: a
handshake's stack (dozens of call sites, three arrays) is the same on every connection that
took the same path.  No other arrays: ``(True,)`` and ``(1.0,)`` equal ``(1,)``, and must not
find its text."""
_ARRAY_TEXTS = 512
"""Entries :data:`_array_texts` holds at most (past it, new texts are made and not kept)."""


def _array_text(key: str, value: tuple[Any, ...]) -> str:
    kinds = set(map(type, value))
    kept = len(kinds) == 1 and (str in kinds or int in kinds)
    text = _array_texts.get((key, value)) if kept else None
    if text is None:
        text = orjson.dumps({"key": key, "value": encode_value(value)}).decode()
        if kept and len(_array_texts) < _ARRAY_TEXTS:
            _array_texts[key, value] = text
    return text


# --- Attributes of a message template: laid out straight as text ------------------------------
#
# A message's family is a few kinds of span, each with its attributes in one layout
# (:mod:`tracer.export.message_facts`), and the values of one kind mostly come with the same
# types (a frame: bool, int, int, str, bool, int, int, int, then a masking key or None …).  So
# for each layout and each pattern of value types, one writer is made once: a ``%`` format of
# the whole ``KeyValue`` list with a slot per value, each value turned into its JSON on the way
# in.  A span's attribute text is then one call instead of a dict and a cache lookup per key.

_string_texts: dict[str, str] = {}
"""A short string → its JSON text (opcode names, message types: they repeat)."""
_JSON_BOOL = ("false", "true")
_NONE_TYPE = type(None)
Writer = Callable[[str, tuple[Any, ...]], str]
_writers: dict[tuple[int, tuple[type, ...]], Writer] = {}
"""(id of a layout, the types of its values) → the writer of their ``KeyValue`` list, code
text first.  Layouts are module constants: their ids stay theirs."""


def _json_string(value: str) -> str:
    text = _string_texts.get(value)
    if text is None:
        text = orjson.dumps(value).decode()
        if len(value) < _CACHED_LENGTH and len(_string_texts) < _CACHE_LIMIT:
            _string_texts[value] = text
    return text


def _json_value(value: Any) -> str:
    """Any other attribute value's ``AnyValue``, as :func:`_attributes` writes it."""
    return orjson.dumps(encode_value(value)).decode()


def _writer(layout: Layout, types: tuple[type, ...]) -> Writer:
    """The writer of ``layout``'s attributes for values of ``types``: ``writer(code_text,
    values)`` (``code_text``: the ``code.*`` ``KeyValue`` items, or empty)."""
    pieces: list[str] = []
    arguments: list[str] = []
    for index, (key, cls) in enumerate(zip(layout, types, strict=True)):
        if cls is _NONE_TYPE:
            continue  # left out, as laid_out leaves it out
        head = orjson.dumps({"key": key}).decode()[:-1].replace("%", "%%") + ',"value":'
        if cls is int:
            pieces.append(head + '{"intValue":"%d"}}')
            arguments.append(f"v[{index}]")
        elif cls is str:
            pieces.append(head + '{"stringValue":%s}}')
            arguments.append(f"string(v[{index}])")
        elif cls is bool:
            pieces.append(head + '{"boolValue":%s}}')
            arguments.append(f"BOOL[v[{index}]]")
        else:
            pieces.append(head + "%s}")
            arguments.append(f"value(v[{index}])")
    body = ",".join(pieces)
    if not body:
        return lambda code, _: "[" + code + "]" if code else ""
    listed = "".join(argument + "," for argument in arguments)
    source = f"lambda c, v: (WITH % (c, {listed}) if c else ALONE % ({listed}))"
    names = {"string": _json_string, "BOOL": _JSON_BOOL, "value": _json_value,
             "WITH": "[%s," + body + "]", "ALONE": "[" + body + "]"}  # fmt: skip
    writer: Writer = eval(source, names)  # the source holds indexes into v, nothing else
    return writer


_code_texts: dict[int, tuple[Mapping[str, Any], str]] = {}
"""id of a ``code.*`` dict → the dict (kept, so that the id stays its own) and its text.  A
stage's dict is one object in the server, and in each batch the export process receives."""
_CODE_TEXTS = 256
"""Entries :data:`_code_texts` holds at most (a few stages a batch: then it starts again)."""


def _code_text(code: Mapping[str, Any]) -> str:
    known = _code_texts.get(id(code))
    if known is not None and known[0] is code:
        return known[1]
    text = ",".join(_attribute_texts(code))
    if len(_code_texts) >= _CODE_TEXTS:
        _code_texts.clear()
    _code_texts[id(code)] = (code, text)
    return text


def layout_text(code: Mapping[str, Any], layout: Layout, values: tuple[Any, ...]) -> str | None:
    """:func:`~tracer.export.message_facts.laid_out`'s attributes as the JSON text of their
    ``KeyValue`` list (what :func:`_attributes` makes of the dict), without the dict: the
    attribute maker of :func:`written_template`.  A fact holding its attributes as such a
    text is written as it is by :func:`encode_fact`."""
    types = tuple(map(type, values))
    writer = _writers.get((id(layout), types))
    if writer is None:
        writer = _writer(layout, types)
        if len(_writers) < _CACHE_LIMIT:
            _writers[id(layout), types] = writer
    return writer(_code_text(code) if code else "", values) or None


class Written:
    """Spans of one origin written as OTLP/JSON already (:func:`written_template`):
    :func:`items_to_otlp_bytes` puts them in its line as they are."""

    __slots__ = ("origin", "spans")

    def __init__(self, origin: int, spans: list[Any]) -> None:
        self.origin = origin
        self.spans = spans


def written_template(template: Fact) -> Written:
    """A message template's spans written from its values
    (:func:`~tracer.export.message_facts.spans_below`), attributes by :func:`layout_text`: the
    bytes :func:`encode_fact` writes for the spans of the family it stands for, in the same
    order, without making the family, its spans' facts or their attribute dicts."""
    number, _, trace_id, _, _, flags, state = template[:7]
    trace_hex = trace_id.to_bytes(16, "big").hex()
    spans: list[Any] = []
    add = spans.append
    for parent_id, parts in spans_below(template):
        own_id, name, start, end, status, links, code, layout, values = parts
        attributes = layout_text(code, layout, values)
        if status is None and not (links or state) and start and attributes:
            add(_child_span(trace_hex, own_id, parent_id, name, _INTERNAL_KIND, start, end,
                            attributes))  # fmt: skip
        else:
            add(encode_fact((number, name, trace_id, own_id, parent_id, flags, state, start, end,
                             0, status, attributes, (), links, None)))  # fmt: skip
    add(encode_fact(message_fact(template, layout_text)))
    return Written(number, spans)


def _with_attributes(obj: dict[str, Any], attributes: Mapping[str, Any] | None) -> None:
    if attributes:
        obj["attributes"] = _attributes(attributes)


# --- Spans ------------------------------------------------------------------------------------


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


_PROPERTIES = (
    "context", "parent", "name", "kind", "start_time", "end_time", "attributes", "events",
    "links", "status", "dropped_attributes", "dropped_events", "dropped_links",
)  # fmt: skip
_plain_classes: dict[type, bool] = {}
"""Span class → whether it answers every property as ``ReadableSpan`` does (the SDK's own
classes do), so its fields can be read from its instance dictionary instead: the properties
copy (a tuple per read, a mapping proxy) and the dropped counts run ``isinstance`` on ABCs."""


def _is_plain(cls: type) -> bool:
    plain = _plain_classes.get(cls)
    if plain is None:
        plain = _plain_classes[cls] = all(
            getattr(cls, name, None) is getattr(ReadableSpan, name) for name in _PROPERTIES
        )
    return plain


def _fields(span: ReadableSpan) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """A span's fields by their names in the SDK's ``ReadableSpan``, and the counts of
    attributes, events and links dropped.  A class that overrides a property is asked
    through its properties."""
    if _is_plain(span.__class__):
        fields = span.__dict__
        return fields, (
            getattr(fields["_attributes"], "dropped", 0),  # BoundedAttributes / BoundedList
            getattr(fields["_events"], "dropped", 0),
            getattr(fields["_links"], "dropped", 0),
        )
    fields = {
        "_context": span.context,
        "_parent": span.parent,
        "_name": span.name,
        "_kind": span.kind,
        "_start_time": span.start_time,
        "_end_time": span.end_time,
        "_attributes": span.attributes,
        "_events": span.events,
        "_links": span.links,
        "_status": span.status,
    }
    return fields, (span.dropped_attributes, span.dropped_events, span.dropped_links)


def _events(events: Sequence[Any]) -> list[dict[str, Any]]:
    encoded = []
    for event in events:
        obj: dict[str, Any] = {}
        if event.timestamp:
            obj["timeUnixNano"] = str(event.timestamp)
        if event.name:
            obj["name"] = event.name
        _with_attributes(obj, event.attributes)
        if event.dropped_attributes:
            obj["droppedAttributesCount"] = event.dropped_attributes
        encoded.append(obj)
    return encoded


def _links(links: Sequence[Any]) -> list[dict[str, Any]]:
    encoded = []
    for link in links:
        context = link.context
        obj: dict[str, Any] = {
            "traceId": context.trace_id.to_bytes(16, "big").hex(),
            "spanId": context.span_id.to_bytes(8, "big").hex(),
        }
        _with_attributes(obj, link.attributes)
        if link.dropped_attributes:
            obj["droppedAttributesCount"] = link.dropped_attributes
        obj["flags"] = _flags(context)
        encoded.append(obj)
    return encoded


_NO_STATUS = orjson.Fragment("{}")


def _status(status: Any) -> Any:
    """``Status``: its message and its code, each left out when it is the default."""
    return _status_of(status.status_code.value, status.description)


def _status_of(code: int, message: str | None) -> Any:
    if not code and not message:
        return _NO_STATUS
    obj: dict[str, Any] = {}
    if message:
        obj["message"] = message
    if code:
        obj["code"] = code
    return obj


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """One ``Span``, its fields in field-number order, ready for ``orjson.dumps``."""
    fields, (dropped_attributes, dropped_events, dropped_links) = _fields(span)
    context = fields["_context"]
    # Ids in hex: ``to_bytes(...).hex()`` is a third faster than ``format(id, "032x")``.
    obj: dict[str, Any] = {
        "traceId": context.trace_id.to_bytes(16, "big").hex(),
        "spanId": context.span_id.to_bytes(8, "big").hex(),
    }
    trace_state = context.trace_state
    if trace_state:
        obj["traceState"] = ",".join(f"{k}={v}" for k, v in trace_state.items())
    parent = fields["_parent"]
    if parent is not None:
        obj["parentSpanId"] = parent.span_id.to_bytes(8, "big").hex()
    if fields["_name"]:
        obj["name"] = fields["_name"]
    kind = fields["_kind"]
    obj["kind"] = _KIND_NUMBER.get(kind) or kind.value + 1
    if fields["_start_time"]:
        obj["startTimeUnixNano"] = str(fields["_start_time"])
    if fields["_end_time"]:
        obj["endTimeUnixNano"] = str(fields["_end_time"])
    if fields["_attributes"]:
        obj["attributes"] = _attributes(fields["_attributes"])
    if dropped_attributes:
        obj["droppedAttributesCount"] = dropped_attributes
    if fields["_events"]:
        obj["events"] = _events(fields["_events"])
    if dropped_events:
        obj["droppedEventsCount"] = dropped_events
    if fields["_links"]:
        obj["links"] = _links(fields["_links"])
    if dropped_links:
        obj["droppedLinksCount"] = dropped_links
    obj["status"] = _status(fields["_status"])
    obj["flags"] = _flags(parent)
    return obj


# --- Spans given as facts (the export process of wstrace serve) ---------------------------------


_CHILD_SPAN = (
    '{"traceId":"%s","spanId":"%s","parentSpanId":"%s","name":%s,"kind":%d,'
    '"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":%s,"status":{},"flags":256}'
)
"""A span with a parent in its own trace (neither remote nor with other flags: a fact holds its
parent's span id alone then), a name, times and attributes, and nothing else: the object
:func:`encode_fact` makes of it, as orjson writes it."""


def _child_span(
    trace_hex: str, span_id: int, parent_id: int, name: str, kind: int, start: int, end: int,
    attributes: str,
) -> Any:
    """:data:`_CHILD_SPAN` filled in (``kind``: its OTLP number)."""
    return _TEXT(_CHILD_SPAN % (
        trace_hex, span_id.to_bytes(8, "big").hex(), parent_id.to_bytes(8, "big").hex(),
        _json_string(name), kind, start, end, attributes,
    ))  # fmt: skip


def encode_fact(fact: Fact) -> Any:
    """:func:`encode_span` of the span a :mod:`~tracer.export.facts` fact stands for, read
    from the fact itself: the same object, without building the ``ReadableSpan`` first."""
    (
        _, name, trace_id, span_id, parent, _, state, start, end, kind, status, attributes,
        events, links, dropped,
    ) = fact  # fmt: skip
    if (
        parent.__class__ is int and status is None and not (state or events or links or dropped)
        and attributes.__class__ is str and name and start and end
    ):  # fmt: skip
        # A child of wstrace's with its attributes' text made already (a message template's
        # spans): the object below, written at once.
        trace_hex = trace_id.to_bytes(16, "big").hex()
        return _child_span(trace_hex, span_id, parent, name, kind + 1, start, end, attributes)
    obj: dict[str, Any] = {
        "traceId": trace_id.to_bytes(16, "big").hex(),
        "spanId": span_id.to_bytes(8, "big").hex(),
    }
    if state:
        obj["traceState"] = ",".join(f"{k}={v}" for k, v in state)
    flags = _FLAG_HAS_IS_REMOTE
    if parent is not None:
        if parent.__class__ is not int:  # a whole context: (trace, span, remote, flags, state)
            if parent[2]:
                flags |= _FLAG_IS_REMOTE
            parent = parent[1]
        obj["parentSpanId"] = parent.to_bytes(8, "big").hex()
    if name:
        obj["name"] = name
    obj["kind"] = kind + 1
    if start:
        obj["startTimeUnixNano"] = str(start)
    if end:
        obj["endTimeUnixNano"] = str(end)
    attributes, dropped_attributes = _fact_attributes(attributes)
    if attributes:
        text = attributes.__class__ is str  # made by layout_text already
        obj["attributes"] = _TEXT(attributes) if text else _attributes(attributes)
    if dropped_attributes:
        obj["droppedAttributesCount"] = dropped_attributes
    if events:
        obj["events"] = [_fact_event(*event) for event in events]
    if dropped and dropped[0]:
        obj["droppedEventsCount"] = dropped[0]
    if links:
        obj["links"] = [_fact_link(*link) for link in links]
    if dropped and dropped[1]:
        obj["droppedLinksCount"] = dropped[1]
    obj["status"] = _NO_STATUS if status is None else _status_of(*status)
    obj["flags"] = flags
    return obj


def _fact_attributes(attributes: Any) -> tuple[Any, int]:
    """A fact's attributes and how many ``SpanLimits`` dropped."""
    if attributes.__class__ is tuple:
        return attributes[0], attributes[1]
    return attributes, 0


def _fact_event(name: str, timestamp: int, attributes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    if timestamp:
        obj["timeUnixNano"] = str(timestamp)
    if name:
        obj["name"] = name
    attributes, dropped = _fact_attributes(attributes)
    _with_attributes(obj, attributes)
    if dropped:
        obj["droppedAttributesCount"] = dropped
    return obj


def _fact_link(
    trace_id: int, span_id: int, remote: bool, _flags: int, _state: Any, attributes: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "traceId": trace_id.to_bytes(16, "big").hex(),
        "spanId": span_id.to_bytes(8, "big").hex(),
    }
    attributes, dropped = _fact_attributes(attributes)
    _with_attributes(obj, attributes)
    if dropped:
        obj["droppedAttributesCount"] = dropped
    obj["flags"] = _FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if remote else 0)
    return obj


# --- Requests ---------------------------------------------------------------------------------


def _grouped(
    spans: Sequence[Any], encode: Callable[[Any], E], origins: Mapping[int, Any] | None = None
) -> dict[Any, dict[Any, list[E]]]:
    """Encoded spans by resource, then by instrumentation scope, in first-seen order — as the
    SDK's protobuf encoder groups them.  With ``origins``, facts among the spans are encoded
    by :func:`encode_fact` and take their resource and scope from there, as do spans
    :class:`Written` already.

    Grouped by identity first: Resource and InstrumentationScope hash by serialising their
    attributes, far too slow per span; equal objects that are not identical merge after.
    """
    by_identity: dict[tuple[int, int], tuple[Any, Any, list[E]]] = {}
    for span in spans:
        if origins is not None and span.__class__ is tuple:
            resource, scope = origins[span[0]]
            encoded: list[Any] = [encode_fact(span)]
        elif origins is not None and span.__class__ is Written:
            resource, scope = origins[span.origin]
            encoded = span.spans
        else:
            resource, scope = span.resource, span.instrumentation_scope
            encoded = [encode(span)]
        scope = scope or None
        key = (id(resource), id(scope))
        group = by_identity.get(key)
        if group is None:
            group = by_identity[key] = (resource, scope, [])
        group[2].extend(encoded)
    grouped: dict[Any, dict[Any, list[E]]] = {}
    for resource, scope, encoded in by_identity.values():
        grouped.setdefault(resource, {}).setdefault(scope, []).extend(encoded)
    return grouped


def _request(
    spans: Sequence[Any], origins: Mapping[int, Any] | None = None
) -> dict[str, Any]:
    """One ``ExportTraceServiceRequest``, ready for ``orjson.dumps``."""
    resource_spans = []
    for resource, scopes in _grouped(spans, encode_span, origins).items():
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


def spans_to_otlp_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    """One JSON Lines record as UTF-8 bytes: compact, non-ASCII text kept as is,
    newline-terminated — what the file exporter writes.

    Spans are grouped by resource, then by instrumentation scope, in first-seen order — as the
    SDK's protobuf encoder does.  Raises ``orjson.JSONEncodeError`` (a ``TypeError``) for a
    string UTF-8 cannot carry (a lone surrogate), as encoding ``json.dumps``'s text would.
    """
    return orjson.dumps(_request(spans), option=orjson.OPT_APPEND_NEWLINE)


def items_to_otlp_bytes(
    items: Sequence[ReadableSpan | Fact], origins: Mapping[int, tuple[Any, Any]]
) -> bytes:
    """:func:`spans_to_otlp_bytes` for spans of which some are given as their facts (plain span
    facts, not families: see :func:`tracer.export.facts.expand`) or :class:`Written` already,
    ``origins`` holding the resource and scope of each fact's origin number: the same bytes as
    for the spans the facts stand for."""
    return orjson.dumps(_request(items, origins), option=orjson.OPT_APPEND_NEWLINE)


def spans_to_otlp_line(spans: Sequence[ReadableSpan]) -> str:
    """:func:`spans_to_otlp_bytes` as text."""
    return spans_to_otlp_bytes(spans).decode("utf-8")


def spans_to_otlp_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Finished SDK spans as one decoded OTLP/JSON ``ExportTraceServiceRequest`` object: what a
    reader of the line gets back."""
    request: dict[str, Any] = orjson.loads(spans_to_otlp_bytes(spans))
    return request
