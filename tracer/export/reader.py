"""Read OTLP/JSON Lines trace files back into :class:`SpanRecord` objects.

The reader accepts what OTLP/JSON allows rather than only what wstrace writes: lowerCamelCase
or original snake_case keys, 64-bit integers as strings or numbers, enums as integers or names,
ids as hex (the spec) or base64 (protobuf's JSON mapping, a common mistake of other tools).
Every problem becomes a :class:`TraceFileError` whose message names the file (and line) and
says what to do, so the CLI can print it as one line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import string
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracer.export.records import (
    AttributeValue,
    EventRecord,
    LinkRecord,
    SpanRecord,
    Status,
)

if TYPE_CHECKING:
    from tracer.export.traceset import TraceSet

SUFFIX = ".otlp.jsonl"
_HEX = frozenset(string.hexdigits)
_OTHER_SIGNALS = ("resourceLogs", "resourceMetrics", "resourceProfiles")
_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_TRACE_FILE_HINT = "pass a *.otlp.jsonl file written by wstrace (or a directory of them)"


class TraceFileError(Exception):
    """A trace file that cannot be used; ``str()`` is one line: what is wrong, what to do."""


class _Invalid(ValueError):
    """Malformed OTLP content inside a JSON line; turned into a TraceFileError with location."""


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _get(obj: dict[str, Any], key: str, default: Any = None) -> Any:
    """OTLP/JSON keys are lowerCamelCase, but receivers accept the proto field names too."""
    if key in obj:
        return obj[key]
    return obj.get(_snake(key), default)


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{what} is {type(value).__name__}, expected an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(f"{what} is {type(value).__name__}, expected an array")
    return value


def _int(value: Any, what: str, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise _Invalid(f"{what} is a boolean, expected an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _Invalid(f"{what} {value!r} is not an integer") from None


def _enum(value: Any, names: dict[str, int], what: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return _int(value, what)


def _id(value: Any, nbytes: int, what: str) -> str | None:
    """Hex per the OTLP spec; base64 accepted for files written with protobuf's JSON mapping."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{what} is {type(value).__name__}, expected a hex string")
    if len(value) == 2 * nbytes and _HEX.issuperset(value):
        hexid = value.lower()
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != nbytes:
            raise _Invalid(f"{what} {value!r} is not {2 * nbytes} hex digits")
        hexid = raw.hex()
    return None if hexid.strip("0") == "" else hexid


def decode_value(value: Any) -> AttributeValue:
    """Decode an OTLP ``AnyValue`` object into a plain Python value."""
    if not isinstance(value, dict):
        raise _Invalid(f"attribute value {value!r} is not an AnyValue object")
    for key in ("stringValue", "string_value"):
        if key in value:
            return str(value[key])
    for key in ("boolValue", "bool_value"):
        if key in value:
            return bool(value[key])
    for key in ("intValue", "int_value"):
        if key in value:
            return _int(value[key], "intValue")
    for key in ("doubleValue", "double_value"):
        if key in value:
            raw = value[key]
            try:
                return float(raw)  # also "NaN", "Infinity", "-Infinity"
            except (TypeError, ValueError):
                raise _Invalid(f"doubleValue {raw!r} is not a number") from None
    for key in ("arrayValue", "array_value"):
        if key in value:
            items = _list(_dict(value[key], "arrayValue").get("values"), "arrayValue.values")
            return [decode_value(item) for item in items]
    for key in ("kvlistValue", "kvlist_value"):
        if key in value:
            items = _list(_dict(value[key], "kvlistValue").get("values"), "kvlistValue.values")
            return decode_attributes(items)
    for key in ("bytesValue", "bytes_value"):
        if key in value:
            try:
                return base64.b64decode(value[key])
            except (binascii.Error, ValueError, TypeError):
                raise _Invalid(f"bytesValue {value[key]!r} is not base64") from None
    return None  # an empty AnyValue is legal: "no value"


def decode_attributes(items: Any) -> dict[str, AttributeValue]:
    """``[{"key": k, "value": AnyValue}, ...]`` → ``{k: value}``."""
    result: dict[str, AttributeValue] = {}
    for item in _list(items, "attributes"):
        item = _dict(item, "attribute")
        key = item.get("key")
        if not isinstance(key, str):
            raise _Invalid(f"attribute without a string key: {item!r:.80}")
        result[key] = decode_value(item.get("value", {}))
    return result


_PARENT_REMOTE = 0x300
"""OTLP span flags: "whether the parent is remote is known" and "it is"."""


