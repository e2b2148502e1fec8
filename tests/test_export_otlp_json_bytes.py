"""The fast OTLP/JSON encoder writes the reference encoder's bytes, value for awkward value.

The reference (:mod:`tests.support.otlp_reference`) is plain dicts through ``json.dumps``; the
encoder under test lays spans out with cached fragments and writes them with orjson, which
spells some doubles differently (``1e-05`` as ``0.00001``).  Spans are built directly as
``ReadableSpan`` objects so values the SDK would clean away (bytes, nested arrays, mappings)
reach the encoder too, as they do from the export process's plain copies.
"""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

from tests.golden import synthetic
from tests.support.otlp_reference import reference_line
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.otlp_json import spans_to_otlp_bytes, spans_to_otlp_dict, spans_to_otlp_line

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

TRACE_ID = 0x0AF7651916CD43DD8448EB211C800001
RESOURCE = Resource({"service.name": "svc", "host.arch": "x86_64", "pid": 4242})
SCOPE = InstrumentationScope("wstrace", "0.1.0")


class Opcode(enum.IntEnum):
    TEXT = 1


class Shape(str, enum.Enum):
    CONNECTION = "connection"


EVERY_CHARACTER = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
"""Every Unicode scalar value: controls, DEL, C1, U+2028/9, bidi overrides, astral planes."""

AWKWARD: dict[str, Any] = {
    # Text.
    "ascii": "plain",
    "empty": "",
    "controls": "".join(chr(c) for c in range(0x20)) + "\x7f\x80\x9f",
    "json specials": '"quoted" back\\slash /slash',
    "unicode": "é ß 漢字 🦆 \u202e bidi \u2028\u2029 \ufeff \U0010ffff",
    "escaped bytes": b"\xff\xfe caf\xc3\xa9 \x80 \x00".decode("utf-8", "backslashreplace"),
    "long": "x" * 5000,  # longer than what the fragment cache keeps
    # Integers: int64 as strings, and Python ints past int64 as their digits.
    "zero": 0,
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "past uint64": 2**64 + 1,
    "huge": -(10**300),
    "int enum": Opcode.TEXT,
    "str enum": Shape.CONNECTION,
    # Doubles: Python's repr, non-finite ones as protobuf's JSON strings.
    "half": 1.5,
    "tenth": 0.1,
    "1e300": 1e300,
    "-1e300": -1e300,
    "1e16": 1e16,
    "1e-5": 1e-5,
    "2.5e-7": 2.5e-7,
    "1e-9": 1e-9,
    "1e-4": 1e-4,
    "negative zero": -0.0,
    "zero point zero": 0.0,
    "smallest subnormal": 5e-324,
    "largest double": 1.7976931348623157e308,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    # Booleans and no value.
    "true": True,
    "false": False,
    "none": None,
    # Arrays, bytes and maps (the last two never come from the SDK's own spans).
    "empty array": (),
    "strings": ("a", "é", ""),
    "ints": [1, -(2**63), 2**70],
    "doubles": (1e-5, -0.0, math.nan, 2.5e-7),
    "bools": (True, False),
    "mixed": ["s", 1, 1.5, True, None],
    "nested": [[1, [2e-6, []]], ["x"]],
    "bytes": b"\x00\xff binary",
    "empty bytes": b"",
    "map": {"k": 1e-7, "nested": {"deep": [b"\x01"]}, 3: "non-string key"},
    "empty map": {},
    # Keys need escaping as much as values.
    'key "quoted" é \n\x00': "v",
}


def span(
    name: str = "ws.message.receive",
    attributes: Any = None,
    *,
    span_id: int = 0x00F067AA0BA90002,
    trace_id: int = TRACE_ID,
    **fields: Any,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, False),
        parent=fields.pop("parent", SpanContext(trace_id, 0x00F067AA0BA90001, False)),
        resource=fields.pop("resource", RESOURCE),
        instrumentation_scope=fields.pop("scope", SCOPE),
        attributes=attributes,
        start_time=1_700_000_000_000_000_000,
        end_time=1_700_000_000_000_009_000,
        kind=fields.pop("kind", SpanKind.SERVER),
        **fields,
    )


def assert_same_bytes(spans: list[ReadableSpan]) -> None:
    expected = reference_line(spans)
    assert spans_to_otlp_line(spans) == expected
    assert spans_to_otlp_bytes(spans) == expected.encode("utf-8")
    assert spans_to_otlp_dict(spans) == json.loads(expected)


@pytest.mark.parametrize("key", list(AWKWARD))
def test_each_awkward_value(key: str) -> None:
    value = AWKWARD[key]
    assert_same_bytes([span(attributes={key: value})])


def test_awkward_values_everywhere_a_value_goes() -> None:
    """In span, event, link, resource and scope attributes; twice, so the caches answer."""
    attributes = dict(AWKWARD)
    spans = [
        span(
            'name "quoted" é \x1b[31m',
            attributes,
            events=[Event("stack", attributes, 1_700_000_000_000_001_000)],
            links=[Link(SpanContext(TRACE_ID + 1, 7, True), attributes)],
            status=Status(StatusCode.ERROR, "bad \"thing\" \u2028 🦆"),
            resource=Resource(attributes),
            scope=InstrumentationScope("s\u00e9", "1\n", "https://x/\u2028", attributes),
        )
        for _ in range(2)
    ]
    assert_same_bytes(spans)


