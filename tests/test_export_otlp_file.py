"""The OTLP/JSON Lines exporter: a golden file pins the encoding byte for byte.

Regenerate the golden file (after checking the diff by hand!) with
``WSTRACE_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_export_otlp_file.py``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.golden import synthetic
from tests.support.otlp_reference import ids_to_base64
from tracer.export.otlp_file import OTLPJsonFileExporter
from tracer.export.otlp_json import spans_to_otlp_line

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

GOLDEN = Path(__file__).parent / "golden" / "small.otlp.jsonl"
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def small_spans() -> list[Any]:
    memory = InMemorySpanExporter()
    synthetic.small(memory)
    return list(memory.get_finished_spans())


def exported_line(tmp_path: Path) -> str:
    exporter = OTLPJsonFileExporter(tmp_path / "out.otlp.jsonl")
    assert exporter.export(small_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    return (tmp_path / "out.otlp.jsonl").read_text(encoding="utf-8")


def all_spans(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for rs in data["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


def by_name(data: dict[str, Any], name: str) -> dict[str, Any]:
    (span,) = [s for s in all_spans(data) if s["name"] == name]
    return span


def attr(span: dict[str, Any], key: str) -> dict[str, Any]:
    (value,) = [a["value"] for a in span.get("attributes", []) if a["key"] == key]
    return value


def test_golden_file_byte_for_byte(tmp_path: Path) -> None:
    text = exported_line(tmp_path)
    if os.environ.get("WSTRACE_REGEN_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    golden = GOLDEN.read_text(encoding="utf-8")
    assert json.loads(text) == json.loads(golden)
    assert text == golden
    assert text.count("\n") == 1 and text.endswith("\n")


def test_golden_follows_otlp_json_rules() -> None:
    data = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert list(data) == ["resourceSpans"]
    spans = all_spans(data)
    assert len(spans) == 8
    for span in spans:
        assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"])
        assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
        if "parentSpanId" in span:
            assert re.fullmatch(r"[0-9a-f]{16}", span["parentSpanId"])
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            assert isinstance(span[key], str) and span[key].isdigit()
        assert isinstance(span["kind"], int)
        for link in span.get("links", []):
            assert re.fullmatch(r"[0-9a-f]{32}", link["traceId"])
            assert re.fullmatch(r"[0-9a-f]{16}", link["spanId"])
        for event in span.get("events", []):
            assert isinstance(event["timeUnixNano"], str) and event["timeUnixNano"].isdigit()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                assert CAMEL.match(key), key
                if key == "intValue":
                    assert isinstance(value, str) and value.lstrip("-").isdigit()
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)


def test_golden_values_by_hand() -> None:
    """The values a reader of the spec would write by hand for the synthetic spans."""
    data = json.loads(GOLDEN.read_text(encoding="utf-8"))
    (resource_spans,) = data["resourceSpans"]
    assert {"key": "wstrace.sample", "value": {"boolValue": True}} in resource_spans["resource"][
        "attributes"
    ]
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "wstrace", "version": "0.1.0"}

    root = by_name(data, "ws.connection")
    assert root["traceId"] == "0af7651916cd43dd8448eb211c800001"
    assert root["spanId"] == "00f067aa0ba90001"
    assert "parentSpanId" not in root
    assert root["kind"] == 2  # SPAN_KIND_SERVER
    assert root["startTimeUnixNano"] == "1700000000000000000"
    assert root["endTimeUnixNano"] == "1700000000001000000"
    assert attr(root, "wstrace.connection.id") == {"intValue": "7"}

    response = by_name(data, "ws.handshake.response")
    assert response["kind"] == 1  # SPAN_KIND_INTERNAL
    assert response["parentSpanId"] == "00f067aa0ba90001"
    assert attr(response, "http.response.status_code") == {"intValue": "101"}
    assert attr(response, "websocket.accept.valid") == {"boolValue": True}
    assert attr(response, "websocket.accept") == {"stringValue": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}

    endpoint = by_name(data, "websocket_endpoint")
    assert endpoint["status"] == {"code": 2, "message": "handler raised"}
    assert attr(endpoint, "wstrace.sample.ratio") == {"doubleValue": 0.25}

    (event,) = by_name(data, "ws.accept")["events"]
    assert event["name"] == "wstrace.handshake.stack"
    assert event["timeUnixNano"] == "1700000000000170000"
    (lines,) = [a for a in event["attributes"] if a["key"] == "wstrace.stack.lines"]
    assert lines["value"] == {"arrayValue": {"values": [{"intValue": "243"}, {"intValue": "161"}]}}

    (link,) = by_name(data, "ws.message.send")["links"]
    assert link["traceId"] == root["traceId"] and link["spanId"] == root["spanId"]
    assert link["attributes"] == [{"key": "wstrace.link", "value": {"stringValue": "recipient"}}]

    frame = by_name(data, "ws.frame.send")
    assert attr(frame, "websocket.fin") == {"boolValue": True}
    assert attr(frame, "websocket.opcode") == {"intValue": "1"}


def test_golden_is_the_sdk_encoder_output_with_hex_ids() -> None:
    """Parsed back with protobuf (ids → base64), the golden file equals encode_spans()."""
    data = json.loads(GOLDEN.read_text(encoding="utf-8"))
    parsed = json_format.ParseDict(ids_to_base64(data), ExportTraceServiceRequest())
    assert parsed == encode_spans(small_spans())


def test_non_finite_doubles_stay_valid_json() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    span = provider.get_tracer("t").start_span("x", attributes={"nan": float("nan")})
    span.set_attribute("inf", float("inf"))
    span.end()
    line = spans_to_otlp_line(memory.get_finished_spans())
    assert "NaN" not in line.replace('"NaN"', "")
    values = {a["key"]: a["value"] for a in all_spans(json.loads(line))[0]["attributes"]}
    assert values == {"nan": {"doubleValue": "NaN"}, "inf": {"doubleValue": "Infinity"}}


def test_default_file_name_and_lazy_creation(tmp_path: Path) -> None:
    exporter = OTLPJsonFileExporter(directory=tmp_path / "traces")
    assert re.fullmatch(rf"wstrace-\d{{8}}T\d{{6}}Z-{os.getpid()}\.otlp\.jsonl", exporter.path.name)
    assert not (tmp_path / "traces").exists()  # nothing written, nothing created
    exporter.export(small_spans())
    exporter.export(small_spans())
    exporter.shutdown()
    lines = exporter.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert exporter.export(small_spans()) is SpanExportResult.FAILURE


def test_two_exporters_in_one_second_get_two_files(tmp_path: Path) -> None:
    first = OTLPJsonFileExporter(directory=tmp_path)
    second = OTLPJsonFileExporter(directory=tmp_path)
    first.export(small_spans())
    second.export(small_spans())
    assert first.path != second.path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, second.path.name])


def test_explicit_path_appends(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.otlp.jsonl"
    for _ in range(2):
        exporter = OTLPJsonFileExporter(path)
        exporter.export(small_spans())
        exporter.shutdown()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_each_span_is_on_disk_when_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "live.otlp.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPJsonFileExporter(path)))
    tracer = provider.get_tracer("t")
    for i in range(3):
        tracer.start_span(f"s{i}").end()
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == i + 1
        assert all_spans(json.loads(lines[-1]))[0]["name"] == f"s{i}"


def test_concurrent_exports_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "threads.otlp.jsonl"
    exporter = OTLPJsonFileExporter(path)
    spans = small_spans()

    def work() -> None:
        for _ in range(25):
            exporter.export(spans)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200
    assert all(len(all_spans(json.loads(line))) == 8 for line in lines)


def test_after_fork_a_process_writes_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn workers fork after the exporter exists: each must get its own file.

    (A real ``fork()`` here would run the SDK's at-fork hooks of every provider the test
    session made; the pid is what the exporter looks at, so that is what changes.)
    """
    exporter = OTLPJsonFileExporter(directory=tmp_path)
    spans = small_spans()
    exporter.export(spans)
    parent_file = exporter.path
    child_pid = os.getpid() + 100_000
    monkeypatch.setattr("tracer.export.otlp_file.os.getpid", lambda: child_pid)
    exporter.export(spans)
    assert exporter.path != parent_file
    assert exporter.path.name.endswith(f"-{child_pid}.otlp.jsonl")
    assert len(exporter.path.read_text(encoding="utf-8").splitlines()) == 1
    assert len(parent_file.read_text(encoding="utf-8").splitlines()) == 1