def _span(raw: Any, resource: dict[str, AttributeValue], scope: str, source: str) -> SpanRecord:
    raw = _dict(raw, "span")
    trace_id = _id(_get(raw, "traceId"), 16, "traceId")
    span_id = _id(_get(raw, "spanId"), 8, "spanId")
    if trace_id is None or span_id is None:
        raise _Invalid(f"span {raw.get('name')!r} has no traceId/spanId")
    start = _int(_get(raw, "startTimeUnixNano"), "startTimeUnixNano")
    end = _int(_get(raw, "endTimeUnixNano"), "endTimeUnixNano", start)
    status = _dict(_get(raw, "status") or {}, "status")
    events = [
        EventRecord(
            name=str(ev.get("name", "")),
            time_ns=_int(_get(ev, "timeUnixNano"), "event timeUnixNano", start),
            attributes=decode_attributes(ev.get("attributes")),
        )
        for ev in (_dict(e, "event") for e in _list(raw.get("events"), "events"))
    ]
    links = []
    for link in (_dict(li, "link") for li in _list(raw.get("links"), "links")):
        link_trace = _id(_get(link, "traceId"), 16, "link traceId")
        link_span = _id(_get(link, "spanId"), 8, "link spanId")
        if link_trace and link_span:
            links.append(
                LinkRecord(link_trace, link_span, decode_attributes(link.get("attributes")))
            )
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=_id(_get(raw, "parentSpanId"), 8, "parentSpanId"),
        name=str(raw.get("name", "")),
        start_ns=start,
        end_ns=end,
        attributes=decode_attributes(raw.get("attributes")),
        events=events,
        links=links,
        status=Status(
            code=_enum(status.get("code"), _STATUS_NAMES, "status.code"),
            message=str(status.get("message", "")),
        ),
        kind=_enum(raw.get("kind"), _KIND_NAMES, "kind"),
        resource=resource,
        scope=scope,
        parent_is_remote=_int(raw.get("flags"), "flags") & _PARENT_REMOTE == _PARENT_REMOTE,
        source=source,
    )


def spans_from_request(data: Any, source: str = "") -> Iterator[SpanRecord]:
    """Spans from one decoded ``ExportTraceServiceRequest`` JSON object.

    Raises ``ValueError`` (a private subclass) for content that is not OTLP trace data.
    """
    data = _dict(data, "the line")
    resource_spans = _get(data, "resourceSpans")
    if resource_spans is None:
        raise _Invalid('no "resourceSpans" key')
    for rs in _list(resource_spans, "resourceSpans"):
        rs = _dict(rs, "resourceSpans[]")
        resource = decode_attributes(_dict(rs.get("resource") or {}, "resource").get("attributes"))
        for ss in _list(_get(rs, "scopeSpans"), "scopeSpans"):
            ss = _dict(ss, "scopeSpans[]")
            scope = str(_dict(ss.get("scope") or {}, "scope").get("name", ""))
            for raw in _list(ss.get("spans"), "spans"):
                yield _span(raw, resource, scope, source)


def _is_other_signal(data: Any) -> bool:
    """An OTLP logs/metrics/profiles line (a Collector file may mix signals): skipped."""
    return (
        isinstance(data, dict)
        and _get(data, "resourceSpans") is None
        and any(key in data or _snake(key) in data for key in _OTHER_SIGNALS)
    )


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; directories → their ``*.otlp.jsonl`` files, sorted by name."""
    result: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob("*" + SUFFIX))
            if not found:
                raise TraceFileError(
                    f"{path}: no *{SUFFIX} files in this directory; run a traced server first "
                    f"or {_TRACE_FILE_HINT}"
                )
            result.extend(found)
        elif path.exists():
            result.append(path)
        else:
            raise TraceFileError(f"{path}: no such file; {_TRACE_FILE_HINT}")
    if not result:
        raise TraceFileError(f"no trace file given; {_TRACE_FILE_HINT}")
    return result


def read_file(path: str | os.PathLike[str]) -> list[SpanRecord]:
    """All spans in one OTLP/JSON Lines file, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceFileError(f"{path}: no such file; {_TRACE_FILE_HINT}") from None
    except UnicodeDecodeError as exc:
        raise TraceFileError(
            f"{path}: not UTF-8 text (byte {exc.start}); this is not an OTLP JSON Lines file, "
            f"{_TRACE_FILE_HINT}"
        ) from None
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    spans: list[SpanRecord] = []
    trace_lines = 0
    other_lines = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFileError(
                f"{path}:{lineno}: not JSON ({exc.msg}, column {exc.colno}); each line must be "
                f"one OTLP JSON object — {_TRACE_FILE_HINT}"
            ) from None
        if _is_other_signal(data):
            other_lines += 1
            continue
        try:
            spans.extend(spans_from_request(data, f"{path}:{lineno}"))
        except _Invalid as exc:
            raise TraceFileError(
                f"{path}:{lineno}: JSON but not OTLP trace data ({exc}); {_TRACE_FILE_HINT}"
            ) from None
        trace_lines += 1
    if trace_lines == 0:
        if other_lines:
            raise TraceFileError(f"{path}: OTLP logs/metrics but no traces; {_TRACE_FILE_HINT}")
        raise TraceFileError(
            f"{path}: file is empty; spans are written when they end — close the connections "
            f"or stop the traced server, then retry"
        )
    return spans


def read_spans(paths: Iterable[str | os.PathLike[str]]) -> list[SpanRecord]:
    """Spans from files and directories, in order; a span seen twice is kept once."""
    seen: set[tuple[str, str]] = set()
    result: list[SpanRecord] = []
    for path in expand_paths(paths):
        for span in read_file(path):
            if span.key not in seen:
                seen.add(span.key)
                result.append(span)
    return result


def load(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> TraceSet:
    """Read files or directories and group the spans into traces and connections."""
    from tracer.export.traceset import TraceSet

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return TraceSet(read_spans(paths))


__all__ = [
    "TraceFileError",
    "decode_attributes",
    "decode_value",
    "expand_paths",
    "load",
    "read_file",
    "read_spans",
    "spans_from_request",
]