def test_equal_values_of_different_types_stay_apart() -> None:
    """``1 == True == 1.0`` in Python; the cached texts must not mix them up."""
    values = [True, 1, "1", 1.0, False, 0, "", 0.0, -0.0, 1, True]
    assert_same_bytes([span(attributes={"k": v}, span_id=n + 1) for n, v in enumerate(values)])


def test_every_unicode_character() -> None:
    assert_same_bytes([span(EVERY_CHARACTER, {EVERY_CHARACTER: EVERY_CHARACTER})])


def test_span_fields_left_out_or_kept() -> None:
    """Defaults left out (no name, no times, unset status), the rest in field order: trace
    state, remote parent and link flags, dropped counts, every kind."""
    state = TraceState([("k", "v"), ("a", "b")])
    bounded = BoundedAttributes(maxlen=2, attributes={"a": 1, "b": "x", "c": True})
    spans = [
        span("", None, kind=kind, span_id=kind.value + 10, status=Status(StatusCode.OK))
        for kind in SpanKind
    ]
    spans.append(
        ReadableSpan(
            name="remote child",
            context=SpanContext(TRACE_ID, 3, False, trace_state=state),
            parent=SpanContext(TRACE_ID, 4, True),
            attributes=bounded,
            events=[Event("no time", BoundedAttributes(maxlen=0, attributes={"x": 1}), 0)],
            links=[Link(SpanContext(TRACE_ID + 2, 5, False))],
            resource=Resource({}, "https://schema/r"),
            instrumentation_scope=None,
            start_time=0,
            end_time=0,
        )
    )
    assert bounded.dropped == 1
    assert_same_bytes(spans)
    assert '"droppedAttributesCount":1' in spans_to_otlp_line(spans)


class Renamed(ReadableSpan):
    """A span class of its own that answers through its properties."""

    @property
    def name(self) -> str:
        return "renamed"

    @property
    def attributes(self) -> Any:
        return {"overridden": True}


def test_span_classes_that_override_properties_are_read_through_them() -> None:
    plain = span("original", {"k": 1})
    renamed = Renamed(
        name="original",
        context=plain.context,
        resource=RESOURCE,
        instrumentation_scope=SCOPE,
        attributes={"k": 1},
    )
    assert_same_bytes([plain, renamed])
    line = spans_to_otlp_line([renamed])
    assert '"name":"renamed"' in line and '"overridden"' in line and '"k"' not in line


def test_grouping_by_resource_and_scope_in_first_seen_order() -> None:
    equal_resource = Resource(dict(RESOURCE.attributes))  # equal, not identical
    other_scope = InstrumentationScope("app")
    spans = [
        span("a", span_id=1),
        span("b", span_id=2, scope=other_scope),
        span("c", span_id=3, resource=equal_resource),
        span("d", span_id=4, resource=Resource({"service.name": "other"})),
        span("e", span_id=5),
    ]
    assert_same_bytes(spans)
    data = spans_to_otlp_dict(spans)
    assert [len(rs["scopeSpans"]) for rs in data["resourceSpans"]] == [2, 1]


@pytest.mark.parametrize("shape", ["connection", "message"])
@pytest.mark.parametrize("frames", ["spans", "events"])
def test_synthetic_auction_traces(shape: str, frames: str) -> None:
    memory = InMemorySpanExporter()
    synthetic.auction(memory, shape=shape, frames=frames)
    spans = list(memory.get_finished_spans())
    assert len(spans) > 50
    assert_same_bytes(spans)


def test_empty_batch() -> None:
    assert spans_to_otlp_bytes([]) == reference_line([]).encode() == b"{}\n"


def test_lone_surrogate_fails_the_line_as_before(tmp_path: Path) -> None:
    """A lone surrogate (``surrogateescape`` text) has no UTF-8 form: the reference's text
    cannot be written either.  The exporter reports the spans failed and writes nothing."""
    bad = [span(attributes={"path": b"/caf\xe9".decode("utf-8", "surrogateescape")})]
    with pytest.raises(UnicodeEncodeError):
        reference_line(bad).encode("utf-8")
    with pytest.raises(TypeError):  # orjson.JSONEncodeError
        spans_to_otlp_bytes(bad)
    exporter = OTLPJsonFileExporter(tmp_path / "out.otlp.jsonl")
    assert exporter.export(bad) is SpanExportResult.FAILURE
    assert exporter.export([span()]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    (line,) = (tmp_path / "out.otlp.jsonl").read_text(encoding="utf-8").splitlines()
    assert line + "\n" == reference_line([span()])


def test_ids_past_their_width_fail_the_line(tmp_path: Path) -> None:
    """A custom id generator's trace id past 128 bits has no OTLP form; the reference would
    write 33 hex digits, which no reader (wstrace's included) accepts.  Counted as failed."""
    wide = [span(trace_id=2**128 + 1, parent=None)]
    assert f'"traceId":"1{"0" * 31}1"' in reference_line(wide)  # 33 digits
    with pytest.raises(OverflowError):
        spans_to_otlp_bytes(wide)
    exporter = OTLPJsonFileExporter(tmp_path / "out.otlp.jsonl")
    assert exporter.export(wide) is SpanExportResult.FAILURE
    exporter.shutdown()


_scalars = st.one_of(
    st.text(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=4), st.binary(max_size=8))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), _values, max_size=8), st.text())
def test_any_attributes(attributes: dict[str, Any], name: str) -> None:
    assert_same_bytes([span(name, attributes), span(name, attributes, span_id=9)])
