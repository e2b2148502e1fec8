"""Spans → OTLP/JSON, the encoding the OTLP specification defines (not protobuf's JSON).

The protobuf message comes from the ecosystem's own encoder
(``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans``), so field coverage
follows the SDK exactly.  protobuf's ``json_format`` then gives almost-OTLP JSON: lowerCamelCase
keys, 64-bit integers as decimal strings and, with ``use_integers_for_enums``, integer enums —
but ``bytes`` fields as base64.  OTLP/JSON requires ``traceId``, ``spanId`` and
``parentSpanId`` as hex strings (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding),
so those are rewritten here.  Any other ``bytes`` field (``bytesValue`` attributes) stays base64,
as the spec says.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

ID_FIELDS = ("traceId", "spanId", "parentSpanId")
"""The ``bytes`` fields OTLP/JSON encodes as hex rather than base64."""


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_ids(obj: dict[str, Any]) -> None:
    for key in ID_FIELDS:
        if key in obj:
            obj[key] = _b64_to_hex(obj[key])


def spans_to_otlp_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Encode finished SDK spans as one OTLP/JSON ``ExportTraceServiceRequest`` object."""
    request = encode_spans(spans)
    data = json_format.MessageToDict(
        request,
        use_integers_for_enums=True,
        preserving_proto_field_name=False,
    )
    for resource_spans in data.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return data


def spans_to_otlp_line(spans: Sequence[ReadableSpan]) -> str:
    """One JSON Lines record: compact, UTF-8 text kept as is, newline-terminated.

    protobuf already spells non-finite doubles as the strings ``"NaN"`` / ``"Infinity"``;
    ``allow_nan=False`` makes sure no bare ``NaN`` token (invalid JSON) can ever be written.
    """
    data = spans_to_otlp_dict(spans)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
